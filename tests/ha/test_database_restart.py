"""PostgreSQL restarted under traffic: the nodes notice (/readyz 503, HAProxy takes them out),
recover by themselves once it is back, and nothing that was acknowledged is lost.

This restarts tests/ha's own PostgreSQL server (tests/ha/postgres.py: the nodes' database is
there, not on the shared server that other tests use meanwhile) once per run; the outage lasts as
long as it takes every node to report it (about a second).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter as Tally
from dataclasses import dataclass, field

import httpx
import pytest

from ..clients.ocigen import Image, make_image
from .client import Counters, Refused, pull_image, push_image
from .harness import STORAGES, Cluster, readyz, wait_for
from .postgres import PrivatePostgres

pytestmark = pytest.mark.ha


@dataclass
class Traffic:
    """Clients pushing new images and pulling old ones through the LB while the fault happens."""

    cluster: Cluster
    known: list[tuple[str, str, Image]]
    phase: str = "before"
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: Tally[str] = field(default_factory=Tally)
    acknowledged: list[tuple[str, str, Image]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str) -> None:
        with self.lock:
            self.outcomes[f"{self.phase}: {what}"] += 1

    def run(self, worker: int) -> None:
        i = 0
        with self.cluster.client(timeout=30) as http:
            while not self.stop.is_set():
                i += 1
                try:
                    if i % 2:
                        repo, tag = f"ha/pg-traffic{worker}", f"t{i}"
                        image = make_image(n_layers=1, layer_size=64 << 10)
                        push_image(http, repo, tag, image)
                        with self.lock:
                            self.acknowledged.append((repo, tag, image))
                        self.note("push ok")
                    else:
                        repo, tag, image = self.known[i % len(self.known)]
                        pull_image(http, repo, tag, image, Counters())
                        self.note("pull ok")
                except Refused as exc:
                    self.note(f"HTTP {exc.status}")
                except httpx.TransportError as exc:
                    self.note(type(exc).__name__)


def test_postgresql_restart_under_traffic(
    cluster: Cluster, ha_postgres: PrivatePostgres, record_property: pytest.RecordProperty
) -> None:
    if cluster.storage != STORAGES[0]:
        pytest.skip("PostgreSQL is restarted once per run (first storage)")
    assert cluster.pg_admin_url == ha_postgres.admin_url, "the nodes must use the private server"
    known = []
    with cluster.client() as http:
        for n in range(6):
            repo, tag = f"ha/pg{uuid.uuid4().hex[:8]}", f"v{n}"
            image = make_image(n_layers=2, layer_size=256 << 10)
            push_image(http, repo, tag, image, chunk=(n % 2) * 200_000)
            known.append((repo, tag, image))

    traffic = Traffic(cluster, known)
    workers = [threading.Thread(target=traffic.run, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    try:
        wait_for("traffic", lambda: sum(traffic.outcomes.values()) >= 8)
        traffic.phase = "outage"
        ha_postgres.stop()
        try:
            for node in cluster.nodes:
                wait_for(f"{node.host} /readyz 503", lambda n=node: readyz(n.url) == 503)
        finally:
            ha_postgres.start()
        traffic.phase = "recovery"
        for node in cluster.nodes:  # the same processes: no node was restarted
            wait_for(f"{node.host} /readyz 200", lambda n=node: readyz(n.url) == 200)
            assert node.proc is not None and node.proc.poll() is None
        cluster.wait_lb({"node1": "UP", "node2": "UP", "node3": "UP"})
        traffic.phase = "after"
        wait_for(
            "successful traffic after the restart",
            lambda: (
                traffic.outcomes["after: push ok"] >= 8 and traffic.outcomes["after: pull ok"] >= 8
            ),
        )
    finally:
        traffic.stop.set()
        for w in workers:
            w.join(120)

    report = dict(sorted(traffic.outcomes.items()))
    record_property("pg_restart_outcomes", report)
    print(f"\nPostgreSQL restart, client outcomes: {report}")
    failures = {k: v for k, v in report.items() if not k.endswith(" ok")}
    # After recovery every request succeeds; during the outage clients only ever see retryable
    # answers (503 from a node or from HAProxy with every node out), never a 500.
    assert not [k for k in failures if k.startswith("after:")], report
    assert all(k.endswith(("HTTP 503", "HTTP 502")) for k in failures), report

    # Nothing acknowledged is lost or corrupted: re-pull all of it through every node.
    counters = Counters()
    everything = known + traffic.acknowledged
    for node in range(3):
        with cluster.client(node) as http:
            for repo, tag, image in everything:
                pull_image(http, repo, tag, image, counters)
    assert counters.retries == 0
    record_property("pg_restart_verified_images", len(everything))
    print(f"re-pulled and verified {len(everything)} images through each of the 3 nodes")
