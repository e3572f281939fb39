"""The race test: 20 concurrent pushers reuse a pool of layers and overwrite a few tags while
the server's GC pass runs every second with a zero grace window (and no untagged delay or
time-machine window). Pushers behave as clients do: HEAD a blob, upload it only when missing,
then PUT the manifest — and push again when the registry says a blob went missing meanwhile
(MANIFEST_BLOB_UNKNOWN), the answer the HEAD → GC → PUT race must give instead of storing a
manifest that names a deleted blob.

Afterwards every tag pulls with every blob intact, and the store holds exactly the blobs the
tagged manifests reference (nothing unreferenced is left behind)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from ..conftest import MoorageServer, sha256
from .conftest import cli, gc_server, stored_blobs

PUSHERS = 20
ROUNDS = 6
REPOS = ("race/a", "race/b")
TAGS = ("t0", "t1", "t2", "t3")
RETRYABLE = {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "UNAVAILABLE", "TOOMANYREQUESTS"}


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def racing_gc(
    request: pytest.FixtureRequest, backend: tuple[str, str | None]
) -> Iterator[tuple[MoorageServer, Callable[[], set[str]]]]:
    """The server, and how to list the digests whose bytes are in its store."""
    env = {"MOORAGE_GC_INTERVAL_SECONDS": "1"}
    if request.param == "s3":
        s3 = request.getfixturevalue("moto")
        bucket = s3.create_bucket(f"gc-{uuid.uuid4().hex[:12]}")
        env.update(s3.env(bucket))

        def listed() -> set[str]:
            out: set[str] = set()
            pages = s3.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=bucket, Prefix="blobs/"):
                for obj in page.get("Contents", []):
                    _, alg, _, hex_ = obj["Key"].split("/")
                    out.add(f"{alg}:{hex_}")
            return out

        with gc_server(backend, **env) as srv:
            yield srv, listed
    else:
        with gc_server(backend, **env) as srv:
            yield srv, lambda: stored_blobs(srv)


class Retry(Exception):
    """The registry answered 503: push again."""


class Pusher:
    def __init__(self, url: str, pool: list[bytes], seed: int) -> None:
        self.client = httpx.Client(base_url=url, timeout=120)
        self.pool = pool
        self.rng = random.Random(seed)
        self.pushed = 0
        self.retries = 0
        self.errors: list[str] = []
        self.uploaded: set[str] = set()

    def ensure_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        if self.client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        r = self.client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        if r.status_code == 503:  # e.g. collected while uploaded: clients retry a 503
            raise Retry(r.text[:200])
        if r.status_code != 201:
            raise RuntimeError(f"upload {r.status_code} {r.text[:200]}")
        self.uploaded.add(digest)
        return digest

    def push_once(self, repo: str, tag: str) -> bool:
        layers = [*self.rng.sample(self.pool, 2), os.urandom(256)]
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": self.rng.random()})
        try:
            cfg = self.ensure_blob(repo, config.encode())
            digests = [self.ensure_blob(repo, layer) for layer in layers]
        except Retry:
            return False
        except RuntimeError as exc:
            self.errors.append(str(exc))
            return False
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cfg,
                "size": len(config.encode()),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d,
                    "size": len(data),
                }
                for d, data in zip(digests, layers, strict=True)
            ],
        }
        r = self.client.put(
            f"/v2/{repo}/manifests/{tag}",
            content=json.dumps(doc).encode(),
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        if r.status_code == 201:
            return True
        try:
            code = r.json()["errors"][0]["code"]
        except (ValueError, KeyError, IndexError):
            code = f"HTTP {r.status_code}"
        if code not in RETRYABLE:
            self.errors.append(f"manifest PUT {r.status_code}: {r.text[:300]}")
        return False

    def run(self) -> None:
        try:
            for _ in range(ROUNDS):
                repo, tag = self.rng.choice(REPOS), self.rng.choice(TAGS)
                for _attempt in range(10):
                    if self.push_once(repo, tag):
                        self.pushed += 1
                        break
                    self.retries += 1
                    time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))
        finally:
            self.client.close()


def test_pushes_race_gc_with_zero_grace(
    racing_gc: tuple[MoorageServer, Callable[[], set[str]]],
) -> None:
    server, listing = racing_gc
    rng = random.Random(15)
    pool = [rng.randbytes(512) for _ in range(6)]
    pushers = [Pusher(server.url, pool, seed) for seed in range(PUSHERS)]
    threads = [threading.Thread(target=p.run) for p in pushers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [e for p in pushers for e in p.errors]
    assert not errors, errors[:5]
    assert sum(p.pushed for p in pushers) == PUSHERS * ROUNDS

    # Quiesce: two manual passes (the first may cascade manifests → blobs into the second).
    for _ in range(2):
        r = cli(server, "gc", "run")
        assert r.returncode == 0, r.stderr

    referenced: set[str] = set()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for repo in REPOS:
            tags = c.get(f"/v2/{repo}/tags/list").json()["tags"] or []
            assert tags
            for tag in tags:
                m = c.get(
                    f"/v2/{repo}/manifests/{tag}",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                )
                assert m.status_code == 200, (repo, tag, m.text)
                doc = m.json()
                for d in [doc["config"]["digest"], *(x["digest"] for x in doc["layers"])]:
                    blob = c.get(f"/v2/{repo}/blobs/{d}")
                    assert blob.status_code == 200, (repo, tag, d)
                    assert sha256(blob.content) == d
                    referenced.add(d)
    stored = listing()
    assert stored == referenced  # every referenced blob there, nothing unreferenced left
    uploaded = set().union(*(p.uploaded for p in pushers))
    assert len(uploaded - stored) > PUSHERS  # GC did collect while the pushes ran
