"""The naming rules of cache organizations, in process: Docker Hub's ``library/`` for
one-segment paths, the URLs that mean Docker Hub, containerd's ``ns=`` host matching, the
platform filter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from moorage.mirror.pull import wanted
from moorage.mirror.service import Cache, check_platforms, normalize_url
from moorage.services.errors import Invalid


def _cache(url: str, platforms: tuple[str, ...] | None = None, ns: str = "hub") -> Cache:
    return Cache(1, ns, url, None, None, False, platforms, 300, None, None, datetime.now(UTC))


@pytest.mark.parametrize(
    "url", ["https://docker.io", "https://index.docker.io/", "https://registry-1.docker.io"]
)
def test_docker_hub_urls_mean_its_api_host(url: str) -> None:
    assert normalize_url(url) == "https://registry-1.docker.io"


@pytest.mark.parametrize(
    "url", ["ftp://x", "https://x/path", "https://user@x", "x:5000", "https://x?y", ""]
)
def test_upstream_url_is_scheme_host_port(url: str) -> None:
    with pytest.raises(Invalid):
        normalize_url(url)


def test_docker_hub_adds_library_to_one_segment_names() -> None:
    hub = _cache("https://registry-1.docker.io")
    assert hub.upstream_name("hub/alpine") == "library/alpine"
    assert hub.upstream_name("hub/bitnami/redis") == "bitnami/redis"
    assert hub.upstream_name("hub/library/alpine") == "library/alpine"
    other = _cache("https://ghcr.io", ns="ghcr")
    assert other.upstream_name("ghcr/alpine") == "alpine"
    assert other.upstream_name("ghcr/org/app/sub") == "org/app/sub"


def test_hosts_as_containerd_names_them() -> None:
    assert _cache("https://registry-1.docker.io").host == "registry-1.docker.io"
    assert _cache("http://127.0.0.1:5000").host == "127.0.0.1:5000"
    assert _cache("https://quay.io").host == "quay.io"


def test_platform_filter() -> None:
    both = _cache("https://quay.io", ("linux/amd64", "linux/arm64"))
    assert wanted(both, {"platform": {"os": "linux", "architecture": "amd64"}})
    assert wanted(both, {"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}})
    assert not wanted(both, {"platform": {"os": "linux", "architecture": "s390x"}})
    assert not wanted(both, {"platform": {"os": "unknown", "architecture": "unknown"}})
    assert not wanted(both, {})
    assert wanted(_cache("https://quay.io"), {})
    assert check_platforms(["linux/arm64", "linux/amd64", "linux/amd64"]) == [
        "linux/amd64",
        "linux/arm64",
    ]
    with pytest.raises(Invalid):
        check_platforms(["linux"])
