"""SIGTERM behind the load balancer: the node reports itself unready first (/readyz 503) and
keeps serving while HAProxy's health checks take it out; only then does it stop listening, and
the requests it was serving finish. Clients of the LB never see an error."""

from __future__ import annotations

import signal
import threading
import uuid
from collections import Counter as Tally

import httpx
import pytest

from ..clients.ocigen import make_image
from .client import Counters, get_verified, push_image
from .harness import Cluster, readyz, wait_for

pytestmark = pytest.mark.ha

MiB = 1 << 20


def test_sigterm_drains_the_node_before_it_stops_listening(cluster: Cluster) -> None:
    repo = f"ha/drain{uuid.uuid4().hex[:8]}"
    image = make_image(n_layers=1, layer_size=16 * MiB)
    layer = image.layers[0]
    with cluster.client() as lb:
        push_image(lb, repo, "v1", image)

    stop = threading.Event()
    seen: Tally[str] = Tally()

    def lb_traffic() -> None:
        with cluster.client(timeout=30) as lb:
            while not stop.is_set():
                try:
                    r = lb.get(
                        f"/v2/{repo}/manifests/v1", headers={"Accept": image.manifest.media_type}
                    )
                    seen[f"HTTP {r.status_code}"] += 1
                except httpx.TransportError as exc:
                    seen[type(exc).__name__] += 1

    node = cluster.nodes[2]
    assert node.proc is not None
    in_flight: dict[str, object] = {}

    def slow_pull() -> None:  # straight to the node, started before SIGTERM
        with cluster.client(2) as c:
            body, _ = get_verified(
                c,
                f"/v2/{repo}/blobs/{layer.digest}",
                layer.digest,
                Counters(),
                pace=0.02,
                on_stream=started.set,
            )
            in_flight["ok"] = body == layer.data

    started = threading.Event()
    traffic = threading.Thread(target=lb_traffic)
    puller = threading.Thread(target=slow_pull)
    traffic.start()
    puller.start()
    try:
        assert started.wait(60)
        node.proc.send_signal(signal.SIGTERM)
        wait_for("/readyz 503 while draining", lambda: readyz(node.url) == 503)
        cluster.wait_lb({"node3": "DOWN"})
        # Taken out of the pool while still listening: it answers, it is just not ready.
        assert httpx.get(f"{node.url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{node.url}/readyz", timeout=5).json()["checks"]["shutdown"] == "draining"
        assert node.proc.wait(60) is not None
        puller.join(120)
        assert in_flight.get("ok") is True, "the transfer in flight at SIGTERM did not finish"
    finally:
        stop.set()
        traffic.join(60)
        node.stop()
        cluster.restart(2)
    print(f"\nLB clients during the drain and stop of node3: {dict(seen)}")
    assert set(seen) == {"HTTP 200"}, dict(seen)
