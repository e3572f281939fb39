"""The pure parts: challenge parsing, JSON bounds, the bandwidth limiter, platform selection,
token lifetimes, Retry-After."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from moorage.oci.digest import Digest
from moorage.oci.manifest import Descriptor
from moorage.replication import (
    BandwidthLimiter,
    Limits,
    PeerProtocolError,
    RegistryClient,
    RetryPolicy,
    docker_hub_name,
    referrers_tag,
)
from moorage.replication.auth import Token, parse_challenges
from moorage.replication.bounds import json_depth, load_json
from moorage.replication.copy import select_children

# --- WWW-Authenticate (examples from the Docker token spec and RFC 7235) ---------------------


def test_docker_hub_challenge() -> None:
    [c] = parse_challenges(
        [
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"'
        ]
    )
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scopes == ("repository:samalba/my-app:pull,push",)


def test_several_challenges_quoting_and_case() -> None:
    values = [
        'Basic realm="simple", BEARER realm="https://a.example/t", Service=svc,'
        ' scope="repository:a:pull repository:b:pull"',
        'Bearer realm="with \\"quote\\" and , comma"',
    ]
    basic, bearer, quoted = parse_challenges(values)
    assert (basic.scheme, basic.realm) == ("basic", "simple")
    assert (bearer.scheme, bearer.realm, bearer.service) == ("bearer", "https://a.example/t", "svc")
    assert bearer.scopes == ("repository:a:pull", "repository:b:pull")
    assert quoted.realm == 'with "quote" and , comma'


@pytest.mark.parametrize("value", ["", ",,,", "Negotiate abc==", '"unterminated', "=x"])
def test_challenge_garbage_does_not_raise(value: str) -> None:
    for c in parse_challenges([value]):
        assert c.scheme not in ("bearer",) or c.realm is None


# --- JSON bounds -------------------------------------------------------------------------------


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert json_depth(b'["\\"[[[", []]') == 2
    assert json_depth(b"[" * 100 + b"]" * 100) == 100
    assert json_depth(b'"just a string"') == 0


def test_load_json_bounds() -> None:
    limits = Limits(max_json_bytes=100, max_json_depth=3)
    assert load_json(b'{"a": [[1]]}', limits, "x") == {"a": [[1]]}
    with pytest.raises(PeerProtocolError, match="nested"):
        load_json(b'{"a": [[[1]]]}', limits, "x")
    with pytest.raises(PeerProtocolError, match="limit"):
        load_json(b" " * 101, limits, "x")
    with pytest.raises(PeerProtocolError, match="not valid JSON"):
        load_json(b"\xff\xfe{}", limits, "x")


# --- bandwidth limiter -------------------------------------------------------------------------


async def test_limiter_rate_over_many_acquires() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = BandwidthLimiter(1000.0, burst=500, clock=lambda: now[0], sleep=sleep)
    for _ in range(20):
        await limiter.acquire(300)
    # 6000 bytes at 1000 B/s with a 500-byte burst to start with: 5.5 s of waiting in all.
    assert sum(slept) == pytest.approx(5.5)
    assert now[0] == pytest.approx(5.5)
    # Idle time refills the bucket up to the burst only.
    now[0] += 100.0
    slept.clear()
    await limiter.acquire(500)
    assert slept == []
    await limiter.acquire(100)
    assert sum(slept) == pytest.approx(0.1)


def test_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BandwidthLimiter(0)


# --- platform selection ------------------------------------------------------------------------


def _desc(
    n: int, platform: dict[str, str] | None, annotations: dict[str, str] | None = None
) -> Descriptor:
    return Descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        Digest("sha256", f"{n:064x}"),
        100,
        annotations=annotations,
        platform=platform,
    )


def test_select_children() -> None:
    amd64 = _desc(1, {"os": "linux", "architecture": "amd64"})
    arm_v7 = _desc(2, {"os": "linux", "architecture": "arm", "variant": "v7"})
    arm_v6 = _desc(3, {"os": "linux", "architecture": "arm", "variant": "v6"})
    windows = _desc(4, {"os": "windows", "architecture": "amd64"})
    plain = _desc(5, None)
    attest_amd64 = _desc(
        6,
        {"os": "unknown", "architecture": "unknown"},
        {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": str(amd64.digest),
        },
    )
    attest_windows = _desc(
        7,
        {"os": "unknown", "architecture": "unknown"},
        {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": str(windows.digest),
        },
    )
    children = [amd64, arm_v7, arm_v6, windows, plain, attest_amd64, attest_windows]
    assert select_children(children, None) == (children, [])
    keep, skip = select_children(children, ["linux/amd64", "linux/arm/v7"])
    assert keep == [amd64, arm_v7, plain, attest_amd64]
    assert skip == [arm_v6, windows, attest_windows]
    keep, _ = select_children(children, ["linux/arm"])  # no variant: every variant
    assert keep == [arm_v7, arm_v6, plain]
    with pytest.raises(ValueError):
        select_children(children, ["linux"])


# --- tokens, retries, names --------------------------------------------------------------------


def test_token_lifetime() -> None:
    t = Token.from_response("x", 300, now=1000.0)
    assert t.fresh(now=1000.0 + 269) and not t.fresh(now=1000.0 + 271)  # 30 s early
    d = Token.from_response("x", None, now=0.0)  # the spec's default: 60 s
    assert d.fresh(now=47) and not d.fresh(now=49)
    assert not Token.from_response("x", "bogus", now=0.0).fresh(now=61)


def test_retry_delay_bounds() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=8.0)
    for attempt in range(10):
        assert 0 < policy.delay(attempt) <= 8.0
    assert policy.delay(0) <= 1.0


async def test_retry_after_forms() -> None:
    client = RegistryClient("http://127.0.0.1:9", retry=RetryPolicy(max_retry_after=100))
    try:

        def answer(value: str) -> httpx.Response:
            return httpx.Response(429, headers={"Retry-After": value})

        assert client._retry_after(answer("7"), 0) == 7.0
        later = email.utils.formatdate(time.time() + 30, usegmt=True)
        wait = client._retry_after(answer(later), 0)
        assert wait is not None and 25 <= wait <= 31
        assert client._retry_after(answer("3600"), 0) is None  # longer than we wait
        garbage = client._retry_after(answer("soon"), 0)  # unparsable: our own backoff
        assert garbage is not None and garbage <= 0.5
    finally:
        await client.aclose()


def test_names() -> None:
    assert docker_hub_name("alpine") == "library/alpine"
    assert docker_hub_name("bitnami/redis") == "bitnami/redis"
    assert referrers_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    with pytest.raises(ValueError):
        referrers_tag("sha256:xyz")
    with pytest.raises(ValueError):
        RegistryClient("ftp://example.test")
