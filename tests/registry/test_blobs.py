"""Blobs: push, HEAD/GET with ranges, DELETE, and the repository boundary."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import error_code, push_blob, sha256


def test_version_check(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_push_then_head_and_get(client: httpx.Client, repo: str) -> None:
    data = os.urandom(300_000)
    digest = push_blob(client, repo, data)
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest
    get = client.get(f"/v2/{repo}/blobs/{digest}")
    assert get.status_code == 200 and get.content == data
    assert get.headers["Docker-Content-Digest"] == digest


def test_range_requests(client: httpx.Client, repo: str) -> None:
    data = bytes(range(256)) * 40
    digest = push_blob(client, repo, data)
    url = f"/v2/{repo}/blobs/{digest}"
    r = client.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = client.get(url, headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = client.get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = client.get(url, headers={"Range": "bytes=0-999999"})  # end clamped to the size
    assert r.status_code == 206 and r.content == data
    r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_unknown_blob(client: httpx.Client, repo: str) -> None:
    digest = sha256(b"never pushed " + os.urandom(8))
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_blob_is_stored_once_across_repositories(
    client: httpx.Client, repo: str, server: object
) -> None:
    if server.env.get("MOORAGE_STORAGE_DRIVER") == "s3":  # type: ignore[attr-defined]
        pytest.skip("looks at the filesystem layout (S3's: tests/storage/test_s3_registry.py)")
    data = os.urandom(50_000)
    digest = push_blob(client, repo, data)
    push_blob(client, repo + "-twin", data)
    hex_ = digest.split(":")[1]
    root = server.data_dir / "storage" / "blobs" / "sha256" / hex_[:2]  # type: ignore[attr-defined]
    assert [p.name for p in root.iterdir() if p.name == hex_] == [hex_]
    assert client.get(f"/v2/{repo}-twin/blobs/{digest}").content == data


def test_repository_boundary(client: httpx.Client, repo: str) -> None:
    """A blob pushed to A is invisible through B: GET, HEAD, manifest reference and mount."""
    data = os.urandom(10_000)
    digest = push_blob(client, repo, data)
    other = repo + "-other"
    push_blob(client, other, b"make the other repository exist")
    assert client.head(f"/v2/{other}/blobs/{digest}").status_code == 404
    assert client.get(f"/v2/{other}/blobs/{digest}").status_code == 404
    # A manifest in B may not reference A's blob.
    config = b"{}"
    cfg_digest = push_blob(client, other, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cfg_digest,
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": len(data),
            }
        ],
    }
    r = client.put(
        f"/v2/{other}/manifests/x",
        json=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    # Mount from a repository that does not hold it: an ordinary upload, not a link.
    third = repo + "-third"
    r = client.post(f"/v2/{third}/blobs/uploads/", params={"mount": digest, "from": other})
    assert r.status_code == 202
    assert client.head(f"/v2/{third}/blobs/{digest}").status_code == 404


def test_cross_repository_mount(client: httpx.Client, repo: str) -> None:
    data = os.urandom(10_000)
    digest = push_blob(client, repo, data)
    target = repo + "-mounted"
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert r.status_code == 201
    assert r.headers["Location"].endswith(f"/v2/{target}/blobs/{digest}")
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/{target}/blobs/{digest}").content == data


def test_delete_blob_unlinks_it(client: httpx.Client, repo: str) -> None:
    data = os.urandom(1000)
    digest = push_blob(client, repo, data)
    push_blob(client, repo + "-keep", data)
    r = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 404
    # Still readable where it is linked.
    assert client.get(f"/v2/{repo}-keep/blobs/{digest}").content == data


def test_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"")
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200 and r.content == b""
