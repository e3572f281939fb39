"""GET /metrics: the Prometheus text format (or OpenMetrics when the scraper asks for it), made
by prometheus_client, behind ``metrics.enabled`` and an optional bearer token, on the registry's
port or on a port of its own.

Several worker processes: call :func:`prepare_multiprocess` in the parent before the workers
start (it points prometheus_client at a shared directory of per-process value files), and every
exposition then merges all workers' values, whichever process serves the scrape.
"""

from __future__ import annotations

import hmac
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder

from .config import MetricsConfig
from .database import DatabaseGauges
from .definitions import METRICS, MoorageMetrics
from .sampler import ProcessSampler

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PATH = "/metrics"


def prepare_multiprocess(directory: str | Path) -> Path:
    """Empty *directory* and point prometheus_client at it (``PROMETHEUS_MULTIPROC_DIR``), for
    worker processes started afterwards. Call once in the parent, before any worker starts:
    values left from an earlier run would otherwise be counted again."""
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker process that stopped (call from the worker's shutdown
    or from the supervisor): its in-flight and pool figures must not be summed any more."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Exporter:
    """Renders the exposition: this process's metrics (or, in multi-process mode, every
    worker's), after refreshing the database gauges when stale and sampling process state."""

    def __init__(
        self,
        metrics: MoorageMetrics = METRICS,
        database: DatabaseGauges | None = None,
        sampler: ProcessSampler | None = None,
    ) -> None:
        self.metrics = metrics
        self.database = database
        self.sampler = sampler
        self._single = _single_process_registry(metrics)

    def registry(self) -> CollectorRegistry:
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            merged = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
            return merged
        return self._single

    async def refresh(self) -> None:
        if self.sampler is not None:
            self.sampler.sample()
        if self.database is not None:
            await self.database.refresh()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry()), content_type

    async def render_fresh(self, accept: str | None) -> tuple[bytes, str]:
        await self.refresh()
        return self.render(accept)


def _single_process_registry(metrics: MoorageMetrics) -> CollectorRegistry:
    """Moorage's metrics plus the process figures (CPU, memory, file descriptors) that only a
    single process can report about itself."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.registry)  # a registry is a collector too
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def token_ok(config: MetricsConfig, authorization: str | None) -> bool:
    """Whether the Authorization header carries ``metrics.token`` (or none is configured)."""
    if not config.token:
        return True
    if not authorization or len(authorization) > 4096:
        return False
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), config.token.encode())


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return str(v.decode("latin-1"))
    return None


def _plain(
    status: int, text: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    return status, headers, body


class MetricsEndpoint:
    """The ASGI application answering ``GET /metrics`` (route it there; it answers any path it
    is given). Disabled: 404, as if there were no such path. With a token: 401 without it."""

    def __init__(self, config: MetricsConfig, exporter: Exporter) -> None:
        self.config = config
        self.exporter = exporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers, body = await self.answer(
            scope["method"], _header(scope, b"authorization"), _header(scope, b"accept")
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def answer(
        self, method: str, authorization: str | None, accept: str | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if not self.config.enabled:
            return _plain(404, "not found")
        if method not in ("GET", "HEAD"):
            return _plain(405, "use GET", [(b"allow", b"GET, HEAD")])
        if not token_ok(self.config, authorization):
            return _plain(
                401, "bearer token required", [(b"www-authenticate", b'Bearer realm="metrics"')]
            )
        data, content_type = await self.exporter.render_fresh(accept)
        return (
            200,
            [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
            ],
            data,
        )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class MetricsPortServer:
    """``/metrics`` on a port of its own (``metrics.port``), served by a thread so that it keeps
    answering while the event loop is busy. It renders what the process (or, in multi-process
    mode, the workers) recorded; database gauges come from the workers' DatabaseGauges.run()."""

    def __init__(self, config: MetricsConfig, exporter: Exporter, host: str) -> None:
        if config.port is None:
            raise ValueError("metrics.port is not set")
        self.config = config
        self.exporter = exporter
        self.server = make_server(
            host, config.port, self._wsgi, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if environ.get("PATH_INFO") != PATH:
            status, headers, body = _plain(404, "not found")
        elif not self.config.enabled:
            status, headers, body = _plain(404, "not found")
        elif method not in ("GET", "HEAD"):
            status, headers, body = _plain(405, "use GET", [(b"allow", b"GET, HEAD")])
        elif not token_ok(self.config, environ.get("HTTP_AUTHORIZATION")):
            status, headers, body = _plain(
                401, "bearer token required", [(b"www-authenticate", b'Bearer realm="metrics"')]
            )
        else:
            if self.exporter.sampler is not None:
                self.exporter.sampler.sample()
            data, content_type = self.exporter.render(environ.get("HTTP_ACCEPT"))
            status, headers, body = (
                200,
                [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
                data,
            )
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}[
            status
        ]
        start_response(
            f"{status} {reason}",
            [(k.decode(), v.decode()) for k, v in headers if k != b"content-length"],
        )
        return [b"" if method == "HEAD" else body]

    def start(self) -> MetricsPortServer:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-port", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)
