"""The real Moorage application with the metrics pieces around it, as phase 2 will wire them
into moorage/app.py: the middleware outside everything, GET /metrics routed to the endpoint,
database gauges and process sampling started with the application.

Served by uvicorn in a subprocess (``uvicorn --factory tests.metrics.wrapped_app:create``),
configured like ``moorage serve`` through ``MOORAGE_*`` variables, plus ``TEST_METRICS_TOKEN``
and ``TEST_METRICS_PORT`` for the endpoint's own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from moorage.api.app import ManagementAPI
from moorage.app import Moorage
from moorage.config import load_config
from moorage.metrics import (
    METRICS,
    DatabaseGauges,
    Exporter,
    MetricsConfig,
    MetricsEndpoint,
    MetricsMiddleware,
    MetricsPortServer,
    ProcessSampler,
    RouteClassifier,
    worker_exited,
)

API_PREFIX = "/api/v1"


def api_templates() -> list[str]:
    """The REST API's route templates, from its own route table (the handlers are not called:
    the table only names bound methods)."""
    api = object.__new__(ManagementAPI)
    return [API_PREFIX + op.path for op in ManagementAPI._ops(api)]


class MeteredMoorage:
    def __init__(self) -> None:
        self.config = load_config()
        self.metrics_config = MetricsConfig(
            enabled=os.environ.get("TEST_METRICS_ENABLED", "true") == "true",
            token=os.environ.get("TEST_METRICS_TOKEN") or None,
            port=int(os.environ["TEST_METRICS_PORT"])
            if os.environ.get("TEST_METRICS_PORT")
            else None,
        )
        self.moorage = Moorage(self.config)
        self.sampler = ProcessSampler(METRICS)
        self.exporter = Exporter(METRICS, None, self.sampler)
        self.endpoint = MetricsEndpoint(self.metrics_config, self.exporter)
        self.metered = MetricsMiddleware(
            self._route, METRICS, RouteClassifier.from_templates(api_templates())
        )
        self.sampler.add(self.metered.sample)
        self.port_server: MetricsPortServer | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.metered(scope, receive, send)

    async def _route(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/metrics" and self.metrics_config.port is None:
            await self.endpoint(scope, receive, send)
        else:
            await self.moorage(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.moorage.startup()
                ctx = self.moorage.ctx
                assert ctx is not None and self.moorage.audit is not None
                self.exporter.database = DatabaseGauges(ctx.engine, METRICS, ttl=0.2)
                self.sampler.watch_pool("main", ctx.engine)
                self.sampler.watch_audit(self.moorage.audit)
                self.tasks = [
                    asyncio.create_task(self.sampler.run(0.2)),
                    asyncio.create_task(self.exporter.database.run(0.2)),
                ]
                if self.metrics_config.port is not None:
                    self.port_server = MetricsPortServer(
                        self.metrics_config, self.exporter, "127.0.0.1"
                    ).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self.tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if self.port_server is not None:
                    self.port_server.stop()
                await self.moorage.shutdown()
                worker_exited(os.getpid())
                await send({"type": "lifespan.shutdown.complete"})
                return


def create() -> MeteredMoorage:
    """The factory uvicorn calls in each worker (the test migrates the database first, as
    ``moorage serve`` does before its workers start)."""
    return MeteredMoorage()
