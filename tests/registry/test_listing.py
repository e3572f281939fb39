"""Tags list and catalog: lexical order, n/last pagination, Link headers; referrers API."""

from __future__ import annotations

import json
import os
import re

import httpx

from tests.conftest import error_code, image_manifest, push_blob, put_manifest, sha256


def test_tags_pagination(client: httpx.Client, repo: str) -> None:
    payload = image_manifest(client, repo)
    names = ["b", "a", "c10", "c2", "Z", "latest", "v1.0"]
    for name in names:
        assert put_manifest(client, repo, name, payload).status_code == 201
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.json() == {"name": repo, "tags": sorted(names)}
    seen: list[str] = []
    url: str | None = f"/v2/{repo}/tags/list?n=3"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        seen += r.json()["tags"]
        link = r.headers.get("Link")
        url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    assert seen == sorted(names)
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c10", "c2"]
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 0})
    assert r.json()["tags"] == []


def test_tags_of_unknown_repository(client: httpx.Client) -> None:
    r = client.get("/v2/no/such/repo/tags/list")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


def test_catalog_pagination(client: httpx.Client, repo: str) -> None:
    mine = [f"{repo}/{x}" for x in ("c", "a", "b")]
    for name in mine:
        put_manifest(client, name, "t", image_manifest(client, name))
    all_repos: list[str] = []
    url: str | None = "/v2/_catalog?n=2"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        page = r.json()["repositories"]
        assert len(page) <= 2
        all_repos += page
        link = r.headers.get("Link")
        url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    assert all_repos == sorted(all_repos)
    assert [n for n in all_repos if n.startswith(repo + "/")] == sorted(mine)
    # A repository with only blobs (no manifest) is not listed.
    push_blob(client, repo + "-blobonly", b"x")
    assert repo + "-blobonly" not in client.get("/v2/_catalog").json()["repositories"]


def test_referrers(client: httpx.Client, repo: str) -> None:
    subject = image_manifest(client, repo)
    assert put_manifest(client, repo, "app", subject).status_code == 201
    subject_desc = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(subject),
        "size": len(subject),
    }
    empty = push_blob(client, repo, b"{}")
    referrers = {}
    for kind in ("application/vnd.example.sbom", "application/vnd.example.signature"):
        body = os.urandom(100)
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": kind,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": empty,
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": push_blob(client, repo, body),
                    "size": 100,
                }
            ],
            "subject": subject_desc,
            "annotations": {"kind": kind},
        }
        payload = json.dumps(doc).encode()
        r = put_manifest(client, repo, sha256(payload), payload)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == sha256(subject)
        referrers[kind] = payload
    r = client.get(f"/v2/{repo}/referrers/{sha256(subject)}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    index = r.json()
    assert (
        index["schemaVersion"] == 2
        and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    )
    got = {d["digest"]: d for d in index["manifests"]}
    for kind, payload in referrers.items():
        d = got[sha256(payload)]
        assert d["artifactType"] == kind and d["size"] == len(payload)
        assert d["annotations"] == {"kind": kind}
    r = client.get(
        f"/v2/{repo}/referrers/{sha256(subject)}",
        params={"artifactType": "application/vnd.example.sbom"},
    )
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [
        sha256(referrers["application/vnd.example.sbom"])
    ]
    # Unknown subject: an empty index, not an error.
    r = client.get(f"/v2/{repo}/referrers/{sha256(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []


def test_referrer_may_be_pushed_before_its_subject(client: httpx.Client, repo: str) -> None:
    empty = push_blob(client, repo, b"{}")
    ghost = sha256(b"subject pushed later")
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.example.config", "digest": empty, "size": 2},
        "layers": [],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": ghost,
            "size": 20,
        },
    }
    payload = json.dumps(doc).encode()
    r = put_manifest(client, repo, sha256(payload), payload)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == ghost
    r = client.get(f"/v2/{repo}/referrers/{ghost}")
    # artifactType falls back to the config media type.
    assert r.json()["manifests"][0]["artifactType"] == "application/vnd.example.config"


def test_no_referrers_is_still_an_oci_index(client: httpx.Client, repo: str) -> None:
    """distribution-spec: a subject without referrers (or one not pushed yet) answers 200 with
    an empty image index, Content-Type application/vnd.oci.image.index.v1+json (issue 9)."""
    payload = image_manifest(client, repo)
    assert put_manifest(client, repo, "v1", payload).status_code == 201
    for subject, params in [
        (sha256(payload), {}),
        (sha256(payload), {"artifactType": "application/vnd.example.none"}),
        (sha256(b"never pushed"), {}),
    ]:
        r = client.get(f"/v2/{repo}/referrers/{subject}", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
        assert r.json() == {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [],
        }
