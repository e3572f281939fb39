"""Parallel pulls read blobs on a bounded pool of threads (issue 10, memory under parallel pulls).

The memory figures themselves are measured in bench/parallel_pulls.py (docs/benchmarks.md); this
checks the mechanism against a real server: twenty pulls at once through one worker with
``storage.filesystem.reader_threads: 2`` add at most two threads to the process (on the default
executor the reads had grown it to its maximum), and every pull gets its whole blob.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer

MiB = 1 << 20


@pytest.fixture
def reader_server() -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-readers-") as tmp:
        env = {"MOORAGE_STORAGE_FILESYSTEM_READER_THREADS": "2"}
        srv = MoorageServer(Path(tmp) / "data", extra_args=["--no-auth"], env=env).start()
        try:
            yield srv
        finally:
            srv.stop()


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_parallel_pulls_use_a_bounded_reader_pool(reader_server: MoorageServer) -> None:
    srv = reader_server
    assert srv.proc is not None
    blob = os.urandom(MiB) * 24
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/v2/pulls/big/blobs/uploads/", params={"digest": digest}, content=blob)
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/pulls/big/blobs/{digest}").content == blob  # warm: pools exist
    time.sleep(0.5)
    base = threads(srv.proc.pid)

    request = (
        f"GET /v2/pulls/big/blobs/{digest} HTTP/1.1\r\nHost: {srv.host}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(request)
        socks.append(s)
    received = [bytearray() for _ in socks]
    most = base
    open_socks = set(range(len(socks)))
    while open_socks:
        for i in list(open_socks):
            chunk = socks[i].recv(256 << 10)
            if not chunk:
                open_socks.discard(i)
                socks[i].close()
            received[i] += chunk
        most = max(most, threads(srv.proc.pid))
    assert most - base <= 2, f"{most - base} threads added for 20 parallel pulls"
    for got in received:
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == blob
