"""The registry end to end on S3 (moto on loopback): real `moorage serve` processes.

Chunked and monolithic pushes, mounts, pulls streamed and redirected, an upload continued by a
second process, an S3 outage in the middle of a push, and skopeo copying an image in and out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.ocigen import make_image, write_layout
from tests.conftest import MoorageServer, postgres_database, sha256
from tests.registry.test_hostile import patch_chunk, start_upload
from tests.s3server import MotoServer

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Path, str]]:
    """A temp dir and a PostgreSQL database that this module's servers share."""
    with tempfile.TemporaryDirectory(prefix="moorage-s3-") as tmp, postgres_database() as url:
        yield Path(tmp), url


@pytest.fixture(scope="module")
def bucket(moto: MotoServer) -> str:
    return moto.create_bucket(f"reg-{uuid.uuid4().hex[:12]}")


def _server(
    shared: tuple[Path, str], moto: MotoServer, bucket: str, name: str, **env: str
) -> MoorageServer:
    tmp, url = shared
    return MoorageServer(
        tmp / name,
        database_url=url,
        extra_args=["--no-auth"],
        env={**moto.env(bucket, prefix="moorage"), **env},
    ).start()


@pytest.fixture(scope="module")
def node_a(shared: tuple[Path, str], moto: MotoServer, bucket: str) -> Iterator[MoorageServer]:
    srv = _server(shared, moto, bucket, "a")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def node_b(shared: tuple[Path, str], moto: MotoServer, bucket: str) -> Iterator[MoorageServer]:
    """A second process on the same database and bucket, answering blob GETs with redirects."""
    srv = _server(shared, moto, bucket, "b", MOORAGE_STORAGE_S3_REDIRECT="true")
    yield srv
    srv.stop()


@pytest.fixture
def a(node_a: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node_a.url, timeout=60) as c:
        yield c


@pytest.fixture
def b(node_b: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node_b.url, timeout=60) as c:
        yield c


def _repo() -> str:
    return f"s3/r{uuid.uuid4().hex[:10]}"


def _get(c: httpx.Client, repo: str, digest: str) -> bytes:
    r = c.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert sha256(r.content) == digest
    return r.content


def test_chunked_push_across_parts_and_pull(a: httpx.Client, moto: MotoServer, bucket: str) -> None:
    repo = _repo()
    data = os.urandom(13 * MiB + 7)
    digest = sha256(data)
    loc = start_upload(a, repo)
    pos = 0
    for size in (1, 3 * MiB, 5 * MiB, 4 * MiB):
        r = patch_chunk(a, loc, data[pos : pos + size], pos)
        assert r.status_code == 202, r.text
        pos += size
        assert r.headers["Range"] == f"0-{pos - 1}"
        loc = r.headers["Location"]
    # Nothing at the blob's key before the final PUT.
    blob_key = f"moorage/blobs/sha256/{digest[7:9]}/{digest[7:]}"
    assert "Contents" not in moto.client().list_objects_v2(Bucket=bucket, Prefix=blob_key)
    r = a.put(loc, params={"digest": digest}, content=data[pos:])
    assert r.status_code == 201, r.text
    stored = moto.client().head_object(Bucket=bucket, Key=blob_key)
    assert stored["ContentLength"] == len(data)
    assert _get(a, repo, digest) == data
    r = a.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={5 * MiB - 1}-{5 * MiB}"})
    assert r.status_code == 206 and r.content == data[5 * MiB - 1 : 5 * MiB + 1]
    # The staging objects are gone; the blob is one object.
    left = (
        moto.client().list_objects_v2(Bucket=bucket, Prefix="moorage/uploads/").get("Contents", [])
    )
    assert [o["Key"] for o in left if loc.rsplit("/", 1)[-1].split("?")[0] in o["Key"]] == []


def test_wrong_digest_makes_nothing_visible(a: httpx.Client) -> None:
    repo = _repo()
    data = os.urandom(6 * MiB)
    loc = start_upload(a, repo)
    wrong = sha256(b"something else")
    r = a.put(loc, params={"digest": wrong}, content=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert a.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert a.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_monolithic_push_and_mount(a: httpx.Client) -> None:
    repo, other = _repo(), _repo()
    for data in (os.urandom(1000), os.urandom(7 * MiB)):
        digest = sha256(data)
        r = a.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        assert _get(a, repo, digest) == data
        r = a.post(f"/v2/{other}/blobs/uploads/", params={"mount": digest, "from": repo})
        assert r.status_code == 201, r.text
        assert _get(a, other, digest) == data


def test_pull_redirects_to_a_presigned_url(a: httpx.Client, b: httpx.Client) -> None:
    repo = _repo()
    data = os.urandom(2 * MiB + 3)
    digest = sha256(data)
    assert (
        a.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).status_code
        == 201
    )
    r = b.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 307, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    location = r.headers["Location"]
    assert "X-Amz-Signature=" in location
    fetched = httpx.get(location, timeout=60)
    assert fetched.status_code == 200 and sha256(fetched.content) == digest
    # A client that follows redirects gets the bytes; HEAD stays local.
    followed = b.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
    assert followed.status_code == 200 and followed.content == data
    h = b.head(f"/v2/{repo}/blobs/{digest}")
    assert h.status_code == 200 and h.headers["Content-Length"] == str(len(data))
    # The redirect is only for blobs this repository holds.
    assert b.get(f"/v2/{_repo()}/blobs/{digest}").status_code == 404


def test_upload_started_on_one_process_finished_on_another(
    a: httpx.Client, b: httpx.Client
) -> None:
    repo = _repo()
    data = os.urandom(11 * MiB + 5)
    digest = sha256(data)
    loc = start_upload(a, repo)
    r = patch_chunk(a, loc, data[: 6 * MiB + 1], 0)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    r = patch_chunk(b, loc, data[6 * MiB + 1 : 9 * MiB], 6 * MiB + 1)
    assert r.status_code == 202, r.text
    assert b.get(loc).headers["Range"] == f"0-{9 * MiB - 1}"
    assert a.get(loc).headers["Range"] == f"0-{9 * MiB - 1}"
    r = a.put(r.headers["Location"], params={"digest": digest}, content=data[9 * MiB :])
    assert r.status_code == 201, r.text
    assert _get(a, repo, digest) == data


def test_s3_outage_mid_push_is_503_then_the_push_succeeds(
    a: httpx.Client, moto: MotoServer
) -> None:
    repo = _repo()
    data = os.urandom(14 * MiB)
    digest = sha256(data)
    loc = start_upload(a, repo)
    r = patch_chunk(a, loc, data[: 2 * MiB], 0)
    assert r.status_code == 202
    loc = r.headers["Location"]

    def body() -> Iterator[bytes]:
        for i in range(2 * MiB, 12 * MiB, MiB):
            if i == 9 * MiB:
                moto.pause()  # S3 goes away in the middle of the request body
            yield data[i : i + MiB]

    try:
        r = a.patch(loc, content=body(), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        # Reads fail the same retryable way while S3 is down.
        existing = os.urandom(100)
        assert a.get(f"/v2/{repo}/blobs/{sha256(existing)}").status_code == 404  # DB answers
    finally:
        moto.resume()
    # The session is where the last complete request left it; the client resumes from there.
    status = a.get(loc)
    assert status.status_code == 204, status.text
    done = int(status.headers["Range"].split("-")[1]) + 1
    assert done == 2 * MiB
    r = patch_chunk(a, loc, data[done:], done)
    assert r.status_code == 202, r.text
    r = a.put(r.headers["Location"], params={"digest": digest})
    assert r.status_code == 201, r.text
    assert _get(a, repo, digest) == data


def test_blob_read_during_outage_is_503(a: httpx.Client, moto: MotoServer) -> None:
    repo = _repo()
    data = os.urandom(5000)
    digest = sha256(data)
    assert (
        a.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).status_code
        == 201
    )
    moto.pause()
    try:
        r = a.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 503, r.text
        assert a.get("/readyz").status_code == 503
        assert a.head(f"/v2/{repo}/blobs/{digest}").status_code == 200  # metadata only
    finally:
        moto.resume()
    assert _get(a, repo, digest) == data


def _skopeo(tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    for d in ("home", "tmp", "run"):
        (tmp / d).mkdir(exist_ok=True)
    policy = tmp / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    conf = tmp / "registries.conf"
    conf.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp / "home"),
        "TMPDIR": str(tmp / "tmp"),
        "XDG_RUNTIME_DIR": str(tmp / "run"),
        # Keep skopeo's blob-info cache out of /var/lib/containers (no mounts from history).
        "_CONTAINERS_ROOTLESS_UID": str(os.getuid() or 1000),
        "_CONTAINERS_USERNS_CONFIGURED": "1",
    }
    argv = ["skopeo", "--registries-conf", str(conf), "--policy", str(policy), *args]
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def test_skopeo_copy_in_and_out(
    node_a: MoorageServer, node_b: MoorageServer, tmp_path: Path
) -> None:
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed")
    image = make_image(n_layers=3)
    src = write_layout(tmp_path / "src", {"v1": image})
    repo = _repo()
    _skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"oci:{src}:v1",
        f"docker://{node_a.host}/{repo}:v1",
    )
    # Out through the redirecting node: skopeo follows the 307 to S3.
    for node, name in ((node_a, "out-a"), (node_b, "out-b")):
        dst = tmp_path / name
        _skopeo(
            tmp_path,
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            f"docker://{node.host}/{repo}:v1",
            f"oci:{dst}:v1",
        )
        index: dict[str, Any] = json.loads((dst / "index.json").read_text())
        assert index["manifests"][0]["digest"] == image.digest
        for blob in [image.manifest, image.config, *image.layers]:
            path = dst / "blobs" / "sha256" / blob.digest.split(":", 1)[1]
            content = path.read_bytes()
            assert content == blob.data
            assert "sha256:" + hashlib.sha256(content).hexdigest() == blob.digest
