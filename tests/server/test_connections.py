"""Idle and hostile connections against a real `moorage serve` over real sockets (issue 10).

- a connection that never sends a request, or sends its head one byte at a time, is closed once
  ``http.header_timeout`` passes (uvicorn alone keeps both forever);
- a request on a connection beyond ``http.max_connections`` is answered a clear 503;
- the open-files soft limit is raised to the hard limit at start, and the cap is lowered to what
  the limit allows.
"""

from __future__ import annotations

import contextlib
import select
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, error_code


@contextlib.contextmanager
def serving(env: dict[str, str], wrap: list[str] | None = None) -> Iterator[MoorageServer]:
    class Wrapped(MoorageServer):
        def command(self) -> list[str]:
            return [*(wrap or []), *super().command()]

    with tempfile.TemporaryDirectory(prefix="moorage-conn-") as tmp:
        srv = Wrapped(Path(tmp) / "data", extra_args=["--no-auth"], env=env).start()
        try:
            yield srv
        finally:
            srv.stop()


def connect(srv: MoorageServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=30)


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing *sock* (None: still open after *within* seconds)."""
    received = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if not readable:
            continue
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


HEAD = b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow-client/1.0\r\n" + (
    b"X-Padding: " + b"a" * 120 + b"\r\n\r\n"
)


def test_idle_and_slow_connections_are_closed_after_the_head_deadline() -> None:
    with serving({"MOORAGE_HTTP_HEADER_TIMEOUT": "1"}) as srv:
        idle = [connect(srv) for _ in range(30)]
        # A client that completes a request keeps its kept-alive connection past the deadline.
        with httpx.Client(base_url=srv.url) as kept:
            assert kept.get("/v2/").status_code == 200
            slow = [connect(srv) for _ in range(5)]
            sent = [0] * len(slow)
            outcome: dict[int, bytes] = {}
            deadline = time.monotonic() + 30
            while len(outcome) < len(slow) and time.monotonic() < deadline:
                for i, sock in enumerate(slow):
                    if i in outcome:
                        continue
                    try:
                        sock.send(HEAD[sent[i] : sent[i] + 1])  # one byte, then a pause
                        sent[i] += 1
                    except (BrokenPipeError, ConnectionResetError):
                        outcome[i] = b""
                        continue
                    got = closed_by_server(sock, 0.05)
                    if got is not None:
                        outcome[i] = got
                time.sleep(0.2)
            assert len(outcome) == len(slow), "slow clients were never cut off"
            assert all(sent[i] < len(HEAD) for i in outcome)  # cut off before the head ended
            assert any(b"408 Request Timeout" in got for got in outcome.values()), outcome

            for sock in idle:
                assert closed_by_server(sock, 15) == b""  # a silent close: nothing was asked
            # The well-behaved client's connection is still the same open one.
            assert kept.get("/v2/").status_code == 200
        for sock in idle + slow:
            sock.close()
        assert httpx.get(f"{srv.url}/v2/").status_code == 200


def test_connections_beyond_the_cap_are_answered_503() -> None:
    env = {"MOORAGE_HTTP_MAX_CONNECTIONS": "4", "MOORAGE_HTTP_HEADER_TIMEOUT": "120"}
    with serving(env) as srv:
        held = [connect(srv) for _ in range(3)]
        time.sleep(0.3)  # the server has accepted them
        r = httpx.get(f"{srv.url}/v2/")  # the fourth connection
        assert r.status_code == 200, r.text
        held.append(connect(srv))
        time.sleep(0.3)
        r = httpx.get(f"{srv.url}/v2/")  # the fifth
        assert r.status_code == 503
        assert error_code(r) == "UNAVAILABLE" and "too many connections" in r.text
        assert r.headers["Retry-After"] == "1" and r.headers["Connection"] == "close"
        assert "http.max_connections is 4" in srv.log()
        for sock in held[:2]:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{srv.url}/v2/").status_code == 200
        for sock in held[2:]:
            sock.close()


def proc_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def test_the_open_files_limit_is_raised_and_bounds_the_cap() -> None:
    if not Path("/usr/bin/prlimit").exists():
        pytest.skip("prlimit (util-linux) is not installed")
    with serving({}, wrap=["prlimit", "--nofile=256:400", "--"]) as srv:
        assert srv.proc is not None
        assert proc_limits(srv.proc.pid) == (400, 400)
        assert "open-files limit raised from 256 to 400" in srv.log()
        assert "capping at 336" in srv.log()
        # The lowered cap is the one enforced.
        held = [connect(srv) for _ in range(336)]
        time.sleep(1)
        r = httpx.get(f"{srv.url}/v2/")
        assert r.status_code == 503 and error_code(r) == "UNAVAILABLE"
        for sock in held:
            sock.close()
        time.sleep(0.5)
        assert httpx.get(f"{srv.url}/v2/").status_code == 200
