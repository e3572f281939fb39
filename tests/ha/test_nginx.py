"""deploy/nginx.conf, the alternative balancer: bodies stream with no size limit, and a dead node
is skipped by nginx's passive checks (a refused connection goes to the next node)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..clients.ocigen import make_image, sha256
from .client import Counters, get_verified, pull_image, push_blob, push_image
from .harness import Cluster

pytestmark = pytest.mark.ha

MiB = 1 << 20


@pytest.fixture(scope="module")
def nginx_cluster(ha_tmp: Path) -> Iterator[Cluster]:
    with Cluster(ha_tmp / "nginx-cluster", storage="filesystem", balancer="nginx") as c:
        yield c


def test_nginx_streams_large_bodies_and_skips_a_dead_node(nginx_cluster: Cluster) -> None:
    cluster = nginx_cluster
    data = os.urandom(96 * MiB)
    image = make_image(n_layers=2, layer_size=MiB)
    with cluster.client() as lb:
        # 48 MiB PATCHes: nginx's default 1 MiB body limit or a spooled body would show here.
        digest = push_blob(lb, "ha/nginx", data, chunk=48 * MiB)
        push_image(lb, "ha/nginx", "v1", image)
        body, _ = get_verified(lb, f"/v2/ha/nginx/blobs/{digest}", sha256(data), Counters())
        assert body == data

    cluster.kill(0)
    counters = Counters()
    served = []
    for _ in range(30):  # fresh connections, so that nginx picks a node for each
        with cluster.client() as lb:
            served += pull_image(lb, "ha/nginx", "v1", image, counters)
    assert counters.retries == 0, counters.errors  # nginx retried the refused connections
    assert cluster.nodes[0].host not in served
    assert cluster.lb is not None  # and nginx did try the dead node, then the next one:
    assert "Connection refused" in cluster.lb.log_path.read_text(errors="replace")
    print(
        f"\nnginx with node1 dead: 30 pulls, {len(served)} blob GETs, all 200; served by "
        f"{sorted(set(served))}"
    )
    cluster.restart(0)
