"""ASGI middleware recording every HTTP request: count by method, route template and status;
latency; body bytes in and out; requests and uploads in flight (sampled).

It sits outside the application (``MetricsMiddleware(Moorage(config))``) so that it also sees
requests the application answers with an error, and it never changes a message. Cost matters:
manifest GET is served at thousands of requests per second, so the per-request work is a route
classification (string operations, no regular expression on /v2), one dictionary lookup for the
pre-bound metric children of (method, route, status), and the children's own updates
(bench/metrics_middleware.py measures it).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from .definitions import METRICS, MoorageMetrics
from .routes import UPLOAD_ROUTES, RouteClassifier, method_label

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

NO_RESPONSE = "none"  # status label when no response started (the client went away first)
_UPLOAD_METHODS = frozenset({"POST", "PATCH", "PUT"})
_BODYLESS = frozenset({"GET", "HEAD"})  # no request body to count: receive is not wrapped


@dataclass(slots=True)
class _Children:
    requests: Counter
    duration: Histogram
    bytes_in: Counter
    bytes_out: Counter


class MetricsMiddleware:
    """Wrap an ASGI application; non-HTTP scopes (lifespan) pass straight through.

    *classify* maps a path to its route template (default: :class:`RouteClassifier` with the
    built-in /v2 and fixed routes; give it the API's and UI's route tables for finer labels)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: MoorageMetrics = METRICS,
        classify: Callable[[str], str] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.classify = classify or RouteClassifier()
        self._children: dict[tuple[str, str, int], _Children] = {}
        # Point-in-time figures kept as plain integers (no lock, no shared-memory write per
        # request) and copied into their gauges by sample() — call it before every exposition
        # (ProcessSampler.add(middleware.sample)).
        self.in_flight = 0
        self.uploads_in_flight = 0

    def sample(self) -> None:
        self.metrics.http_requests_in_flight.set(self.in_flight)
        self.metrics.uploads_in_flight.set(self.uploads_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = method_label(scope["method"])
        route = self.classify(scope["path"])
        # [status, bytes out, bytes in]
        state = [0, 0, 0]

        async def send_counting(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                state[1] += len(message.get("body", b""))
            elif kind == "http.response.start":
                state[0] = message["status"]
            await send(message)

        if method in _BODYLESS:
            receive_counting = receive
        else:

            async def receive_counting() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    state[2] += len(message.get("body", b""))
                return message

        upload = route in UPLOAD_ROUTES and method in _UPLOAD_METHODS
        self.in_flight += 1
        if upload:
            self.uploads_in_flight += 1
        started = time.perf_counter()
        try:
            await self.app(scope, receive_counting, send_counting)
        except BaseException:
            if state[0] == 0:
                state[0] = 500  # what the server answers for an escaped exception
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.in_flight -= 1
            if upload:
                self.uploads_in_flight -= 1
            key = (method, route, state[0])
            children = self._children.get(key)
            if children is None:
                children = self._bind(key)
            children.requests.inc()
            children.duration.observe(elapsed)
            if state[2]:
                children.bytes_in.inc(state[2])
            if state[1]:
                children.bytes_out.inc(state[1])

    def _bind(self, key: tuple[str, str, int]) -> _Children:
        """Look the labelled children up once per (method, route, status); the set is bounded
        (methods and templates are fixed sets, statuses are what the application answers)."""
        method, route, code = key
        status = str(code) if code else NO_RESPONSE
        m = self.metrics
        children = _Children(
            m.http_requests.labels(method, route, status),
            m.http_request_duration.labels(method, route),
            m.http_request_bytes.labels(route),
            m.http_response_bytes.labels(route),
        )
        if len(self._children) < 10_000:  # a cache, not a second copy of the label space
            self._children[key] = children
        return children
