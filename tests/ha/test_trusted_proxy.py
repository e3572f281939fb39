"""Login throttling behind the documented HAProxy (deploy/haproxy.cfg, ``option forwardfor``)
with ``http.trusted_proxies`` naming it: each client is throttled at its own address, an
attacker's failures never refuse the owner's correct password nor a robot, and parallel
correct logins through the balancer (spread over its three nodes) draw no 429 (issue 11).

The test client stands for clients behind an outer proxy: it sends X-Forwarded-For, HAProxy
appends the address it saw (127.0.0.1, trusted), and each node takes the rightmost untrusted
address — the client's.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import Cluster

LIMIT = 3
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def proxied_cluster(ha_tmp: Path) -> Iterator[Cluster]:
    env = {
        "MOORAGE_HTTP_TRUSTED_PROXIES": "127.0.0.1",
        "MOORAGE_AUTH_LOCKOUT_ACCOUNT_LIMIT": str(LIMIT),
        "MOORAGE_AUTH_LOCKOUT_DURATION": "600",
    }
    work = ha_tmp / "trusted-proxy"
    with Cluster(work, auth=True, storage="filesystem", env=env) as c:
        yield c


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token(c: Cluster, user: str, password: str, addr: str) -> httpx.Response:
    headers = {"Authorization": basic(user, password), "X-Forwarded-For": addr}
    with c.client(auth=None) as client:
        return client.get("/auth/token", params={"service": "moorage"}, headers=headers)


def test_throttling_through_haproxy(proxied_cluster: Cluster) -> None:
    c = proxied_cluster
    user = f"ha{uuid.uuid4().hex[:8]}"
    org = f"org{uuid.uuid4().hex[:8]}"
    with c.client() as admin:
        r = admin.post("/api/v1/users", json={"username": user, "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert admin.post("/api/v1/organizations", json={"name": org}).status_code == 201
        body = {"name": "ci", "access": [{"organization": org, "actions": ["pull"]}]}
        robot = admin.post(f"/api/v1/namespaces/{org}/robots", json=body).json()
    owner, attacker = "203.0.113.7", "198.51.100.66"
    assert token(c, user, PASSWORD, owner).status_code == 200

    # The attacker fails for the user and the robot well past the limit.
    statuses = [token(c, user, f"guess-{i}", attacker).status_code for i in range(3 * LIMIT)]
    assert statuses[:LIMIT] == [401] * LIMIT and 429 in statuses, statuses
    robot_statuses = {
        token(c, robot["name"], f"guess-{i}", attacker).status_code for i in range(3 * LIMIT)
    }
    assert robot_statuses == {401}

    # The owner and the robot get in, from their own addresses and from a new one.
    assert token(c, user, PASSWORD, owner).status_code == 200
    assert token(c, user, PASSWORD, "192.0.2.44").status_code == 200
    assert token(c, robot["name"], robot["secret"], attacker).status_code == 200
    # Every node saw the client's address, not HAProxy's: the attacker's address alone is
    # throttled, on whichever node answers.
    assert token(c, user, "guess-more", attacker).status_code == 429


def test_parallel_correct_logins_through_haproxy_draw_no_429(proxied_cluster: Cluster) -> None:
    c = proxied_cluster
    user = f"par{uuid.uuid4().hex[:8]}"
    with c.client() as admin:
        r = admin.post("/api/v1/users", json={"username": user, "password": PASSWORD})
        assert r.status_code == 201, r.text
    n = 32
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def attempt() -> None:
        with c.client(auth=None) as client:
            client.get("/readyz")
            barrier.wait(timeout=60)
            headers = {"Authorization": basic(user, PASSWORD), "X-Forwarded-For": "203.0.113.9"}
            statuses.append(
                client.get(
                    "/auth/token", params={"service": "moorage"}, headers=headers
                ).status_code
            )

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert sorted(statuses) == [200] * n, statuses
