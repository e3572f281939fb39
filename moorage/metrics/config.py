"""Settings of the Prometheus endpoint (``metrics.*``): defined with the rest of the
configuration in moorage/config.py, named here too for the metrics package's own use."""

from __future__ import annotations

from ..config import MetricsConfig

__all__ = ["MetricsConfig"]
