"""Settings of the Prometheus endpoint (``metrics.*``).

Kept in this package until the configuration is restructured: the lead adds ``MetricsConfig`` to
``moorage.config.Config`` as ``metrics`` (keys ``metrics.enabled``, ``metrics.port``,
``metrics.token``; variables ``MOORAGE_METRICS_ENABLED`` …)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Serve Prometheus metrics at GET /metrics (text exposition format; "
        "OpenMetrics when the scraper asks for it).",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port of its own (same address as http.host) instead "
        "of the registry's port, e.g. to keep it off the public ingress. Unset: the registry's "
        "port.",
    )
    token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token scrapers must send (Authorization: Bearer TOKEN); set it "
        "through the environment. Unset: /metrics needs no credentials.",
    )
