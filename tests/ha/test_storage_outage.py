"""S3 cut off for a moment under a chunked push and pulls (moto behind the relay of
tests/s3server.py: connections refused, open ones reset): clients see retryable failures, never a
corrupt blob, and the same upload session finishes once S3 is back."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter as Tally

import httpx
import pytest

from ..clients.ocigen import make_image, sha256
from .client import (
    Counters,
    get_verified,
    paced,
    patch_chunk,
    pull_image,
    push_image,
    upload_offset,
)
from .harness import Cluster, readyz, wait_for

pytestmark = pytest.mark.ha

MiB = 1 << 20


def test_s3_outage_during_push_and_pulls(
    cluster: Cluster, record_property: pytest.RecordProperty
) -> None:
    if cluster.s3 is None:
        pytest.skip("the storage outage is injected on S3 (moto)")
    s3 = cluster.s3
    repo = f"ha/s3out{uuid.uuid4().hex[:8]}"
    known = make_image(n_layers=2, layer_size=4 * MiB)
    size, chunk = 48 * MiB, 8 * MiB
    data = os.urandom(size)
    digest = sha256(data)
    seen: Tally[str] = Tally()

    with cluster.client() as lb:
        push_image(lb, repo, "known", known)
        location = lb.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        offset = 0
        for _ in range(2):
            r = patch_chunk(lb, location, data[offset : offset + chunk], offset)
            assert r.status_code == 202, r.text
            offset += chunk

        # The next chunk is half-way through its body when S3 goes away.
        gate = threading.Event()
        outcome: dict[str, object] = {}

        def send() -> None:
            body = paced(data[offset : offset + chunk], MiB, 3, gate)
            try:
                with cluster.client() as c:
                    outcome["status"] = c.patch(
                        location,
                        content=body,
                        headers={"Content-Range": f"{offset}-{offset + chunk - 1}"},
                    ).status_code
            except httpx.TransportError as exc:
                outcome["status"] = type(exc).__name__

        sender = threading.Thread(target=send)
        sender.start()
        assert gate.wait(60)
        s3.pause()
        try:
            gate.clear()
            sender.join(120)
            seen[f"PATCH in flight: {outcome['status']}"] += 1
            assert outcome["status"] != 202, "a chunk cannot have been stored without S3"
            for node in cluster.nodes:
                wait_for(f"{node.host} /readyz 503", lambda n=node: readyz(n.url) == 503)
            # Reads and writes while S3 is away, through HAProxy (every node is out: it
            # answers 503 itself) and straight to each node: only retryable failures.
            targets = [("LB", lb)] + [(f"node{i + 1}", cluster.client(i)) for i in range(3)]
            requests = {
                "GET blob": ("GET", f"/v2/{repo}/blobs/{known.layers[0].digest}", {}),
                "PATCH": (
                    "PATCH",
                    location,
                    {
                        "content": b"x" * 1024,
                        "headers": {"Content-Range": f"{offset}-{offset + 1023}"},
                    },
                ),
                "POST monolithic": (
                    "POST",
                    f"/v2/{repo}/blobs/uploads/",
                    {"params": {"digest": sha256(b"y")}, "content": b"y"},
                ),
            }
            for name, c in targets:
                for what, (method, url, kwargs) in requests.items():
                    try:
                        status: object = c.request(method, url, **kwargs).status_code
                    except httpx.TransportError as exc:
                        status = type(exc).__name__
                    seen[f"{what} via {name} during outage: {status}"] += 1
                    assert status in (503, "RemoteProtocolError", "ReadError"), (what, status)
                if c is not lb:
                    c.close()
        finally:
            s3.resume()
        for node in cluster.nodes:
            wait_for(f"{node.host} /readyz 200", lambda n=node: readyz(n.url) == 200)
        cluster.wait_lb({"node1": "UP", "node2": "UP", "node3": "UP"})

        # The session is where its last complete request left it; finish it.
        offset = upload_offset(lb, location)
        assert offset == 2 * chunk, offset
        assert lb.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
        while offset < size:
            r = patch_chunk(lb, location, data[offset : offset + chunk], offset)
            if r.status_code == 429:  # busy: the interrupted request's lease is running out
                threading.Event().wait(0.2)
                continue
            assert r.status_code == 202, r.text
            offset += chunk
        r = lb.put(location, params={"digest": digest})
        assert r.status_code == 201, r.text

    counters = Counters()
    for node in range(3):
        with cluster.client(node) as http:
            body, _ = get_verified(http, f"/v2/{repo}/blobs/{digest}", digest, counters)
            assert body == data
            pull_image(http, repo, "known", known, counters)
    assert counters.retries == 0
    with cluster.client() as lb:  # a push after the outage succeeds
        push_image(lb, repo, "after", make_image(n_layers=1, layer_size=MiB), chunk=3 * MiB // 2)
    report = dict(sorted(seen.items()))
    record_property("s3_outage_seen", report)
    print(f"\nS3 outage, what clients saw: {report}")
