"""Forwarding to syslog (RFC 5424 over UDP, and TCP with RFC 6587 octet counting) and HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import AuditConfig, AuditEvent, AuditLog
from moorage.audit import store as audit_store
from moorage.audit.events import AuditRecord, format_time, seal
from moorage.audit.forward import UDP_MAX_MESSAGE, format_rfc5424, octet_frame
from tests.audit import ASYNC, all_records, db_url_fixture, engine_fixture, event  # noqa: F401
from tests.conftest import free_port

# <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA SP MSG
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|(?:\[[^\]]*\])+) (?P<msg>.*)$",
    re.DOTALL,
)


def parse_syslog(line: bytes) -> dict[str, Any]:
    m = RFC5424.match(line.decode("utf-8"))
    assert m, line
    out: dict[str, Any] = m.groupdict()
    out["pri"] = int(out["pri"])
    out["record"] = json.loads(out["msg"])
    datetime.fromisoformat(out["ts"].replace("Z", "+00:00"))  # a valid RFC 3339 time
    return out


def audit_config(**kw: Any) -> AuditConfig:
    return AuditConfig.model_validate({"flush_interval_ms": 20, **kw})


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def check_message(msg: dict[str, Any], rec: AuditRecord, facility: int, app: str) -> None:
    severity = {"success": 6, "failure": 5, "denied": 4}[rec.result]
    assert msg["pri"] == facility * 8 + severity
    assert msg["ts"] == format_time(rec.time)
    assert msg["app"] == app
    assert msg["msgid"] == rec.action
    assert msg["sd"] == "-"
    assert msg["record"] == rec.to_dict()


# --- syslog over UDP -------------------------------------------------------------------------


class _UDPSink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)


@pytest.fixture
async def udp_listener() -> AsyncIterator[tuple[int, _UDPSink]]:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(_UDPSink, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1], sink
    finally:
        transport.close()


@ASYNC
async def test_syslog_udp(engine: AsyncEngine, udp_listener: tuple[int, _UDPSink]) -> None:
    port, sink = udp_listener
    config = audit_config(
        syslog={
            "address": f"127.0.0.1:{port}",
            "protocol": "udp",
            "app_name": "moorage-test",
            "facility": "local3",
        }
    )
    audit = AuditLog(engine, config)
    await audit.start()
    try:
        await audit.record(event(1, action="login", result="success"))
        await audit.record(event(2, action="manifest.pull", result="denied"))
        await audit.record_now(
            event(3, action="login.failed", result="failure", actor_type="anonymous", actor="")
        )
        await wait_for(lambda: len(sink.datagrams) >= 3)
    finally:
        await audit.stop()
    records = await all_records(engine)
    messages = [parse_syslog(d) for d in sink.datagrams]
    assert len(messages) == 3
    for msg, rec in zip(messages, records, strict=True):
        check_message(msg, rec, facility=19, app="moorage-test")


@ASYNC
async def test_oversized_udp_message_loses_only_its_details() -> None:
    rec = seal(AuditEvent("policy.change", details={"blob": "x" * 20000}), 1, "0" * 64)
    line = format_rfc5424(rec, hostname="h", procid=1, max_bytes=UDP_MAX_MESSAGE)
    assert len(line) <= UDP_MAX_MESSAGE
    body = parse_syslog(line)["record"]
    assert body["details"] == {} and body["details_truncated"] is True
    assert body["hash"] == rec.hash
    assert octet_frame(b"abc") == b"3 abc"


# --- syslog over TCP (octet counting) --------------------------------------------------------


@dataclass
class _TCPSink:
    frames: list[bytes] = field(default_factory=list)
    connections: int = 0
    close_after_first_frame: bool = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
                while True:  # MSG-LEN SP SYSLOG-MSG, possibly split across reads
                    space = buf.find(b" ")
                    if space < 0:
                        break
                    length = int(buf[:space])
                    if len(buf) < space + 1 + length:
                        break
                    self.frames.append(buf[space + 1 : space + 1 + length])
                    buf = buf[space + 1 + length :]
                    if self.close_after_first_frame:
                        self.close_after_first_frame = False
                        return
        finally:
            writer.close()


@pytest.fixture
async def tcp_listener() -> AsyncIterator[tuple[int, _TCPSink]]:
    sink = _TCPSink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], sink
    finally:
        server.close()
        await server.wait_closed()


@ASYNC
async def test_syslog_tcp(engine: AsyncEngine, tcp_listener: tuple[int, _TCPSink]) -> None:
    port, sink = tcp_listener
    config = audit_config(syslog={"address": f"127.0.0.1:{port}", "protocol": "tcp"})
    audit = AuditLog(engine, config)
    await audit.start()
    try:
        for i in range(50):
            await audit.record(event(i, user_agent=f"agent with spaces\nand a newline {i}"))
        await audit.record_now(event(99, action="permission.grant", result="denied"))
        await wait_for(lambda: len(sink.frames) >= 51)
    finally:
        await audit.stop()
    records = await all_records(engine)
    messages = [parse_syslog(f) for f in sink.frames]
    assert len(messages) == 51
    for msg, rec in zip(messages, records, strict=True):
        check_message(msg, rec, facility=10, app="moorage")  # defaults: authpriv, moorage
    assert sink.connections == 1  # one connection, kept open


@ASYNC
async def test_syslog_tcp_reconnects(
    engine: AsyncEngine, tcp_listener: tuple[int, _TCPSink]
) -> None:
    port, sink = tcp_listener
    sink.close_after_first_frame = True
    audit = AuditLog(
        engine, audit_config(syslog={"address": f"127.0.0.1:{port}", "protocol": "tcp"})
    )
    await audit.start()
    try:
        await audit.record_now(event(1))
        await wait_for(lambda: len(sink.frames) == 1)
        await asyncio.sleep(0.1)  # the receiver has closed the connection
        await audit.record_now(event(2))
        await audit.record_now(event(3))
        await wait_for(lambda: len(sink.frames) >= 3)
    finally:
        await audit.stop()
    assert [parse_syslog(f)["record"]["id"] for f in sink.frames][-2:] == [2, 3]
    assert sink.connections == 2


# --- HTTP ------------------------------------------------------------------------------------


@dataclass
class _HTTPSink:
    fail_first: int = 1
    status: int = 500
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def http_listener() -> Iterator[tuple[str, _HTTPSink]]:
    sink = _HTTPSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's spelling
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with sink.lock:
                sink.attempts += 1
                fail = sink.attempts <= sink.fail_first
                if not fail:
                    sink.bodies.append(json.loads(body))
                    sink.headers.append(dict(self.headers))
            self.send_response(sink.status if fail else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/audit", sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@ASYNC
async def test_http_forwarding_retries_after_a_500(
    engine: AsyncEngine, http_listener: tuple[str, _HTTPSink]
) -> None:
    url, sink = http_listener
    config = audit_config(
        http={
            "url": url,
            "max_retries": 3,
            "backoff_seconds": 0.05,
            "headers": {"Authorization": "Bearer s3cret"},
        }
    )
    audit = AuditLog(engine, config)
    await audit.start()
    try:
        for i in range(5):
            await audit.record(event(i))
        await audit.flush()
        await wait_for(lambda: sum(len(b["events"]) for b in sink.bodies) >= 5)
        await audit.record_now(event(9, action="user.delete"))
        await wait_for(lambda: sum(len(b["events"]) for b in sink.bodies) >= 6)
    finally:
        await audit.stop()
    assert sink.attempts == len(sink.bodies) + 1  # the first POST got a 500, then retried
    delivered = [e for b in sink.bodies for e in b["events"]]
    assert delivered == [r.to_dict() for r in await all_records(engine)]
    assert all(h["Authorization"] == "Bearer s3cret" for h in sink.headers)
    assert all(h["Content-Type"] == "application/json" for h in sink.headers)


@ASYNC
async def test_http_forwarding_retries_later_after_exhausting_retries(
    engine: AsyncEngine, http_listener: tuple[str, _HTTPSink]
) -> None:
    url, sink = http_listener
    sink.fail_first = 3  # more failures than immediate retries: the batch waits, then goes
    config = audit_config(http={"url": url, "max_retries": 1, "backoff_seconds": 0.05})
    audit = AuditLog(engine, config)
    await audit.start()
    try:
        await audit.record_now(event(1))
        await wait_for(lambda: len(sink.bodies) == 1)
    finally:
        await audit.stop()
    assert sink.attempts == 4
    assert [e["id"] for e in sink.bodies[0]["events"]] == [1]


@ASYNC
async def test_http_permanent_refusal_drops_the_batch(
    engine: AsyncEngine, http_listener: tuple[str, _HTTPSink]
) -> None:
    url, sink = http_listener
    sink.status = 400
    audit = AuditLog(engine, audit_config(http={"url": url, "backoff_seconds": 0.05}))
    await audit.start()
    try:
        await audit.record_now(event(1))
        await wait_for(lambda: sink.attempts == 1)
        await audit.record_now(event(2))
        await wait_for(lambda: len(sink.bodies) == 1)
    finally:
        await audit.stop()
    assert sink.attempts == 2  # the refused batch was not retried
    assert [e["id"] for e in sink.bodies[0]["events"]] == [2]
    assert audit.forwarders[0].dropped == 1


@ASYNC
async def test_unreachable_receivers_never_block_recording(engine: AsyncEngine) -> None:
    dead = free_port()  # nothing listens there
    config = audit_config(
        syslog={"address": f"127.0.0.1:{dead}", "protocol": "tcp"},
        http={"url": f"http://127.0.0.1:{dead}/", "max_retries": 1, "backoff_seconds": 0.05},
        forward_queue_size=5,
    )
    audit = AuditLog(engine, config)
    await audit.start()
    started = time.monotonic()
    try:
        for i in range(20):
            await audit.record(event(i))
        await audit.record_now(event(20))
        assert time.monotonic() - started < 5
        assert await audit_store.count(engine) == 21
        await wait_for(lambda: all(f.dropped >= 16 for f in audit.forwarders))
        assert all(f.pending <= 5 for f in audit.forwarders)
    finally:
        t = time.monotonic()
        await audit.stop(forward_grace=0.5)
        assert time.monotonic() - t < 5
    assert (await audit.verify()).ok


# --- under uvloop, the server's event loop ---------------------------------------------------


def test_forwarding_under_uvloop(tmp_path: Any, http_listener: tuple[str, _HTTPSink]) -> None:
    """uvloop lacks some asyncio APIs (loop.sock_sendto): run every forwarder on it."""
    uvloop = pytest.importorskip("uvloop")
    from moorage.db.engine import create_engine, upgrade

    url, http_sink = http_listener
    http_sink.fail_first = 0

    async def main() -> tuple[list[bytes], list[bytes], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        udp, udp_sink = await loop.create_datagram_endpoint(_UDPSink, local_addr=("127.0.0.1", 0))
        tcp_sink = _TCPSink()
        tcp = await asyncio.start_server(tcp_sink.handle, "127.0.0.1", 0)
        db = f"sqlite:///{tmp_path / 'uv.db'}"
        await upgrade(db)
        engine = create_engine(db)
        logs = [
            AuditLog(
                engine,
                audit_config(syslog={"address": f"127.0.0.1:{port}", "protocol": proto}, http=http),
            )
            for port, proto, http in [
                (udp.get_extra_info("sockname")[1], "udp", {"url": url}),
                (tcp.sockets[0].getsockname()[1], "tcp", {}),
            ]
        ]
        try:
            for log in logs:
                await log.start()
                await log.record_now(event(1))
            await wait_for(lambda: len(udp_sink.datagrams) == 1 and len(tcp_sink.frames) == 1)
            await wait_for(lambda: len(http_sink.bodies) == 1)
        finally:
            for log in logs:
                await log.stop()
            udp.close()
            tcp.close()
            await engine.dispose()
        return udp_sink.datagrams, tcp_sink.frames, http_sink.bodies

    datagrams, frames, bodies = uvloop.run(main())
    assert parse_syslog(datagrams[0])["record"]["id"] == 1
    assert parse_syslog(frames[0])["record"]["id"] == 2
    assert [e["id"] for e in bodies[0]["events"]] == [1]
