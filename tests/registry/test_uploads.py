"""Upload sessions: chunked and streamed PATCH, status, PUT verification, cancel, resume."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, error_code, sha256


def start(client: httpx.Client, repo: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-0"
    assert r.headers["Docker-Upload-UUID"]
    return str(r.headers["Location"])


def patch(client: httpx.Client, location: str, data: bytes, start_at: int | None) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if start_at is not None:
        headers["Content-Range"] = f"{start_at}-{start_at + len(data) - 1}"
    return client.patch(location, content=data, headers=headers)


def test_chunked_upload(client: httpx.Client, repo: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    loc = start(client, repo)
    chunk = 1024 * 1024
    for offset in range(0, len(data), chunk):
        r = patch(client, loc, data[offset : offset + chunk], offset)
        assert r.status_code == 202, r.text
        end = min(offset + chunk, len(data)) - 1
        assert r.headers["Range"] == f"0-{end}"
        loc = r.headers["Location"]
    status = client.get(loc)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(data) - 1}"
    digest = sha256(data)
    r = client.put(loc, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
    # The session is gone once committed.
    assert client.get(loc).status_code == 404


def test_streamed_patch_and_final_chunk_in_put(client: httpx.Client, repo: str) -> None:
    data = os.urandom(2_000_000)
    loc = start(client, repo)

    def body() -> object:
        for i in range(0, 1_500_000, 100_000):
            yield data[i : i + 100_000]

    r = client.patch(loc, content=body())  # chunked transfer encoding, no Content-Range
    assert r.status_code == 202
    assert r.headers["Range"] == "0-1499999"
    r = client.put(r.headers["Location"], params={"digest": sha256(data)}, content=data[1_500_000:])
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_out_of_order_and_overlapping_chunks(client: httpx.Client, repo: str) -> None:
    loc = start(client, repo)
    assert patch(client, loc, b"a" * 100, 0).status_code == 202
    gap = patch(client, loc, b"b" * 10, 150)
    assert gap.status_code == 416 and error_code(gap) == "RANGE_INVALID"
    assert gap.headers["Range"] == "0-99"
    overlap = patch(client, loc, b"c" * 10, 50)
    assert overlap.status_code == 416
    # The session is intact and continues at the right offset.
    assert patch(client, loc, b"d" * 10, 100).status_code == 202
    r = client.put(loc, params={"digest": sha256(b"a" * 100 + b"d" * 10)})
    assert r.status_code == 201, r.text


def test_wrong_digest_is_refused_and_nothing_visible(client: httpx.Client, repo: str) -> None:
    data = os.urandom(5000)
    loc = start(client, repo)
    assert patch(client, loc, data, 0).status_code == 202
    wrong = sha256(b"something else")
    r = client.put(loc, params={"digest": wrong})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
    # Monolithic, too.
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404


def test_cancel_upload(client: httpx.Client, repo: str) -> None:
    loc = start(client, repo)
    assert patch(client, loc, b"x" * 10, 0).status_code == 202
    assert client.delete(loc).status_code == 204
    r = client.get(loc)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    assert client.put(loc, params={"digest": sha256(b"x" * 10)}).status_code == 404


def test_upload_is_bound_to_its_repository(client: httpx.Client, repo: str) -> None:
    loc = start(client, repo)
    upload_id = loc.rsplit("/", 1)[1]
    r = client.patch(f"/v2/{repo}-elsewhere/blobs/uploads/{upload_id}", content=b"x")
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_sha512_digest(client: httpx.Client, repo: str) -> None:
    data = os.urandom(70_000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    loc = start(client, repo)
    assert patch(client, loc, data, 0).status_code == 202
    r = client.put(loc, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
    r = client.post(f"/v2/{repo}-m/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201


def test_concurrent_pushes_of_the_same_blob(
    client: httpx.Client, server: MoorageServer, repo: str
) -> None:
    data = os.urandom(1_000_000)
    digest = sha256(data)

    def push(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            loc = r.headers["Location"]
            r = c.patch(loc, content=data)
            return c.put(r.headers["Location"], params={"digest": digest}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(push, range(16)))
    assert codes == [201] * 16
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


@pytest.fixture
def own_server(backend: tuple[str, str | None]) -> object:
    with tempfile.TemporaryDirectory(prefix="moorage-restart-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data",
            database_url=backend[1],
            env={"MOORAGE_REGISTRY_UPLOAD_LEASE_SECONDS": "2"},
            extra_args=["--no-auth"],
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


def test_upload_survives_server_restart(own_server: MoorageServer) -> None:
    data = os.urandom(2_500_000)
    repo = "restart/app"
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = start(c, repo)
        assert patch(c, loc, data[:1_000_000], 0).status_code == 202
    own_server.restart()
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        status = c.get(loc)
        assert status.status_code == 204 and status.headers["Range"] == "0-999999"
        assert patch(c, loc, data[1_000_000:], 1_000_000).status_code == 202
        r = c.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_killed_server_leaves_nothing_partial(own_server: MoorageServer) -> None:
    """SIGKILL mid-PATCH: the session resumes from its last saved offset; no blob appears."""
    import signal
    import socket
    import time

    repo = "crash/app"
    data = os.urandom(4_000_000)
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        loc = start(c, repo)
        assert patch(c, loc, data[:1_000_000], 0).status_code == 202
    # Send half of the next chunk by hand, then kill the server before it finishes.
    path = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
    sock = socket.create_connection(("127.0.0.1", own_server.port))
    sock.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Range: 1000000-3999999\r\n"
        f"Content-Length: 3000000\r\n\r\n".encode()
        + data[1_000_000:2_500_000]
    )
    time.sleep(0.5)
    own_server.stop(signal.SIGKILL)
    sock.close()
    own_server.start()
    with httpx.Client(base_url=own_server.url, timeout=60) as c:
        assert c.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
        status = c.get(loc)
        assert status.status_code == 204
        size = int(status.headers["Range"].split("-")[1]) + 1
        assert size == 1_000_000  # the interrupted request was never recorded
        # Lease of the dead request may still be held: wait for it to expire, then resume.
        deadline = time.monotonic() + 60
        while True:
            r = patch(c, loc, data[size:], size)
            if r.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert r.status_code == 202, r.text
        r = c.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
