"""The metrics of one process, assembled: what ``moorage serve`` (moorage/app.py) and
``moorage worker`` (moorage/cli/serve.py) run for Prometheus.

- A serving process wraps its ASGI application in :class:`~.middleware.MetricsMiddleware`
  (``wrap``), answers ``GET /metrics`` with :attr:`endpoint` (unless ``metrics.port`` moves it to
  a port of its own), and after startup hands in the route templates of its REST API and UI
  (``use_routes``) so that requests are labelled by template.
- ``start`` samples the database pool and the audit queue, keeps the database-derived gauges
  fresh, and serves ``metrics.port`` from a thread when this process owns that port.

Several worker processes (``http.workers`` > 1): the parent prepared a shared directory
(``PROMETHEUS_MULTIPROC_DIR``, :func:`~.exposition.prepare_multiprocess`) and serves
``metrics.port`` itself (:func:`serve_port_in_parent`); each worker then samples its own state
and refreshes the database gauges in the background, since the scrape may be answered by
another process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..aio import cancel_and_wait
from ..config import MetricsConfig
from .database import DatabaseGauges
from .definitions import METRICS, MoorageMetrics
from .exposition import (
    MULTIPROC_ENV,
    Exporter,
    MetricsEndpoint,
    MetricsPortServer,
    worker_exited,
)
from .middleware import ASGIApp, MetricsMiddleware
from .routes import RouteClassifier
from .sampler import ProcessSampler

log = logging.getLogger("moorage.metrics")
SAMPLE_SECONDS = 5.0


def multiprocess() -> bool:
    """Whether this process is one of several workers sharing a metrics directory."""
    return bool(os.environ.get(MULTIPROC_ENV))


class NodeMetrics:
    def __init__(
        self, config: MetricsConfig, host: str = "127.0.0.1", metrics: MoorageMetrics = METRICS
    ) -> None:
        self.config = config
        self.host = host
        self.metrics = metrics
        self.sampler = ProcessSampler(metrics)
        self.exporter = Exporter(metrics, None, self.sampler)
        # None: /metrics is not served on the registry's port (disabled, or on its own port).
        self.endpoint = (
            MetricsEndpoint(config, self.exporter)
            if config.enabled and config.port is None
            else None
        )
        self.middleware: MetricsMiddleware | None = None
        self.port_server: MetricsPortServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """*app* with request metrics recorded around it (when metrics are enabled)."""
        if not self.config.enabled:
            return app
        self.middleware = MetricsMiddleware(app, self.metrics)
        self.sampler.add(self.middleware.sample)
        return self.middleware

    def use_routes(self, templates: Iterable[str]) -> None:
        """Label requests outside /v2 by these route templates (the REST API's and the UI's)."""
        if self.middleware is not None:
            self.middleware.classify = RouteClassifier.from_templates(templates)

    async def start(self, engine: AsyncEngine, audit: Any | None = None) -> None:
        if not self.config.enabled:
            return
        self.exporter.database = DatabaseGauges(
            engine, self.metrics, ttl=self.config.database_seconds
        )
        self.sampler.watch_pool("main", engine)
        if audit is not None:
            self.sampler.watch_audit(audit)
        shared = multiprocess()
        if shared or self.config.port is not None:
            # The scrape is answered elsewhere (another worker, the parent, the port's thread),
            # which cannot read this process's state or await the database: keep them fresh.
            self._tasks.append(asyncio.create_task(self.exporter.database.run()))
        if shared:
            self._tasks.append(asyncio.create_task(self.sampler.run(SAMPLE_SECONDS)))
        elif self.config.port is not None:
            self.port_server = MetricsPortServer(self.config, self.exporter, self.host).start()
            log.info("metrics on http://%s:%d/metrics", self.host, self.port_server.port)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self.port_server is not None:
            self.port_server.stop()
            self.port_server = None
        worker_exited(os.getpid())


def serve_port_in_parent(config: MetricsConfig, host: str) -> MetricsPortServer | None:
    """With several workers, ``metrics.port`` is served once, by the parent process, from the
    workers' shared directory (the workers keep their figures there)."""
    if not config.enabled or config.port is None:
        return None
    server = MetricsPortServer(config, Exporter(METRICS, None, None), host).start()
    log.info("metrics on http://%s:%d/metrics (all workers)", host, server.port)
    return server
