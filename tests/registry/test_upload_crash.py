"""Uploads after a crash (issue 10): a restarted node frees its earlier incarnation's leases, a
lease held by a live request answers 429 with Retry-After (416 is for a wrong range only), and a
session has one truth (its data gone → unknown to GET, PATCH and PUT alike).

Real servers (``moorage serve``), SIGKILL, raw sockets; SQLite and PostgreSQL. The lease time is
left at its default (15 s): before the fix the first PATCH after a restart answered 416.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, error_code, sha256


@pytest.fixture
def own_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-crash-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", database_url=backend[1], extra_args=["--no-auth"]
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


def _start(c: httpx.Client, repo: str) -> str:
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return str(r.headers["Location"])


def _patch(c: httpx.Client, loc: str, data: bytes, at: int) -> httpx.Response:
    return c.patch(loc, content=data, headers={"Content-Range": f"{at}-{at + len(data) - 1}"})


def _half_patch(srv: MoorageServer, loc: str, data: bytes, at: int, declared: int) -> socket.socket:
    """A PATCH whose body stops half-way: the server holds the session's lease while it waits
    for the rest. Returns the open socket."""
    path = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Range: {at}-{at + declared - 1}\r\n"
        f"Content-Length: {declared}\r\n\r\n".encode()
        + data
    )
    return sock


def _wait_leased(c: httpx.Client, loc: str, size: int) -> None:
    """Until the half-sent PATCH holds the lease: a probe PATCH with a wrong range is then
    refused as busy (429; releases before the fix said 416 "another request is writing")
    rather than for its range."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = _patch(c, loc, b"z", size + 10_000_000)
        if r.status_code == 429 or "another request" in r.text:
            return
        assert r.status_code == 416, r.text
        time.sleep(0.05)
    raise AssertionError("the half-sent PATCH never took the lease")


def test_patch_after_sigkill_and_restart_resumes_at_once(own_server: MoorageServer) -> None:
    repo = "crash/resume"
    data = os.urandom(3_000_000)
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = _start(c, repo)
        assert _patch(c, loc, data[:1_000_000], 0).status_code == 202
        sock = _half_patch(own_server, loc, data[1_000_000:1_500_000], 1_000_000, 2_000_000)
        try:
            _wait_leased(c, loc, 1_000_000)
            own_server.stop(signal.SIGKILL)
        finally:
            sock.close()
    own_server.start()
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        status = c.get(loc)
        assert status.status_code == 204 and status.headers["Range"] == "0-999999"
        # The dead incarnation's lease was freed at start: no 416, no waiting 15 s.
        r = _patch(c, loc, data[1_000_000:], 1_000_000)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{len(data) - 1}"
        r = c.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    assert "released 1 upload lease(s) left by an earlier run" in own_server.log()


def test_a_live_lease_answers_429_with_retry_after(own_server: MoorageServer) -> None:
    repo = "crash/busy"
    data = os.urandom(600_000)
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = _start(c, repo)
        assert _patch(c, loc, data[:100_000], 0).status_code == 202
        sock = _half_patch(own_server, loc, data[100_000:300_000], 100_000, 500_000)
        try:
            _wait_leased(c, loc, 100_000)
            busy = _patch(c, loc, data[100_000:], 100_000)
            assert busy.status_code == 429, busy.text
            assert error_code(busy) == "TOOMANYREQUESTS"
            assert 1 <= int(busy.headers["Retry-After"]) <= 15
            # Status needs no lease: it waits a moment for the live request, then answers the
            # saved offset.
            assert c.get(loc).headers["Range"] == "0-99999"
            sock.sendall(data[300_000:])  # the live request finishes
            reply = sock.recv(65536).decode(errors="replace")
            assert reply.startswith("HTTP/1.1 202"), reply
        finally:
            sock.close()
        # Free again: a wrong range is a 416 (and only that is).
        wrong = _patch(c, loc, b"x", 5)
        assert wrong.status_code == 416 and error_code(wrong) == "RANGE_INVALID"
        r = c.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text


def test_status_after_a_cut_answers_the_offset_the_cut_request_saved(
    own_server: MoorageServer,
) -> None:
    """A client whose PATCH broke mid-body asks at once where the session stands. The server
    may still be finishing the broken request (saving what arrived); the status waits for it,
    so the client goes on from the right offset (before: the old offset, then a 416 on the next
    PATCH and a second resume — tests/replication/test_faults.py under load)."""
    repo = "crash/cut"
    first, sent, declared = 100_000, 3 * 1024 * 1024, 8 * 1024 * 1024
    data = os.urandom(first + declared)
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = _start(c, repo)
        assert _patch(c, loc, data[:first], 0).status_code == 202
        sock = _half_patch(own_server, loc, data[first : first + sent], first, declared)
        try:
            _wait_leased(c, loc, first)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                status = pool.submit(c.get, loc)
                time.sleep(0.3)  # the status request is waiting on the live request's lease
                assert not status.done()
                sock.close()  # the cut
                r = status.result(30)
        finally:
            sock.close()
        assert r.status_code == 204, r.text
        start, end = (int(x) for x in r.headers["Range"].split("-"))
        # What arrived before the cut was kept (whole pipeline chunks of it), and said so.
        assert start == 0 and first <= end < first + sent, r.headers["Range"]
        assert _patch(c, loc, data[end + 1 :], end + 1).status_code == 202
        r = c.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text


def test_a_session_whose_data_is_gone_is_unknown_everywhere(own_server: MoorageServer) -> None:
    """What a crash between a commit's move of the bytes and its database write leaves (and
    a purge racing a request): one truth — GET, PATCH and PUT all answer 404."""
    repo = "crash/gone"
    data = os.urandom(50_000)
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = _start(c, repo)
        assert _patch(c, loc, data, 0).status_code == 202
        upload_id = loc.rsplit("/", 1)[1]
        shutil.rmtree(own_server.data_dir / "storage" / "uploads" / upload_id)
        for r in (
            c.get(loc),
            _patch(c, loc, b"more", len(data)),
            c.put(loc, params={"digest": sha256(data)}),
        ):
            assert r.status_code == 404, r.text
            assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"
        assert c.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
        # A fresh push of the same bytes works.
        loc = _start(c, repo)
        assert c.put(loc, params={"digest": sha256(data)}, content=data).status_code == 201


def test_cancel_frees_the_bytes_while_a_request_holds_the_lease(
    own_server: MoorageServer,
) -> None:
    repo = "crash/cancel"
    data = os.urandom(400_000)
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = _start(c, repo)
        upload_dir = own_server.data_dir / "storage" / "uploads" / loc.rsplit("/", 1)[1]
        assert _patch(c, loc, data[:100_000], 0).status_code == 202
        sock = _half_patch(own_server, loc, data[100_000:200_000], 100_000, 300_000)
        try:
            _wait_leased(c, loc, 100_000)
            r = c.delete(loc)
            assert r.status_code == 204, r.text
            assert not upload_dir.exists()
            assert c.get(loc).status_code == 404
            sock.sendall(data[200_000:])
            reply = sock.recv(65536).decode(errors="replace")
            assert reply.startswith("HTTP/1.1 4"), reply  # the cancelled session is gone
        finally:
            sock.close()
        assert not upload_dir.exists()
