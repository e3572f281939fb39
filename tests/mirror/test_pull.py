"""Pull-through caches against CNCF Distribution 2.8.2 on loopback: pulls by digest and by tag,
verified single downloads, revalidation, 429s, a stalled upstream and outages, indexes (whole
and platform-filtered), refused pushes."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import httpx

from tests.clients.ocigen import make_image
from tests.conftest import MoorageServer, moorage_cli
from tests.replication.faultproxy import FaultProxy, Rule
from tests.replication.hostile import Answer, Seen, hostile_registry
from tests.replication.images import ImageSet, Pusher, build_set
from tests.replication.peers import Distribution, distribution

from .conftest import create_cache, wait_cached

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def _push(url: str, repo: str) -> ImageSet:
    images = build_set(f"example.test/{repo}")
    pusher = Pusher(url)
    try:
        pusher.push_set(repo, images)
    finally:
        pusher.close()
    return images


def _manifest(server: MoorageServer, repo: str, ref: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=60)


def _blob_sha(server: MoorageServer, repo: str, digest: str) -> str:
    h = hashlib.sha256()
    with httpx.stream("GET", f"{server.url}/v2/{repo}/blobs/{digest}", timeout=60) as r:
        assert r.status_code == 200, r.read()
        for chunk in r.iter_raw():
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _blobs_of(payload: bytes) -> list[str]:
    doc = json.loads(payload)
    return [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


def _error(r: httpx.Response) -> dict[str, str]:
    return dict(r.json()["errors"][0])


def test_pull_by_digest_fetches_verifies_and_stores_once(
    mirror: MoorageServer, proxy: FaultProxy, uid: str
) -> None:
    images = _push(proxy.url, f"lib/d{uid}")
    create_cache(mirror, f"c{uid}", proxy.url)
    repo = f"c{uid}/lib/d{uid}"
    single = images.tags["single"]
    r = _manifest(mirror, repo, single)
    assert r.status_code == 200, r.text
    assert hashlib.sha256(r.content).hexdigest() == single.split(":")[1]
    assert r.headers["docker-content-digest"] == single
    for digest in _blobs_of(r.content):
        assert _blob_sha(mirror, repo, digest) == digest
    # One upstream download per blob: the client's stream was the cache fill.
    for digest in _blobs_of(r.content):
        gets = [x for x in proxy.records if x.method == "GET" and digest in x.target]
        assert len(gets) == 1, gets
    # Held now: served with the upstream answering 503 to everything.
    proxy.rules.append(Rule("GET", "/v2/", status=503, times=10_000))
    proxy.rules.append(Rule("HEAD", "/v2/", status=503, times=10_000))
    try:
        for digest in _blobs_of(r.content):
            assert _blob_sha(mirror, repo, digest) == digest
            head = httpx.head(f"{mirror.url}/v2/{repo}/blobs/{digest}", timeout=30)
            assert head.status_code == 200
        # The manifest is stored by the fill job: once it ran, served without the upstream.
        deadline = time.monotonic() + 60
        while (m := _manifest(mirror, repo, single)).status_code != 200:
            assert _error(m)["code"] == "UNAVAILABLE"
            assert time.monotonic() < deadline, mirror.log()
            time.sleep(0.2)
        assert m.content == r.content
        # Not held, upstream failing: a clear error, not a 404.
        other = images.tags["docker"]
        r2 = _manifest(mirror, repo, other)
        assert r2.status_code == 503, r2.text
        assert "upstream" in _error(r2)["message"] and "not cached" in _error(r2)["message"]
    finally:
        proxy.rules.clear()


def test_corrupt_upstream_blob_is_neither_served_whole_nor_stored(mirror: MoorageServer) -> None:
    good = b"the real layer bytes " * 1000
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    bad = bytearray(good)
    bad[-1] ^= 1
    with hostile_registry() as h:
        path = f"/v2/app/blobs/{digest}"
        h.routes[("GET", path)] = Answer(200, {"Content-Type": "application/octet-stream"}, bytes(bad))
        h.routes[("HEAD", path)] = Answer(404)
        create_cache(mirror, "corrupt", h.url)
        received = bytearray()
        try:
            with httpx.stream("GET", f"{mirror.url}/v2/corrupt/app/blobs/{digest}", timeout=30) as r:
                assert r.status_code == 200
                for chunk in r.iter_raw():
                    received += chunk
        except httpx.HTTPError:
            pass  # the transfer is cut: what the client holds is short
        assert bytes(received) != bytes(bad) and len(received) < len(good)
        # Nothing stored: a HEAD goes to the upstream again (which says 404).
        head = httpx.head(f"{mirror.url}/v2/corrupt/app/blobs/{digest}", timeout=30)
        assert head.status_code == 404


def test_tag_revalidation_429_and_outage(mirror: MoorageServer, uid: str) -> None:
    with distribution() as dist:
        pf = FaultProxy(dist.port).start()
        try:
            images = _push(dist.url, "team/app")
            name = f"t{uid}"
            create_cache(mirror, name, pf.url, "--staleness", "3600")
            repo = f"{name}/team/app"
            r = _manifest(mirror, repo, "single")
            assert r.status_code == 200 and r.headers["docker-content-digest"] == images.tags["single"]
            wait_cached(mirror, repo, "single")
            # Within the staleness window: no upstream request at all (any would be refused).
            refuse = Rule("HEAD", "/manifests/", status=503, times=10_000)
            pf.rules.append(refuse)
            for _ in range(3):
                assert _manifest(mirror, repo, "single").status_code == 200
            assert refuse.seen == 0
            pf.rules.clear()

            # A second cache of the same upstream, revalidating on every pull.
            zero = f"z{uid}"
            create_cache(mirror, zero, pf.url, "--staleness", "0")
            zrepo = f"{zero}/team/app"
            assert _manifest(mirror, zrepo, "single").status_code == 200
            wait_cached(mirror, zrepo, "single")
            doc = json.loads(_manifest(mirror, zrepo, "single").content)
            for d in _blobs_of(json.dumps(doc).encode()):
                assert _blob_sha(mirror, zrepo, d) == d
            # The upstream answers 429 (asking to wait an hour): the cached tag is served.
            limited = Rule("HEAD", "/manifests/", status=429, times=10_000,
                           headers=[("Retry-After", "3600")])
            pf.rules.append(limited)
            r = _manifest(mirror, zrepo, "single")
            assert r.status_code == 200 and r.headers["docker-content-digest"] == images.tags["single"]
            assert limited.fired == 1
            metrics = httpx.get(f"{mirror.url}/metrics", timeout=10).text
            assert re.search(
                r'^moorage_mirror_requests_total\{kind="manifest",outcome="stale"\} [1-9]',
                metrics,
                re.M,
            ), [line for line in metrics.splitlines() if "mirror" in line]
            assert "serving the cached" in mirror.log()
            pf.rules.clear()
        finally:
            pf.stop()
    # The upstream is gone (stopped, its storage deleted).
    r = _manifest(mirror, zrepo, "single")
    assert r.status_code == 200 and r.headers["docker-content-digest"] == images.tags["single"]
    for d in _blobs_of(r.content):
        assert _blob_sha(mirror, zrepo, d) == d
    r = _manifest(mirror, zrepo, "docker")
    assert r.status_code == 503
    message = _error(r)["message"]
    assert "not cached" in message and pf.url in message


def test_index_kept_with_all_platforms(mirror: MoorageServer, upstream: Distribution, uid: str) -> None:
    images = _push(upstream.url, f"multi/a{uid}")
    name = f"i{uid}"
    create_cache(mirror, name, upstream.url)
    repo = f"{name}/multi/a{uid}"
    r = _manifest(mirror, repo, "multi")
    assert r.status_code == 200 and r.content == images.index.data
    wait_cached(mirror, repo, "multi")
    for child in images.children.values():
        # Held locally: answered even for a repository the upstream no longer has.
        c = _manifest(mirror, repo, child)
        assert c.status_code == 200 and c.headers["docker-content-digest"] == child
    r = httpx.get(f"{mirror.url}/v2/{repo}/tags/list", timeout=10)
    assert r.json()["tags"] == ["multi"]


def test_platform_filter_keeps_a_sparse_index(
    mirror: MoorageServer, upstream: Distribution, uid: str
) -> None:
    images = _push(upstream.url, f"multi/s{uid}")
    name = f"p{uid}"
    create_cache(mirror, name, upstream.url, "--platform", "linux/amd64")
    repo = f"{name}/multi/s{uid}"
    assert _manifest(mirror, repo, "multi").content == images.index.data
    wait_cached(mirror, repo, "multi")
    # Stored byte for byte (tags/list shows the tag stored; by digest it is the same bytes).
    r = _manifest(mirror, repo, images.index.digest)
    assert r.status_code == 200 and r.content == images.index.data
    amd64 = _manifest(mirror, repo, images.children["linux/amd64"])
    assert amd64.status_code == 200
    missing = _manifest(mirror, repo, images.children["linux/s390x"])
    assert missing.status_code == 404
    err = _error(missing)
    assert err["code"] == "MANIFEST_UNKNOWN" and "platform filter" in err["message"]


def test_pushes_into_a_cache_are_denied(mirror: MoorageServer, upstream: Distribution, uid: str) -> None:
    name = f"n{uid}"
    create_cache(mirror, name, upstream.url)
    r = httpx.post(f"{mirror.url}/v2/{name}/app/blobs/uploads/", timeout=10)
    assert r.status_code == 403
    err = _error(r)
    assert err["code"] == "DENIED" and "pull-through cache" in err["message"]
    r = httpx.put(
        f"{mirror.url}/v2/{name}/app/manifests/v1",
        content=b"{}",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert r.status_code == 403 and _error(r)["code"] == "DENIED"
    # The ordinary create-org is unchanged; cache options without --mirror-of are refused.
    out = moorage_cli(mirror, "admin", "create-org", f"o{uid}", "--insecure")
    assert out.returncode != 0 and "--mirror-of" in out.stderr


def test_slow_upstream_times_out_to_the_cached_copy(mirror: MoorageServer, uid: str) -> None:
    """The revalidation HEAD gives up after 10 s: a stalled upstream costs one wait, and the
    cached copy is served."""
    image = make_image("amd64", label=f"slow-{uid}")
    slow = threading.Event()

    def head_tag(_seen: Seen) -> Answer:
        if slow.is_set():
            time.sleep(14)
        return Answer(200, {"Content-Type": image.manifest.media_type,
                            "Docker-Content-Digest": image.digest,
                            "Content-Length": str(len(image.manifest.data))})

    with hostile_registry() as h:
        manifest = Answer(200, {"Content-Type": image.manifest.media_type,
                                "Docker-Content-Digest": image.digest}, image.manifest.data)
        h.routes[("HEAD", "/v2/app/manifests/v1")] = head_tag
        h.routes[("GET", "/v2/app/manifests/v1")] = manifest
        h.routes[("GET", f"/v2/app/manifests/{image.digest}")] = manifest
        for blob in (image.config, *image.layers):
            h.routes[("GET", f"/v2/app/blobs/{blob.digest}")] = Answer(
                200, {"Content-Type": "application/octet-stream"}, blob.data
            )
        name = f"w{uid}"
        create_cache(mirror, name, h.url, "--staleness", "0")
        repo = f"{name}/app"
        assert _manifest(mirror, repo, "v1").headers["docker-content-digest"] == image.digest
        wait_cached(mirror, repo, "v1")
        slow.set()
        r = _manifest(mirror, repo, "v1")
        assert r.status_code == 200 and r.headers["docker-content-digest"] == image.digest
        assert "ReadTimeout" in mirror.log() or "timed out" in mirror.log().lower()
