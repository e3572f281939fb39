"""Prometheus metrics: definitions, the request middleware, database-derived and sampled
gauges, and the /metrics exposition (prometheus_client does the encoding).

Wiring (done where the application is assembled)::

    exporter = Exporter(METRICS, DatabaseGauges(engine), sampler)
    app = MetricsMiddleware(moorage_app, METRICS, RouteClassifier.from_templates(...))
    route GET /metrics to MetricsEndpoint(config.metrics, exporter)  # or MetricsPortServer
"""

from .config import MetricsConfig
from .database import DatabaseGauges, Snapshot, read_snapshot
from .definitions import METRICS, MoorageMetrics
from .exposition import (
    Exporter,
    MetricsEndpoint,
    MetricsPortServer,
    prepare_multiprocess,
    token_ok,
    worker_exited,
)
from .middleware import MetricsMiddleware
from .routes import RouteClassifier, compile_template
from .sampler import ProcessSampler

__all__ = [
    "METRICS",
    "DatabaseGauges",
    "Exporter",
    "MetricsConfig",
    "MetricsEndpoint",
    "MetricsMiddleware",
    "MetricsPortServer",
    "MoorageMetrics",
    "ProcessSampler",
    "RouteClassifier",
    "Snapshot",
    "compile_template",
    "prepare_multiprocess",
    "read_snapshot",
    "token_ok",
    "worker_exited",
]
