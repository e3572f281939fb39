"""uvicorn's own httptools protocol, as ``moorage serve`` runs it (GuardedHttpToolsProtocol),
with a transport that records what is written: a small response is one write, not two (its
head, then its body), and nothing is held back that a client waits for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from moorage.connections import GuardedHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 5000)}.get(
            name, default
        )


async def small(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"schemaVersion":2}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"19")],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def streamed(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]}
    )
    await asyncio.sleep(0.01)  # the first chunk comes from storage a moment later
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await send({"type": "http.response.body", "body": b"def"})


async def upload(scope: Any, receive: Any, send: Any) -> None:
    got = b""
    while True:
        message = await receive()
        got += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def broken(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    raise RuntimeError("the store failed after the head")


async def run(app: Any, *requests: bytes) -> RecordingTransport:
    config = Config(app=app, http=GuardedHttpToolsProtocol, lifespan="off", log_level="critical")
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for data in requests:
        protocol.data_received(data)
        for _ in range(50):
            await asyncio.sleep(0.005)
            if protocol.cycle is None or protocol.cycle.response_complete or transport.closed:
                break
    await asyncio.sleep(0.02)
    return transport


GET = b"GET /v2/a/manifests/1 HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_small_response_is_one_write() -> None:
    t = await run(small, GET)
    assert len(t.writes) == 1, t.writes
    assert t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert t.writes[0].endswith(b'\r\n\r\n{"schemaVersion":2}')


async def test_keep_alive_requests_are_one_write_each() -> None:
    t = await run(small, GET, GET, b"HEAD /v2/a/manifests/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(t.writes) == 3, t.writes
    assert t.writes[2].endswith(b"content-length: 19\r\n\r\n")  # a HEAD: the head, at once


async def test_a_streamed_body_starts_with_its_head() -> None:
    t = await run(streamed, GET)
    assert [w[-3:] for w in t.writes] == [b"abc", b"def"]
    assert t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


async def test_100_continue_is_not_held_back() -> None:
    head = b"PUT /v2/a/blobs/uploads/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    config = Config(app=upload, http=GuardedHttpToolsProtocol, lifespan="off", log_level="critical")
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    t = RecordingTransport()
    protocol.connection_made(t)
    protocol.data_received(head)
    await asyncio.sleep(0.05)
    # The client sends its body only after this: it must have been written already.
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    protocol.data_received(b"abc")
    await asyncio.sleep(0.05)
    assert len(t.writes) == 2 and t.writes[1].startswith(b"HTTP/1.1 201 Created\r\n")


async def test_a_head_held_when_the_app_fails_goes_out_before_the_close() -> None:
    t = await run(broken, GET)
    assert t.closed
    assert len(t.writes) == 1 and t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


async def test_nothing_is_written_to_a_lost_connection() -> None:
    config = Config(app=streamed, http=GuardedHttpToolsProtocol, lifespan="off", log_level="critical")
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    t = RecordingTransport()
    protocol.connection_made(t)
    protocol.data_received(GET)
    await asyncio.sleep(0.002)  # the head is held, the first chunk not read yet
    t.closed = True
    protocol.connection_lost(None)
    await asyncio.sleep(0.05)
    assert t.writes == []


@pytest.fixture(autouse=True)
def _quiet_uvicorn() -> None:
    import logging

    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
