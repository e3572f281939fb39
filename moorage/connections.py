"""Hostile and idle connections: a deadline for the request head, a cap on connections per
process, and the file-descriptor limit.

uvicorn (the ASGI server of ``moorage serve``) has a keep-alive timeout but no deadline for a
request head: a socket that never sends a byte, or sends its headers one byte per second, is kept
forever, and about a thousand of them exhaust a default 1,024-descriptor limit. Its
``limit_concurrency`` answers a bare "Service Unavailable" text and counts one connection short.
:class:`GuardedHttpToolsProtocol` is uvicorn's own httptools protocol with:

- ``http.header_timeout``: a connection must deliver a complete request head within this many
  seconds — counted from the connection's start for its first request, and from the first byte
  of each later request on a kept-alive connection (idle time between requests stays under
  uvicorn's keep-alive timeout). Past it the connection is closed: a silent close when nothing
  was received, ``408 Request Timeout`` when a partial head was.
- ``http.max_connections``: a request arriving on a connection beyond the cap is answered ``503``
  with an OCI ``UNAVAILABLE`` error body, ``Retry-After`` and ``Connection: close``.
- one write per small response: a response's head leaves with its body's first bytes
  (:class:`OneWritePerResponse`), not in a system call of its own.

Deadlines are checked by one timer per process (:class:`_Sweeper`), not one per request.
The class is configured per process by :func:`configure` (the parent for one worker,
``app_from_environment`` in each worker process of several), since uvicorn builds protocols from
a class it imports in each worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("moorage")

_settings: dict[str, float] = {"header_timeout": 10.0, "max_connections": 0}
_BUSY_BODY = json.dumps(
    {
        "errors": [
            {
                "code": "UNAVAILABLE",
                "message": "too many connections to this registry process; retry later",
                "detail": {},
            }
        ]
    }
).encode()
# File descriptors a process needs besides its client connections (database, store, logs,
# the job queue's and metrics' sockets).
FD_RESERVE = 64


def configure(header_timeout: float, max_connections: int) -> None:
    _settings["header_timeout"] = float(header_timeout)
    _settings["max_connections"] = int(max_connections)


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY_BODY)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


class _Sweeper:
    """One timer per process, not one per request: every ``interval`` seconds it closes the
    connections whose request-head deadline has passed. A request pays for a float stored and
    cleared (a ``call_later`` and a ``cancel`` per head cost several µs under uvloop)."""

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | None = None

    def ensure(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if self.handle is None:
            self.handle = loop.call_later(self.interval(), self.sweep, loop, connections)

    @staticmethod
    def interval() -> float:
        return min(1.0, max(0.05, _settings["header_timeout"] / 4))

    def sweep(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.handle = None
        now = loop.time()
        for conn in list(connections):
            deadline = getattr(conn, "head_deadline", None)
            if deadline is not None and now >= deadline:
                conn.head_timed_out()
        if connections:
            self.ensure(loop, connections)


_sweeper = _Sweeper()


class OneWritePerResponse:
    """A connection's transport that holds a response's head back until the first bytes of its
    body, so that both leave in one ``send``.

    uvicorn writes the status line and headers when the app sends ``http.response.start`` and
    the body when it sends ``http.response.body``: two system calls, and on loopback two TCP
    segments, for every small response (a manifest GET). Held: a head of a final response
    (status 2xx–5xx). Given out: with the next write (the body's first chunk), when the
    response completes without a body write (HEAD, an empty body), or when the connection is
    closed by the server. Dropped: when the connection was lost meanwhile. Interim responses
    (``100 Continue``) go out at once: the client waits for them before sending its body."""

    __slots__ = ("_raw", "_held")

    def __init__(self, raw: asyncio.Transport) -> None:
        self._raw = raw
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._raw.write(held + data)
        elif data[:9] == b"HTTP/1.1 " and data[9:10] in b"2345":
            self._held = bytes(data)
        else:
            self._raw.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._raw.is_closing():
                self._raw.write(held)

    def close(self) -> None:
        self.flush()
        self._raw.close()

    def is_closing(self) -> bool:
        return self._raw.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline, a connection cap, and one
    write per small response (OneWritePerResponse)."""

    head_deadline: float | None = None  # loop time by which a complete head must have come
    _awaiting_head = True
    _head_bytes = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = OneWritePerResponse(transport)  # type: ignore[assignment]
        self._awaiting_head = True
        self._head_bytes = False
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and data:
            self._head_bytes = True
            if self.head_deadline is None:  # first byte of a later request on this connection
                self._start_deadline()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self.head_deadline = None
        cap = int(_settings["max_connections"])
        if cap and len(self.connections) > cap:
            log.warning(
                "connection refused with 503: %d connections open, http.max_connections is %d",
                len(self.connections),
                cap,
            )
            app = self.app
            self.app = _too_many_connections  # read by the parent method for this request
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A response without a body write (HEAD, an empty body) ends here: its head goes now.
        self.transport.flush()  # type: ignore[attr-defined]
        # The next request's head is awaited; its deadline starts at its first byte (until
        # then the keep-alive timeout governs the idle connection).
        self._awaiting_head = True
        self._head_bytes = False
        super().on_response_complete()

    def _start_deadline(self) -> None:
        timeout = _settings["header_timeout"]
        if timeout > 0:
            self.head_deadline = self.loop.time() + timeout
            _sweeper.ensure(self.loop, self.connections)

    def head_timed_out(self) -> None:
        self.head_deadline = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: 33\r\nconnection: close\r\n\r\n"
                b"request head not received in time"
            )
        self.transport.close()


def raise_fd_limit(max_connections: int) -> int:
    """Raise this process's soft limit of open files to its hard limit (worker processes
    inherit it). Returns the connection cap to use: ``max_connections``, lowered (with a
    warning) when the limit leaves too few descriptors for it, so that clients beyond the cap get
    a clear 503 rather than a server that stops accepting."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-files limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit above %d: %s", soft, exc)
    if max_connections and soft < max_connections + FD_RESERVE:
        lowered = max(1, soft - FD_RESERVE)
        log.warning(
            "the open-files limit (%d) leaves room for %d connections, not http.max_connections "
            "(%d): capping at %d; raise LimitNOFILE (systemd) or ulimit -n to allow more",
            soft,
            lowered,
            max_connections,
            lowered,
        )
        return lowered
    return max_connections
