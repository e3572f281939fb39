"""Failure injection: a loopback proxy (faultproxy.py) in front of a real registry cuts
connections mid-transfer and answers 429/503; the copy must resume or retry and finish with the
right digest, or fail with a clear error."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator

import pytest

from moorage.replication import (
    CopyEngine,
    CopyOptions,
    Credentials,
    RegistryClient,
    RetryPolicy,
    TransferOptions,
)
from tests.clients.ocigen import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, canonical_json
from tests.conftest import ADMIN_PASSWORD, MoorageServer

from .faultproxy import FaultProxy, Rule, fault_proxy
from .images import Manifest, Pusher
from .peers import Distribution

MiB = 1024 * 1024
LAYER_SIZE = 64 * MiB
# Small chunks so that a 64 MiB layer takes four PATCH requests and the cut lands mid-way.
TRANSFER = TransferOptions(
    chunk_size=16 * MiB, monolithic_max=4 * MiB, checkpoint_every=4 * MiB, backoff=0.05
)


@pytest.fixture(scope="module")
def big_image() -> Manifest:
    layer = Blob(OCI_LAYER_GZIP, os.urandom(LAYER_SIZE))
    config = Blob(OCI_CONFIG, canonical_json({"os": "linux", "architecture": "amd64"}))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Manifest(Blob(OCI_MANIFEST, canonical_json(doc)), "big", [config, layer])


@pytest.fixture
def dst_proxy(request: pytest.FixtureRequest) -> Iterator[tuple[str, FaultProxy]]:
    """A fault proxy in front of the destination named by the test's parameter."""
    name = request.param
    peer = request.getfixturevalue(name)
    port = peer.port
    with fault_proxy(port) as proxy:
        yield name, proxy


def _client(url: str, name: str, **kw: object) -> RegistryClient:
    creds = Credentials("admin", ADMIN_PASSWORD) if name == "moorage_auth" else None
    return RegistryClient(url, creds, **kw)  # type: ignore[arg-type]


def _sha256_of_blob(url: str, repo: str, digest: str, auth: tuple[str, str] | None) -> str:
    p = Pusher(url, auth)
    try:
        return p.blob_digest(repo, digest)
    finally:
        p.close()


@pytest.mark.parametrize("dst_proxy", ["moorage_auth", "dist_b"], indirect=True)
async def test_cut_mid_layer_resumes_and_completes(
    dst_proxy: tuple[str, FaultProxy],
    dist_a: Distribution,
    big_image: Manifest,
    request: pytest.FixtureRequest,
    uid: str,
) -> None:
    name, proxy = dst_proxy
    src_repo, dst_repo = f"src/{uid}/big", f"dst/{uid}/big"
    Pusher(dist_a.url).manifest(src_repo, big_image)
    # The second PATCH of the layer breaks after 5 MiB of its 16.
    rule = Rule("PATCH", r"/blobs/uploads/", cut_request_after=5 * MiB, skip=1)
    proxy.rules.append(rule)
    options = CopyOptions(transfer=TRANSFER, referrers=False)
    tracemalloc.start()
    try:
        async with RegistryClient(dist_a.url) as src, _client(proxy.url, name) as dst:
            result = await CopyEngine(src, dst, options).copy_tag(src_repo, dst_repo, "big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rule.fired == 1
    assert result.status == "copied", result.error
    assert result.digest == big_image.digest
    layer = big_image.blobs[1]
    if name == "moorage_auth":
        # Moorage keeps what arrived before the cut: the copy goes on from its offset.
        assert (result.resumes, result.restarts) == (1, 0)
        assert result.bytes < LAYER_SIZE + 16 * MiB
    else:
        # Distribution cancels a session whose PATCH broke mid-body: a new session from 0.
        assert (result.resumes, result.restarts) == (0, 1)
    assert "cut request" in [r.outcome for r in proxy.records]
    auth = ("admin", ADMIN_PASSWORD) if name == "moorage_auth" else None
    upstream: MoorageServer | Distribution = request.getfixturevalue(name)
    assert _sha256_of_blob(upstream.url, dst_repo, layer.digest, auth) == layer.digest
    # Streamed, never held whole: Python allocations stayed far below the layer's size.
    assert peak < LAYER_SIZE // 4, peak


async def test_source_cut_mid_download_resumes(
    dist_a: Distribution, moorage_open: MoorageServer, big_image: Manifest, uid: str
) -> None:
    src_repo, dst_repo = f"src/{uid}/big", f"dst/{uid}/big"
    Pusher(dist_a.url).manifest(src_repo, big_image)
    layer = big_image.blobs[1]
    with fault_proxy(dist_a.port) as proxy:
        rule = Rule("GET", rf"/blobs/{layer.digest}", cut_response_after=20 * MiB)
        proxy.rules.append(rule)
        options = CopyOptions(transfer=TRANSFER, referrers=False)
        async with RegistryClient(proxy.url) as src, RegistryClient(moorage_open.url) as dst:
            result = await CopyEngine(src, dst, options).copy_tag(src_repo, dst_repo, "big")
    assert rule.fired == 1
    assert result.status == "copied", result.error
    assert result.resumes == 1 and result.restarts == 0
    # The second download asked for a range (from a hash checkpoint), not the whole layer.
    gets = [r for r in proxy.records if layer.digest in r.target]
    assert len(gets) == 2
    assert _sha256_of_blob(moorage_open.url, dst_repo, layer.digest, None) == layer.digest


@pytest.mark.parametrize("dst_proxy", ["dist_b"], indirect=True)
async def test_429_retry_after_is_honoured(
    dst_proxy: tuple[str, FaultProxy], dist_a: Distribution, uid: str
) -> None:
    _, proxy = dst_proxy
    src_repo, dst_repo = f"src/{uid}/app", f"dst/{uid}/app"
    image = _small_image()
    Pusher(dist_a.url).manifest(src_repo, image)
    rule = Rule("PUT", r"/manifests/", status=429, headers=[("Retry-After", "2")])
    proxy.rules.append(rule)
    async with RegistryClient(dist_a.url) as src, RegistryClient(proxy.url) as dst:
        result = await CopyEngine(src, dst).copy_tag(src_repo, dst_repo, "small")
    assert result.status == "copied", result.error
    assert rule.fired == 1
    puts = [r for r in proxy.records if r.method == "PUT" and "/manifests/" in r.target]
    assert [r.outcome for r in puts] == ["injected 429", "forwarded 201"]
    # Lower bound only: the retry came no sooner than the peer asked.
    assert puts[1].at - puts[0].at >= 1.9


@pytest.mark.parametrize("dst_proxy", ["dist_b"], indirect=True)
async def test_too_long_retry_after_fails_the_tag_clearly(
    dst_proxy: tuple[str, FaultProxy], dist_a: Distribution, uid: str
) -> None:
    _, proxy = dst_proxy
    src_repo = f"src/{uid}/app"
    image = _small_image()
    Pusher(dist_a.url).manifest(src_repo, image)
    proxy.rules.append(
        Rule("PUT", r"/manifests/", status=429, headers=[("Retry-After", "3600")], times=100)
    )
    retry = RetryPolicy(max_retry_after=60)
    async with RegistryClient(dist_a.url) as src, RegistryClient(proxy.url, retry=retry) as dst:
        engine = CopyEngine(src, dst, CopyOptions(tag_attempts=1))
        result = await engine.copy_tag(src_repo, f"dst/{uid}/app", "small")
    assert result.status == "failed"
    assert "429" in (result.error or "") and "wait longer" in (result.error or "")


@pytest.mark.parametrize("dst_proxy", ["dist_b"], indirect=True)
async def test_5xx_and_connection_errors_are_retried(
    dst_proxy: tuple[str, FaultProxy], dist_a: Distribution, dist_b: Distribution, uid: str
) -> None:
    _, proxy = dst_proxy
    src_repo, dst_repo = f"src/{uid}/app", f"dst/{uid}/app"
    image = _small_image()
    Pusher(dist_a.url).manifest(src_repo, image)
    proxy.rules += [
        Rule("HEAD", r"/blobs/", status=503, times=2),
        Rule("PUT", r"/blobs/uploads/", cut_request_after=10, times=1),
    ]
    retry = RetryPolicy(backoff=0.05)
    options = CopyOptions(transfer=TransferOptions(backoff=0.05))
    async with RegistryClient(dist_a.url) as src, RegistryClient(proxy.url, retry=retry) as dst:
        result = await CopyEngine(src, dst, options).copy_tag(src_repo, dst_repo, "small")
    assert result.status == "copied", result.error
    assert all(rule.fired == rule.times for rule in proxy.rules)
    assert result.restarts == 1  # the broken closing PUT: Distribution dropped that session
    r = Pusher(dist_b.url).get(dst_repo, "small")
    assert r.headers["docker-content-digest"] == image.digest


def _small_image() -> Manifest:
    layer = Blob(OCI_LAYER_GZIP, os.urandom(4096))
    config = Blob(
        OCI_CONFIG, canonical_json({"os": "linux", "n": hashlib.sha256(layer.data).hexdigest()})
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Manifest(Blob(OCI_MANIFEST, canonical_json(doc)), "small", [config, layer])
