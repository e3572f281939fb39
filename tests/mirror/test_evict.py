"""Cache eviction as a job on the shared queue: images not pulled for N days, and a size cap
per cache evicting the least recently pulled first; blobs only the evicted images needed are
unlinked from the repository, the others stay."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import MoorageServer, moorage_cli
from tests.replication.peers import Distribution

from .conftest import create_cache, sql, wait_cached
from .test_clients import _push_image

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _pull(server: MoorageServer, repo: str, tag: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = json.loads(r.content)
    for d in [doc["config"]["digest"], *(x["digest"] for x in doc["layers"])]:
        assert httpx.get(f"{server.url}/v2/{repo}/blobs/{d}", timeout=30).status_code == 200
    return doc


def _age(server: MoorageServer, repo: str, digest: str, days: int) -> None:
    when = datetime.now(UTC) - timedelta(days=days)
    sql(server, "UPDATE mirror_pulls SET pulled_at = :when WHERE repository = :repo "
        "AND digest = :digest", when=when, repo=repo, digest=digest)
    assert sql(server, "SELECT pulled_at FROM mirror_pulls WHERE repository = :repo "
               "AND digest = :digest", repo=repo, digest=digest)


def _tags(server: MoorageServer, repo: str) -> list[str]:
    r = httpx.get(f"{server.url}/v2/{repo}/tags/list", timeout=10)
    return list(r.json().get("tags") or []) if r.status_code == 200 else []


def _linked(server: MoorageServer, repo: str) -> set[str]:
    rows = sql(
        server,
        "SELECT b.digest FROM repository_blobs rb JOIN blobs b ON b.id = rb.blob_id "
        "JOIN repositories r ON r.id = rb.repository_id WHERE r.name = :repo",
        repo=repo,
    )
    return {row[0] for row in rows}


def _evict(server: MoorageServer, name: str, repo: str, gone: str, kept: str) -> None:
    r = moorage_cli(server, "jobs", "run", "mirror.evict", "--payload", json.dumps({"cache": name}))
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 60
    while gone in _tags(server, repo):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert kept in _tags(server, repo)


def _blobs(doc: dict[str, Any]) -> set[str]:
    return {doc["config"]["digest"], *(x["digest"] for x in doc["layers"])}


def test_not_pulled_for_n_days_is_evicted(
    mirror: MoorageServer, upstream: Distribution, uid: str
) -> None:
    _push_image(upstream.url, f"team/e{uid}", "old")
    _push_image(upstream.url, f"team/e{uid}", "new")
    name = f"e{uid}"
    create_cache(mirror, name, upstream.url, "--evict-after-days", "7")
    repo = f"{name}/team/e{uid}"
    old, new = _pull(mirror, repo, "old"), _pull(mirror, repo, "new")
    wait_cached(mirror, repo, "old")
    wait_cached(mirror, repo, "new")
    old_digest = httpx.head(
        f"{mirror.url}/v2/{repo}/manifests/old", headers={"Accept": ACCEPT}, timeout=10
    ).headers["docker-content-digest"]
    _age(mirror, repo, old_digest, 10)
    _evict(mirror, name, repo, gone="old", kept="new")
    linked = _linked(mirror, repo)
    assert _blobs(new) <= linked
    assert not (_blobs(old) - _blobs(new)) & linked


def test_size_cap_evicts_least_recently_pulled(
    mirror: MoorageServer, upstream: Distribution, uid: str
) -> None:
    _push_image(upstream.url, f"team/s{uid}", "a")
    _push_image(upstream.url, f"team/s{uid}", "b")
    name = f"s{uid}"
    # The cap is set below what the two images hold, above what one holds (~8 KiB of layers).
    create_cache(mirror, name, upstream.url, "--max-size", "12000")
    repo = f"{name}/team/s{uid}"
    a, b = _pull(mirror, repo, "a"), _pull(mirror, repo, "b")
    wait_cached(mirror, repo, "a")
    wait_cached(mirror, repo, "b")
    a_digest = httpx.head(
        f"{mirror.url}/v2/{repo}/manifests/a", headers={"Accept": ACCEPT}, timeout=10
    ).headers["docker-content-digest"]
    _age(mirror, repo, a_digest, 1)
    _evict(mirror, name, repo, gone="a", kept="b")
    assert _blobs(b) <= _linked(mirror, repo)
    assert not (_blobs(a) - _blobs(b)) & _linked(mirror, repo)


def test_gc_leaves_untagged_cache_content_to_the_eviction(
    mirror: MoorageServer, upstream: Distribution, uid: str, monkeypatch: Any
) -> None:
    """An image pulled through a cache by digest is an untagged manifest there: GC's untagged
    delay must not remove it (the cache's eviction decides), while an untagged manifest pushed
    into an ordinary repository of the same server goes."""
    from tests.conftest import image_manifest, put_manifest, sha256

    digest = _push_image(upstream.url, f"team/g{uid}", "v1")
    name = f"g{uid}"
    create_cache(mirror, name, upstream.url)
    cached = f"{name}/team/g{uid}"
    r = httpx.get(
        f"{mirror.url}/v2/{cached}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=30
    )
    assert r.status_code == 200, r.text
    plain = f"plain{uid}/app"
    with httpx.Client(base_url=mirror.url, timeout=30) as c:
        payload = image_manifest(c, plain)
        assert put_manifest(c, plain, sha256(payload), payload).status_code == 201
    query = (
        "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id "
        "WHERE r.name = :repo"
    )
    deadline = time.monotonic() + 60
    while digest not in {row[0] for row in sql(mirror, query, repo=cached)}:
        assert time.monotonic() < deadline, mirror.log()
        time.sleep(0.2)
    monkeypatch.setenv("MOORAGE_GC_UNTAGGED_SECONDS", "0")
    monkeypatch.setenv("MOORAGE_GC_PIN_PULLED_WITHIN_SECONDS", "0")  # the keeper, not a pin
    out = moorage_cli(mirror, "gc", "run", "--grace", "0")
    assert out.returncode == 0, out.stderr
    assert sha256(payload) not in {row[0] for row in sql(mirror, query, repo=plain)}, out.stdout
    assert digest in {row[0] for row in sql(mirror, query, repo=cached)}, out.stdout
