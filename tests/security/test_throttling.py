"""Lockout as a weapon (issue 11): failed logins throttle, they never lock anyone out.

Each server here trusts 127.0.0.1 as its proxy (``http.trusted_proxies``), so a test client
plays a client at any address by sending ``X-Forwarded-For`` — as clients behind the proxies
of a real deployment appear (tests/ha/test_trusted_proxy.py runs the same through HAProxy).
A server without the setting ignores the header: a client cannot choose its address.

On SQLite and PostgreSQL (the counters are SQL upserts shared by every node).
"""

from __future__ import annotations

import base64
import contextlib
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, admin_cli, postgres_database
from tests.security.conftest import API, PASSWORD, expect

ACCOUNT_LIMIT = 3
ADDRESS_LIMIT = 6
INTERVAL = 600  # one throttled check per 10 minutes: out of reach of a test run
ATTACKER = "198.51.100.66"
OWNER = "203.0.113.7"


@contextlib.contextmanager
def throttle_server(backend: tuple[str, str | None], **env: str) -> Iterator[MoorageServer]:
    base = {
        "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MOORAGE_AUTH_LOCKOUT_ACCOUNT_LIMIT": str(ACCOUNT_LIMIT),
        "MOORAGE_AUTH_LOCKOUT_ADDRESS_LIMIT": str(ADDRESS_LIMIT),
        "MOORAGE_AUTH_LOCKOUT_DURATION": str(INTERVAL),
        "MOORAGE_AUTH_LOCKOUT_WINDOW": "3600",
        **env,
    }
    with tempfile.TemporaryDirectory(prefix="moorage-throttle-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            srv = MoorageServer(Path(tmp) / "data", database_url=url, env=base).start()
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture(scope="module")
def proxied(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with throttle_server(backend, MOORAGE_HTTP_TRUSTED_PROXIES="127.0.0.1") as srv:
        yield srv


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def login(server: MoorageServer, user: str, password: str, addr: str | None) -> httpx.Response:
    headers = {"Authorization": basic(user, password)}
    if addr:
        headers["X-Forwarded-For"] = addr
    return httpx.get(
        f"{server.url}/auth/token",
        params={"service": "moorage", "scope": "repository:x/y:pull"},
        headers=headers,
        timeout=120,
    )


def v2(server: MoorageServer, user: str, password: str, addr: str) -> int:
    headers = {"Authorization": basic(user, password), "X-Forwarded-For": addr}
    return httpx.get(f"{server.url}/v2/", headers=headers, timeout=60).status_code


def new_user(server: MoorageServer) -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    admin_cli(server, "create-user", name, "--password-stdin", stdin=PASSWORD + "\n")
    return name


def fail(server: MoorageServer, user: str, addr: str, times: int) -> list[int]:
    return [login(server, user, f"guess-{i}", addr).status_code for i in range(times)]


def test_guesses_from_elsewhere_never_refuse_the_owner(proxied: MoorageServer) -> None:
    user = new_user(proxied)
    assert login(proxied, user, PASSWORD, OWNER).status_code == 200  # the owner's usual address

    statuses = fail(proxied, user, ATTACKER, 3 * ACCOUNT_LIMIT)
    assert statuses[:ACCOUNT_LIMIT] == [401] * ACCOUNT_LIMIT
    # Past the limit the attacker is throttled: one check, then 429s without a check.
    assert 429 in statuses[ACCOUNT_LIMIT:], statuses
    r = login(proxied, user, "guess-again", ATTACKER)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0

    # The owner is never refused, from their address or a new one, on every way in.
    assert login(proxied, user, PASSWORD, OWNER).status_code == 200
    assert v2(proxied, user, PASSWORD, OWNER) == 200
    assert login(proxied, user, PASSWORD, "192.0.2.99").status_code == 200


def test_a_correct_password_gets_through_from_the_attackers_own_address(
    proxied: MoorageServer,
) -> None:
    """Throttled is not locked: the next check is the owner's, and it succeeds."""
    user = new_user(proxied)
    addr = "198.51.100.10"
    assert fail(proxied, user, addr, ACCOUNT_LIMIT) == [401] * ACCOUNT_LIMIT
    assert login(proxied, user, PASSWORD, addr).status_code == 200


def test_robots_are_never_throttled(proxied: MoorageServer) -> None:
    with httpx.Client(base_url=proxied.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a:
        org = f"o{uuid.uuid4().hex[:8]}"
        expect(a.post(f"{API}/organizations", json={"name": org}), 201)
        body = {"name": "ci", "access": [{"organization": org, "actions": ["pull"]}]}
        robot = expect(a.post(f"{API}/namespaces/{org}/robots", json=body), 201)
    name, secret = robot["name"], robot["secret"]
    # An outsider fails 4x the limit with the robot's name, from CI's own address too.
    for addr in (ATTACKER, OWNER):
        assert set(fail(proxied, name, addr, 4 * ACCOUNT_LIMIT)) == {401}
    assert login(proxied, name, secret, OWNER).status_code == 200
    assert v2(proxied, name, secret, ATTACKER) == 200


def test_spraying_from_one_address_does_not_refuse_its_known_users(
    proxied: MoorageServer,
) -> None:
    """Behind a shared address (an office NAT), one sprayer throttles the address for new
    attempts; accounts that logged in from it before still get in."""
    shared = "192.0.2.50"
    regular = new_user(proxied)
    assert login(proxied, regular, PASSWORD, shared).status_code == 200
    for _ in range(ADDRESS_LIMIT):
        assert (
            login(proxied, f"nobody{uuid.uuid4().hex[:8]}", "x-guess-1", shared).status_code == 401
        )
    sprayed = [
        login(proxied, f"nobody{uuid.uuid4().hex[:8]}", "x-guess-2", shared).status_code
        for _ in range(3)
    ]
    assert 429 in sprayed, sprayed
    assert login(proxied, regular, PASSWORD, shared).status_code == 200
    assert v2(proxied, regular, PASSWORD, shared) == 200


def test_parallel_correct_logins_draw_no_429(proxied: MoorageServer) -> None:
    user = new_user(proxied)
    n = 32
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def attempt() -> None:
        with httpx.Client(base_url=proxied.url, timeout=180) as c:
            c.get("/healthz")
            barrier.wait(timeout=60)
            r = c.get(
                "/auth/token",
                params={"service": "moorage"},
                headers={"Authorization": basic(user, PASSWORD), "X-Forwarded-For": OWNER},
            )
            statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert sorted(statuses) == [200] * n, statuses


def test_parallel_guesses_are_checked_at_most_limit_plus_one_times(
    proxied: MoorageServer,
) -> None:
    user = new_user(proxied)
    n = 4 * ACCOUNT_LIMIT
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def attempt(i: int) -> None:
        with httpx.Client(base_url=proxied.url, timeout=180) as c:
            c.get("/healthz")
            barrier.wait(timeout=60)
            headers = {"Authorization": basic(user, f"guess-{i}"), "X-Forwarded-For": ATTACKER}
            r = c.get("/auth/token", params={"service": "moorage"}, headers=headers)
            statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert len(statuses) == n and set(statuses) <= {401, 429}, statuses
    # Each 401 is a password really tried: the limit, plus the throttle's one slot.
    assert statuses.count(401) <= ACCOUNT_LIMIT + 1, statuses


def test_forwarded_for_is_ignored_without_trusted_proxies(backend: tuple[str, str | None]) -> None:
    """Rotating X-Forwarded-For must not buy a fresh address from a server that trusts no
    proxy (uvicorn's default trusted 127.0.0.1: every local client could choose its address)."""
    with throttle_server(backend) as srv:
        user = new_user(srv)
        statuses = [
            login(srv, user, f"guess-{i}", f"10.0.{i}.1").status_code
            for i in range(3 * ACCOUNT_LIMIT)
        ]
        assert 429 in statuses, statuses
