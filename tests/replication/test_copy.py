"""The copy engine between real registries: Distribution 2.8.2 and Moorage, both directions.

Each test pushes the test set (tests/replication/images.py) with plain HTTP into a source
repository, copies tags with the engine, and checks the destination with plain HTTP: same bytes
and digests for every manifest, every blob present, referrers and signatures along.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from moorage.replication import (
    BandwidthLimiter,
    CopyEngine,
    CopyOptions,
    Credentials,
    ProgressEvent,
    RegistryClient,
    TagResult,
)
from tests.clients.ocigen import OCI_MANIFEST, Blob, canonical_json
from tests.conftest import ADMIN_PASSWORD, MoorageServer, own_auth_server

from .images import ImageSet, Manifest, Pusher, build_set, referrers_tag
from .peers import Distribution

ADMIN = ("admin", ADMIN_PASSWORD)
TAGS = ["multi", "single", "docker"]


class Peer:
    """A registry as the test sees it: how the engine reaches it, and a plain-HTTP handle."""

    def __init__(self, kind: str, url: str, auth: tuple[str, str] | None, scheme: str | None):
        self.kind, self.url, self.auth, self.scheme = kind, url, auth, scheme
        self.http = Pusher(url, auth)

    def client(self) -> RegistryClient:
        creds = Credentials(*self.auth) if self.auth else None
        return RegistryClient(
            self.url, creds, auth_scheme="basic" if self.scheme == "basic" else None
        )

    @property
    def has_referrers_api(self) -> bool:
        return self.kind == "moorage"


def _peer(request: pytest.FixtureRequest, name: str) -> Peer:
    kind, _, scheme = name.partition("-")
    if kind == "dist":
        dist: Distribution = request.getfixturevalue("dist_a" if scheme == "a" else "dist_b")
        return Peer("distribution", dist.url, None, None)
    if scheme == "open":
        srv: MoorageServer = request.getfixturevalue("moorage_open")
        return Peer("moorage", srv.url, None, None)
    srv = request.getfixturevalue("moorage_auth")
    return Peer("moorage", srv.url, ADMIN, scheme)  # "basic" or "token"


@asynccontextmanager
async def engine(
    src: Peer, dst: Peer, options: CopyOptions | None = None, progress: Any = None
) -> AsyncIterator[CopyEngine]:
    async with src.client() as s, dst.client() as d:
        yield CopyEngine(s, d, options, progress)


def assert_copied(src: Peer, src_repo: str, dst: Peer, dst_repo: str, s: ImageSet) -> None:
    for tag, digest in s.tags.items():
        a, b = src.http.get(src_repo, tag), dst.http.get(dst_repo, tag)
        assert b.status_code == 200, (tag, b.text)
        assert b.content == a.content, tag
        assert b.headers["docker-content-digest"] == digest, tag
    for m in s.manifests:
        r = dst.http.get(dst_repo, m.digest)
        assert r.status_code == 200, (m.ref, r.text)
        assert r.content == m.blob.data
        for blob in m.blobs:
            r = dst.http.http.head(f"/v2/{dst_repo}/blobs/{blob.digest}")
            assert r.status_code == 200, blob.digest
            assert int(r.headers["content-length"]) == blob.size
    layer = s.manifests[0].blobs[-1]
    assert dst.http.blob_digest(dst_repo, layer.digest) == layer.digest
    # Referrers of the index (the SBOM), of the SBOM (its signature), of a child (its SBOM).
    for subject, referrer in [
        (s.index.digest, s.sbom),
        (s.sbom, s.sbom_signature),
        (s.children["linux/amd64"], s.child_sbom),
    ]:
        assert referrer in _referrers(dst, dst_repo, subject)
    if not src.has_referrers_api and not dst.has_referrers_api:
        # Both keep the referrers tag: the copy keeps the source's index byte for byte.
        tag = referrers_tag(s.index.digest)
        assert dst.http.get(dst_repo, tag).content == src.http.get(src_repo, tag).content


def _referrers(peer: Peer, repo: str, subject: str) -> list[str]:
    if peer.has_referrers_api:
        r = peer.http.http.get(f"/v2/{repo}/referrers/{subject}")
    else:
        r = peer.http.get(repo, referrers_tag(subject))
    assert r.status_code == 200, r.text
    return [d["digest"] for d in r.json()["manifests"]]


PAIRS = [
    ("dist-a", "dist-b"),
    ("dist-a", "moorage-token"),
    ("moorage-basic", "dist-b"),
    ("moorage-token", "moorage-open"),
]


@pytest.mark.parametrize(("src_name", "dst_name"), PAIRS)
async def test_copy_set_keeps_digests_and_referrers(
    request: pytest.FixtureRequest, src_name: str, dst_name: str, uid: str
) -> None:
    src, dst = _peer(request, src_name), _peer(request, dst_name)
    s = build_set()
    src_repo, dst_repo = f"src/{uid}/app", f"dst/{uid}/app"
    src.http.push_set(src_repo, s)
    events: list[ProgressEvent] = []
    async with engine(src, dst, progress=events.append) as e:
        results = await e.copy_tags([(src_repo, dst_repo, t) for t in TAGS])
    assert [r.status for r in results] == ["copied"] * 3, [r.error for r in results]
    assert [r.digest for r in results] == [s.tags[t] for t in TAGS]
    multi = results[0]
    assert multi.referrers == 4  # SBOM, its signature, the child's SBOM, the cosign .sig tag
    assert multi.skipped == []
    assert_copied(src, src_repo, dst, dst_repo, s)
    # Progress: every byte sent was reported, and each tag's end.
    assert sum(ev.bytes for ev in events if ev.kind == "bytes") == sum(r.bytes for r in results)
    assert sorted(ev.ref for ev in events if ev.kind == "tag") == sorted(TAGS)

    # A second run finds everything in place and moves nothing.
    async with engine(src, dst) as e:
        again = await e.copy_tags([(src_repo, dst_repo, t) for t in TAGS])
    assert [r.status for r in again] == ["unchanged"] * 3
    assert sum(r.bytes for r in again) == 0 and sum(r.manifests for r in again) == 0


async def test_copy_by_digest_and_mount_between_repositories(
    request: pytest.FixtureRequest, uid: str
) -> None:
    src, dst = _peer(request, "dist-a"), _peer(request, "moorage-open")
    s = build_set()
    src_repo = f"src/{uid}/app"
    src.http.push_set(src_repo, s)
    async with engine(src, dst, CopyOptions(referrers=False)) as e:
        first = await e.copy_tag(src_repo, f"dst/{uid}/one", s.tags["single"])
        second = await e.copy_tag(src_repo, f"dst/{uid}/two", s.tags["single"])
    assert first.status == second.status == "copied", (first.error, second.error)
    assert first.blobs_uploaded == 3 and first.blobs_mounted == 0
    # The engine knows where it put the blobs: the second repository mounts all of them.
    assert second.blobs_mounted == 3 and second.blobs_uploaded == 0 and second.bytes == 0
    for repo in ("one", "two"):
        r = dst.http.get(f"dst/{uid}/{repo}", s.tags["single"])
        assert r.status_code == 200 and r.headers["docker-content-digest"] == s.tags["single"]


async def test_platform_filter_copies_only_chosen_children(
    request: pytest.FixtureRequest, uid: str
) -> None:
    src, dst = _peer(request, "dist-a"), _peer(request, "dist-b")
    s = build_set()
    src_repo, dst_repo = f"src/{uid}/app", f"dst/{uid}/app"
    src.http.push_set(src_repo, s)
    options = CopyOptions(platforms=["linux/amd64", "linux/arm64"])
    async with engine(src, dst, options) as e:
        result = await e.copy_tag(src_repo, dst_repo, "multi")
    assert [(c.digest, c.platform) for c in result.skipped] == [
        (s.children["linux/s390x"], "linux/s390x")
    ]
    # The chosen children (arm64 matches any variant) and the amd64 attestation arrived.
    for key in ("linux/amd64", "linux/arm64/v8", "attestation"):
        assert dst.http.get(dst_repo, s.children[key]).status_code == 200, key
    assert dst.http.get(dst_repo, s.children["linux/s390x"]).status_code == 404
    # Distribution 2.8.2 insists that every child of an index exists: it refuses the sparse
    # index, and the result says so (Moorage will accept it where a policy allows, phase 2).
    assert result.status == "failed"
    assert result.error is not None and "sparse index" in result.error
    assert "MANIFEST_BLOB_UNKNOWN" in result.error
    assert dst.http.get(dst_repo, "multi").status_code == 404


async def test_one_refused_tag_leaves_the_others_copied(uid: str, dist_a: Distribution) -> None:
    """A destination that refuses one manifest (too large for it): that tag fails, with the
    destination's reason; the other tags are copied and reported."""
    src = Peer("distribution", dist_a.url, None, None)
    s = build_set()
    src_repo = f"src/{uid}/app"
    src.http.push_set(src_repo, s)
    big = json.loads(s.manifests[5].blob.data)  # "single"
    big["annotations"] = {"padding": "x" * 3000}
    big_blob = Blob(OCI_MANIFEST, canonical_json(big))
    src.http.manifest(src_repo, Manifest(big_blob, "big", s.manifests[5].blobs))
    with own_auth_server(MOORAGE_REGISTRY_MAX_MANIFEST_SIZE="2048") as srv:
        dst = Peer("moorage", srv.url, ADMIN, "token")
        tags = ["single", "big", "docker", "multi"]
        async with engine(src, dst) as e:
            results = await e.copy_tags([(src_repo, f"dst/{uid}/app", t) for t in tags])
        by_tag: dict[str, TagResult] = {r.ref: r for r in results}
        assert by_tag["big"].status == "failed"
        assert by_tag["big"].attempts == 1  # a refusal is not retried
        assert "413" in (by_tag["big"].error or ""), by_tag["big"].error
        for t in ("single", "docker", "multi"):
            assert by_tag[t].status == "copied", by_tag[t].error
            assert dst.http.get(f"dst/{uid}/app", t).status_code == 200


async def test_bandwidth_limit_covers_every_blob_byte(dist_a: Distribution, uid: str) -> None:
    """One limiter for an execution: every blob byte downloaded passes through it. (A fake clock
    and sleep: the limiter's arithmetic is what is checked, not wall time.)"""
    src = Peer("distribution", dist_a.url, None, None)
    s = build_set()
    src_repo = f"src/{uid}/app"
    src.http.push_set(src_repo, s)
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    rate = 100_000.0
    limiter = BandwidthLimiter(rate, burst=4096, clock=lambda: now[0], sleep=sleep)
    async with (
        RegistryClient(dist_a.url, limiter=limiter) as source,
        RegistryClient(dist_a.url) as dest,
    ):
        results = await CopyEngine(source, dest).copy_tags(
            [(src_repo, f"dst/{uid}/app", t) for t in TAGS]
        )
    assert all(r.ok for r in results), [r.error for r in results]
    moved = sum(r.bytes for r in results)
    assert moved > 4096
    assert sum(slept) == pytest.approx((moved - 4096) / rate)
