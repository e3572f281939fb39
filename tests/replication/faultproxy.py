"""A loopback HTTP/1.1 proxy that injects faults in front of a real registry.

Requests pass through unchanged (the Host header too, so the registry's Location headers point
back at the proxy) unless a :class:`Rule` matches: it can answer with a status of its own (a 429
with ``Retry-After``) or cut both connections after a number of request-body or response-body
bytes (a network failure mid-transfer). Parsing and framing are h11's (what httpx itself uses);
every request gets a fresh upstream connection. Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h11


@dataclass
class Rule:
    method: str
    path: str  # regex searched in the request target
    status: int | None = None  # answer this instead of forwarding
    headers: list[tuple[str, str]] = field(default_factory=list)
    cut_request_after: int | None = None  # bytes of request body forwarded before the cut
    cut_response_after: int | None = None  # bytes of response body forwarded before the cut
    skip: int = 0  # let this many matching requests through first
    times: int = 1  # then fire this many times
    seen: int = 0
    fired: int = 0

    def take(self, method: str, target: str) -> bool:
        if method != self.method or not re.search(self.path, target):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass
class Record:
    at: float
    method: str
    target: str
    outcome: str  # "forwarded 202", "injected 429", "cut request", "cut response"


class _Cut(Exception):
    pass


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[Rule] = []
        self.records: list[Record] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _rule(self, method: str, target: str) -> Rule | None:
        for rule in self.rules:
            if rule.take(method, target):
                return rule
        return None

    def _record(self, method: str, target: str, outcome: str) -> None:
        self.records.append(Record(time.monotonic(), method, target, outcome))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                method, target = event.method.decode(), event.target.decode()
                rule = self._rule(method, target)
                if rule is not None and rule.status is not None:
                    await _drain(conn, reader)
                    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"injected"}]}'
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                        *rule.headers,
                    ]
                    writer.write(conn.send(h11.Response(status_code=rule.status, headers=headers)))
                    writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    self._record(method, target, f"injected {rule.status}")
                else:
                    try:
                        status = await self._forward(conn, reader, writer, event, rule)
                    except _Cut as cut:
                        self._record(method, target, str(cut))
                        writer.transport.abort()
                        return
                    self._record(method, target, f"forwarded {status}")
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is stopping: end quietly (the task ends with the loop)
        finally:
            writer.close()

    async def _forward(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        rule: Rule | None,
    ) -> int:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up = h11.Connection(h11.CLIENT)
        try:
            headers = [(k, v) for k, v in request.headers if k.lower() != b"connection"]
            headers.append((b"connection", b"close"))
            up_writer.write(
                up.send(h11.Request(method=request.method, target=request.target, headers=headers))
            )
            sent = 0
            while True:
                event = await _next(conn, reader)
                if isinstance(event, h11.Data):
                    data = bytes(event.data)
                    if rule is not None and rule.cut_request_after is not None:
                        if sent + len(data) > rule.cut_request_after:
                            up_writer.write(
                                up.send(h11.Data(data=data[: rule.cut_request_after - sent]))
                            )
                            await up_writer.drain()
                            up_writer.transport.abort()
                            raise _Cut("cut request")
                    sent += len(data)
                    up_writer.write(up.send(h11.Data(data=data)))
                    await up_writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    up_writer.write(up.send(h11.EndOfMessage()))
                    await up_writer.drain()
                    break
                else:
                    raise h11.RemoteProtocolError("unexpected event")
            response = await _next(up, up_reader)
            while isinstance(response, h11.InformationalResponse):
                response = await _next(up, up_reader)
            assert isinstance(response, h11.Response)
            out_headers = [(k, v) for k, v in response.headers if k.lower() != b"connection"]
            writer.write(
                conn.send(h11.Response(status_code=response.status_code, headers=out_headers))
            )
            received = 0
            while True:
                event = await _next(up, up_reader)
                if isinstance(event, h11.Data):
                    data = bytes(event.data)
                    if rule is not None and rule.cut_response_after is not None:
                        if received + len(data) > rule.cut_response_after:
                            writer.write(
                                conn.send(h11.Data(data=data[: rule.cut_response_after - received]))
                            )
                            await writer.drain()
                            raise _Cut("cut response")
                    received += len(data)
                    writer.write(conn.send(h11.Data(data=data)))
                    await writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    return int(response.status_code)
        finally:
            up_writer.transport.abort()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(256 * 1024))
            continue
        return event


async def _drain(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    while not isinstance(await _next(conn, reader), h11.EndOfMessage):
        pass


@contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
