"""Manifests: push/pull by tag and digest, media types, validation, negotiation, delete."""

from __future__ import annotations

import hashlib
import json
import os

import httpx

from tests.conftest import error_code, image_manifest, push_blob, put_manifest, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def test_push_and_pull_by_tag_and_digest(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo, [os.urandom(500), os.urandom(700)])
    r = put_manifest(client, repo, "v1", payload)
    assert r.status_code == 201, r.text
    digest = sha256(payload)
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{digest}")
    for ref in ("v1", digest):
        got = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200
        assert got.content == payload  # byte for byte, never re-serialized
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == digest
        head = client.head(f"/v2/{repo}/manifests/{ref}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(payload))
        assert head.headers["Docker-Content-Digest"] == digest
        assert head.headers["Content-Type"] == OCI_MANIFEST


def test_push_by_digest_verifies_it(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo)
    r = put_manifest(client, repo, sha256(payload), payload)
    assert r.status_code == 201
    wrong = sha256(payload + b" ")
    r = put_manifest(client, repo, wrong, payload)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    sha512 = "sha512:" + hashlib.sha512(payload).hexdigest()
    r = put_manifest(client, repo, sha512, payload)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha512
    assert client.get(f"/v2/{repo}/manifests/{sha512}").content == payload


def test_docker_schema2_and_manifest_list(client: httpx.Client, repo: str) -> None:
    children = []
    for arch in ("amd64", "arm64"):
        cfg = json.dumps({"architecture": arch, "os": "linux"}).encode()
        layer = os.urandom(300)
        doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": push_blob(client, repo, cfg),
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": push_blob(client, repo, layer),
                    "size": len(layer),
                }
            ],
        }
        payload = json.dumps(doc).encode()
        assert (
            put_manifest(client, repo, sha256(payload), payload, DOCKER_MANIFEST).status_code == 201
        )
        children.append((arch, payload))
    index = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": sha256(p),
                "size": len(p),
                "platform": {"os": "linux", "architecture": a},
            }
            for a, p in children
        ],
    }
    payload = json.dumps(index).encode()
    r = put_manifest(client, repo, "multi", payload, DOCKER_LIST)
    assert r.status_code == 201, r.text
    got = client.get(
        f"/v2/{repo}/manifests/multi", headers={"Accept": f"{DOCKER_LIST}, {DOCKER_MANIFEST}"}
    )
    assert got.headers["Content-Type"] == DOCKER_LIST and got.content == payload
    # A client that cannot read a list gets the linux/amd64 image (Distribution's behaviour).
    got = client.get(f"/v2/{repo}/manifests/multi", headers={"Accept": DOCKER_MANIFEST})
    assert got.status_code == 200 and got.content == children[0][1]
    assert got.headers["Docker-Content-Digest"] == sha256(children[0][1])
    # By digest the content is pinned: served as stored.
    got = client.get(f"/v2/{repo}/manifests/{sha256(payload)}", headers={"Accept": DOCKER_MANIFEST})
    assert got.content == payload


def test_oci_index_requires_children_in_the_repository(client: httpx.Client, repo: str) -> None:
    child = image_manifest(client, repo)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(child), "size": len(child)}],
    }
    payload = json.dumps(index).encode()
    r = put_manifest(client, repo, "idx", payload, OCI_INDEX)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert put_manifest(client, repo, sha256(child), child).status_code == 201
    assert put_manifest(client, repo, "idx", payload, OCI_INDEX).status_code == 201


def test_missing_blob_is_refused(client: httpx.Client, repo: str) -> None:
    cfg = b"{}"
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(client, repo, cfg),
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha256(b"missing"),
                "size": 7,
            }
        ],
    }
    r = put_manifest(client, repo, "x", json.dumps(doc).encode())
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert client.get(f"/v2/{repo}/manifests/x").status_code == 404


def test_descriptor_size_must_match(client: httpx.Client, repo: str) -> None:
    cfg = b"{}"
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(client, repo, cfg),
            "size": 3,
        },
        "layers": [],
    }
    r = put_manifest(client, repo, "x", json.dumps(doc).encode())
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"


def test_artifact_manifest_with_any_types(client: httpx.Client, repo: str) -> None:
    """Helm charts, SBOMs, signatures: an image manifest with artifactType / config type."""
    empty = push_blob(client, repo, b"{}")
    chart = os.urandom(2000)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.cncf.helm.chart.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [
            {
                "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                "digest": push_blob(client, repo, chart),
                "size": len(chart),
            }
        ],
        "annotations": {"org.opencontainers.image.title": "chart"},
    }
    payload = json.dumps(doc).encode()
    assert put_manifest(client, repo, "0.1.0", payload).status_code == 201
    helm_cfg = b'{"name":"mychart","version":"0.1.0"}'
    doc2 = {
        "schemaVersion": 2,
        "config": {
            "mediaType": "application/vnd.cncf.helm.config.v1+json",
            "digest": push_blob(client, repo, helm_cfg),
            "size": len(helm_cfg),
        },
        "layers": [
            {
                "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                "digest": push_blob(client, repo, chart),
                "size": len(chart),
            }
        ],
    }
    payload2 = json.dumps(doc2).encode()  # no mediaType field: allowed for OCI
    assert put_manifest(client, repo, "0.2.0", payload2).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/0.2.0").content == payload2


def test_schema1_is_refused(client: httpx.Client, repo: str) -> None:
    doc = {"schemaVersion": 1, "name": repo, "tag": "x", "fsLayers": [], "history": []}
    r = put_manifest(
        client,
        repo,
        "x",
        json.dumps(doc).encode(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    assert "schema 1" in r.json()["errors"][0]["message"]


def test_size_limit(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo, annotations={"pad": "x" * (4 * 1024 * 1024)})
    r = put_manifest(client, repo, "big", payload)
    assert r.status_code == 413 and error_code(r) == "SIZE_INVALID"


def test_tag_moves_and_delete(client: httpx.Client, repo: str) -> None:
    first = image_manifest(client, repo)
    second = image_manifest(client, repo)
    assert put_manifest(client, repo, "latest", first).status_code == 201
    assert put_manifest(client, repo, "latest", second).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/latest").content == second
    assert client.get(f"/v2/{repo}/manifests/{sha256(first)}").content == first
    # Deleting a tag leaves the manifest.
    assert put_manifest(client, repo, "other", second).status_code == 201
    assert client.delete(f"/v2/{repo}/manifests/other").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/other").status_code == 404
    # Deleting by digest removes the manifest and the tags pointing to it.
    assert client.delete(f"/v2/{repo}/manifests/{sha256(second)}").status_code == 202
    r = client.get(f"/v2/{repo}/manifests/latest")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert client.get(f"/v2/{repo}/manifests/{sha256(second)}").status_code == 404
    assert client.delete(f"/v2/{repo}/manifests/{sha256(second)}").status_code == 404


def test_oci_manifest_not_acceptable_by_tag(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo)
    put_manifest(client, repo, "t", payload)
    r = client.get(f"/v2/{repo}/manifests/t", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = client.get(f"/v2/{repo}/manifests/t", headers={"Accept": "*/*"})
    assert r.status_code == 200


def test_manifest_is_readable_as_blob(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo)
    put_manifest(client, repo, "t", payload)
    r = client.get(f"/v2/{repo}/blobs/{sha256(payload)}")
    assert r.status_code == 200 and r.content == payload


def test_concurrent_pushes_of_one_tag_end_consistent(
    client: httpx.Client, repo: str, server: object
) -> None:
    import concurrent.futures

    payloads = [image_manifest(client, repo) for _ in range(6)]

    def push(p: bytes) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:  # type: ignore[attr-defined]
            return put_manifest(c, repo, "race", p).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(push, payloads * 3))
    assert codes == [201] * 18
    got = client.get(f"/v2/{repo}/manifests/race")
    assert got.status_code == 200 and got.content in payloads
    assert got.headers["Docker-Content-Digest"] == sha256(got.content)


def test_invalid_reference_is_an_unknown_manifest(client: httpx.Client, repo: str) -> None:
    """A reference that is neither a tag nor a digest names a manifest that cannot exist:
    GET, HEAD and DELETE answer 404 MANIFEST_UNKNOWN (as Distribution and the conformance suite
    expect); only PUT refuses it as TAG_INVALID."""
    payload = image_manifest(client, repo)
    assert put_manifest(client, repo, "v1", payload).status_code == 201
    for ref in (".INVALID_MANIFEST_NAME", "sha256:nothex", "-x"):
        for method in ("GET", "DELETE"):
            r = client.request(method, f"/v2/{repo}/manifests/{ref}")
            assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN", (method, r.text)
        r = client.head(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404 and r.content == b""
    r = put_manifest(client, repo, ".INVALID_MANIFEST_NAME", payload)
    assert r.status_code == 400 and error_code(r) == "TAG_INVALID"
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


def test_push_by_digest_with_tags_keeps_a_sha512_digest(client: httpx.Client, repo: str) -> None:
    """distribution-spec: PUT /v2/<name>/manifests/<digest>?tag=a&tag=b stores the manifest
    and points each tag at it, answering one OCI-Tag header per tag. A sha512 digest is kept:
    every later answer for it, by tag or by digest, carries sha512 (issue 9)."""
    payload = image_manifest(client, repo)
    d512 = "sha512:" + hashlib.sha512(payload).hexdigest()
    r = client.put(
        f"/v2/{repo}/manifests/{d512}",
        params=[("tag", "a"), ("tag", "b"), ("tag", "a")],
        content=payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d512
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{d512}")
    assert r.headers.get_list("OCI-Tag") == ["a", "b"]
    for ref in ("a", "b", d512):
        got = client.get(f"/v2/{repo}/manifests/{ref}")
        assert got.status_code == 200 and got.content == payload, ref
        assert got.headers["Docker-Content-Digest"] == d512, ref
        head = client.head(f"/v2/{repo}/manifests/{ref}")
        assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == d512, ref
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b"]
    # A tag moves with a later push by digest; a push by tag keeps sha256 (the canonical one).
    other = image_manifest(client, repo)
    r = put_manifest(client, repo, f"{sha256(other)}?tag=b", other)
    assert r.status_code == 201 and r.headers.get_list("OCI-Tag") == ["b"], r.text
    assert client.head(f"/v2/{repo}/manifests/b").headers["Docker-Content-Digest"] == sha256(other)
    assert client.head(f"/v2/{repo}/manifests/a").headers["Docker-Content-Digest"] == d512
    r = put_manifest(client, repo, "c", payload)
    assert r.status_code == 201 and "OCI-Tag" not in r.headers
    assert r.headers["Docker-Content-Digest"] == sha256(payload)


def test_tag_parameter_is_validated(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo)
    digest = sha256(payload)
    for params in (
        [("tag", ".bad")],
        [("tag", "ok"), ("tag", "x" * 129)],
        [("tag", f"t{i}") for i in range(101)],
    ):
        r = client.put(
            f"/v2/{repo}/manifests/{digest}",
            params=params,
            content=payload,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 400 and error_code(r) == "TAG_INVALID", r.text
    r = client.put(
        f"/v2/{repo}/manifests/v1",
        params={"tag": "v2"},
        content=payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and error_code(r) == "TAG_INVALID"
    assert client.get(f"/v2/{repo}/tags/list").json().get("tags") in ([], None)
