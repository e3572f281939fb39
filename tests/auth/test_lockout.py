"""Brute-force protection against a real server (SQLite and PostgreSQL).

Every failed password login (wrong password, unknown account) counts against the account (from
this address, and from anywhere) and against the client address; past
``auth.lockout.account_limit`` / ``address_limit`` failures within ``window`` seconds the key is
throttled: one password check per ``duration`` seconds (a correct password then gets in), other
attempts answered 429 TOOMANYREQUESTS unchecked, on ``/auth/token`` and on ``/v2`` (Basic).

Failures for accounts that do not exist are counted and answered exactly like the others, so
neither the answers nor their timing tell whether an account exists.

Every client here connects from 127.0.0.1, so the address counter is shared by all the tests of
one server: each scenario runs on a server of its own, configured (through ``MOORAGE_AUTH_LOCKOUT_*``)
so that only the limit under test can be reached.
"""

from __future__ import annotations

import base64
import contextlib
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.test_access import PASSWORD, admin_cli
from tests.conftest import ADMIN_PASSWORD, MoorageServer, postgres_database

DURATION = 10  # seconds between checks of a throttled account (long enough for a loaded CI machine)
ACCOUNT_LIMIT = 3
ADDRESS_LIMIT = 5
TOKEN_QUERY = {"service": "moorage", "scope": "repository:nobody/x:pull"}
# Headers a client acts on; Date, X-Request-Id and the like legitimately differ per response.
HEADERS_THAT_MATTER = (
    "content-type",
    "content-length",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "docker-distribution-api-version",
)


@contextlib.contextmanager
def lockout_server(backend: tuple[str, str | None], **lockout: int) -> Iterator[MoorageServer]:
    """A server with access control on, its own database, and the given ``auth.lockout.*``."""
    env = {"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    env.update({f"MOORAGE_AUTH_LOCKOUT_{k.upper()}": str(v) for k, v in lockout.items()})
    with tempfile.TemporaryDirectory(prefix="moorage-lockout-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as own_url:
            srv = MoorageServer(Path(tmp) / "data", database_url=own_url, env=env).start()
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture(scope="module")
def account_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """Account limit ACCOUNT_LIMIT; the address limit is out of reach."""
    with lockout_server(
        backend, account_limit=ACCOUNT_LIMIT, address_limit=10_000, window=60, duration=DURATION
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def address_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """Address limit ADDRESS_LIMIT; the account limit is out of reach."""
    with lockout_server(
        backend, account_limit=10_000, address_limit=ADDRESS_LIMIT, window=60, duration=DURATION
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def timing_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """No limit within reach: every attempt below really checks a password."""
    with lockout_server(backend, account_limit=10_000, address_limit=10_000) as srv:
        yield srv


def new_user(server: MoorageServer, prefix: str = "u") -> str:
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin_cli(server, "create-user", name, "--password-stdin", stdin=PASSWORD + "\n")
    return name


def unknown_name(prefix: str = "ghost") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def token_get(server: MoorageServer, username: str, password: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/auth/token",
        params=TOKEN_QUERY,
        headers=basic(username, password),
        timeout=60,
    )


def token_post(server: MoorageServer, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/auth/token",
        data={
            "grant_type": "password",
            "username": username,
            "password": password,
            "service": "moorage",
            "scope": TOKEN_QUERY["scope"],
            "client_id": "moorage-tests",
        },
        timeout=60,
    )


def v2_basic(server: MoorageServer, username: str, password: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v2/", headers=basic(username, password), timeout=60)


def code_of(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


def shape(r: httpx.Response) -> tuple[int, dict[str, str | None], bytes]:
    """What a client can tell a response by: status, the headers that matter, the body."""
    return r.status_code, {h: r.headers.get(h) for h in HEADERS_THAT_MATTER}, r.content


def assert_locked(r: httpx.Response, where: str) -> None:
    assert r.status_code == 429, f"{where}: {r.status_code} {r.text}"
    assert code_of(r) == "TOOMANYREQUESTS", f"{where}: {r.text}"


def fail_until_locked(server: MoorageServer, username: str, limit: int) -> float:
    """Make *limit* failed logins for *username*; return when the last one was answered."""
    for i in range(limit):
        r = token_get(server, username, f"wrong-password-{i}")
        assert r.status_code == 401, f"attempt {i + 1}: {r.status_code} {r.text}"
        assert code_of(r) == "UNAUTHORIZED"
    return time.monotonic()


def wait_until(deadline: float) -> None:
    pause = deadline - time.monotonic()
    if pause > 0:
        time.sleep(pause)


# --- account throttling --------------------------------------------------------------------
# (Policy: moorage/auth/throttle.py. Past a limit, one password check per DURATION seconds is
# still made — a correct password then gets in — and attempts in between are refused unchecked.
# More scenarios, with clients at several addresses: tests/security/test_throttling.py.)


def test_account_throttled_after_limit_and_the_right_password_still_gets_in(
    account_server: MoorageServer,
) -> None:
    user = new_user(account_server)
    assert token_get(account_server, user, PASSWORD).status_code == 200
    fail_until_locked(account_server, user, ACCOUNT_LIMIT)

    # Throttled, not locked: the next check is made, and the right password succeeds.
    assert token_get(account_server, user, PASSWORD).status_code == 200
    # That success forgets this address's failures for the account; failing up to the limit
    # again throttles it again: one more check (401), then 429 unchecked, on every way in,
    # with a Retry-After.
    fail_until_locked(account_server, user, ACCOUNT_LIMIT)
    assert token_get(account_server, user, "wrong-again").status_code in (401, 429)
    r = token_get(account_server, user, "wrong-once-more")
    assert_locked(r, "GET /auth/token")
    throttled_at = time.monotonic()
    assert int(r.headers["Retry-After"]) > 0
    assert_locked(token_post(account_server, user, "wrong"), "POST /auth/token")
    assert_locked(v2_basic(account_server, user, "wrong"), "/v2 Basic")
    assert time.monotonic() - throttled_at < DURATION, "too slow to observe the throttle"

    # Other accounts are not affected by this one's throttle.
    other = new_user(account_server)
    assert token_get(account_server, other, PASSWORD).status_code == 200

    # After DURATION the next check is made again, and the right password gets in.
    wait_until(throttled_at + DURATION + 0.5)
    assert v2_basic(account_server, user, PASSWORD).status_code == 200


def test_v2_basic_failures_count_too(account_server: MoorageServer) -> None:
    user = new_user(account_server)
    for i in range(ACCOUNT_LIMIT + 1):
        r = v2_basic(account_server, user, f"wrong-{i}")
        assert r.status_code == 401, r.text  # the last one used the throttle's slot
    assert_locked(token_get(account_server, user, "wrong"), "GET /auth/token")


def test_unknown_account_is_throttled_identically(account_server: MoorageServer) -> None:
    """No user enumeration through the throttle: an account that does not exist is counted,
    throttled and answered exactly like one that does."""
    user, ghost = new_user(account_server), unknown_name()
    for i in range(ACCOUNT_LIMIT + 1):
        real = token_get(account_server, user, f"wrong-{i}")
        fake = token_get(account_server, ghost, f"wrong-{i}")
        assert real.status_code == 401
        assert shape(real) == shape(fake), f"attempt {i + 1}"
    for send, where in (
        (token_get, "GET /auth/token"),
        (token_post, "POST /auth/token"),
        (v2_basic, "/v2 Basic"),
    ):
        real = send(account_server, user, "wrong")
        fake = send(account_server, ghost, "wrong")
        assert_locked(real, where)
        assert_locked(fake, where)
        real.headers["retry-after"] = fake.headers["retry-after"] = "-"  # seconds left differ
        assert shape(real) == shape(fake), where


def test_concurrent_attempts_do_not_exceed_the_limit(account_server: MoorageServer) -> None:
    user = new_user(account_server)
    attempts = 4 * ACCOUNT_LIMIT
    barrier = threading.Barrier(attempts)
    statuses: list[int] = []

    def attempt(i: int) -> None:
        with httpx.Client(base_url=account_server.url, timeout=120) as c:
            c.get("/healthz")  # connect first, so that the guesses leave together
            barrier.wait(timeout=60)
            r = c.get("/auth/token", params=TOKEN_QUERY, headers=basic(user, f"guess-{i}"))
            statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    if sorted(set(statuses)) not in ([401], [401, 429]) or len(statuses) != attempts:
        pytest.fail(f"unexpected answers: {statuses}")  # not the bug this test is about
    checked = statuses.count(401)  # each 401 is a password that was really tried
    assert checked <= ACCOUNT_LIMIT + 1, (
        f"{checked} of {attempts} concurrent guesses were checked; the limit is "
        f"{ACCOUNT_LIMIT} plus one throttled check"
    )


# --- address throttling ----------------------------------------------------------------------


def test_address_limit_trips_with_many_usernames(address_server: MoorageServer) -> None:
    regular, newcomer = new_user(address_server), new_user(address_server)
    assert token_get(address_server, regular, PASSWORD).status_code == 200
    for i in range(ADDRESS_LIMIT):  # each name fails once: far below the account limit
        r = token_get(address_server, unknown_name(f"spray{i}x"), "guess-123")
        assert r.status_code == 401, f"attempt {i + 1}: {r.status_code} {r.text}"
    assert token_get(address_server, unknown_name("slot"), "guess-123").status_code == 401
    throttled_at = time.monotonic()

    # New attempts from this address wait for the next slot: a fresh name, and an account
    # that never logged in from here...
    assert_locked(token_get(address_server, unknown_name("fresh"), "guess-123"), "fresh name")
    assert_locked(token_get(address_server, newcomer, PASSWORD), "GET /auth/token")
    assert_locked(v2_basic(address_server, newcomer, PASSWORD), "/v2 Basic")
    # ... while an account that did log in from here before is not held back by the sprayer.
    assert token_get(address_server, regular, PASSWORD).status_code == 200
    assert v2_basic(address_server, regular, PASSWORD).status_code == 200
    assert time.monotonic() - throttled_at < DURATION, "too slow to observe the throttle"

    wait_until(throttled_at + DURATION + 0.5)
    assert token_get(address_server, newcomer, PASSWORD).status_code == 200


# --- no enumeration through messages or timing ---------------------------------------------


def test_wrong_password_and_unknown_user_answers_are_byte_identical(
    timing_server: MoorageServer,
) -> None:
    server = timing_server  # no limit within reach: every answer here is a real refusal
    user = new_user(server)
    robotish = f"{unknown_name('org')}+{unknown_name('robot')}"  # robot-shaped, also unknown
    for send, where in (
        (token_get, "GET /auth/token"),
        (token_post, "POST /auth/token"),
        (v2_basic, "/v2 Basic"),
    ):
        wrong = send(server, user, "not-the-password")
        assert wrong.status_code == 401, f"{where}: {wrong.text}"
        for other in (unknown_name(), robotish):
            unknown = send(server, other, "not-the-password")
            assert unknown.content == wrong.content, where
            assert shape(unknown) == shape(wrong), where


def _timed(client: httpx.Client, username: str, password: str) -> float:
    start = time.perf_counter()
    r = client.get("/auth/token", params=TOKEN_QUERY, headers=basic(username, password))
    elapsed = time.perf_counter() - start
    assert r.status_code == 401, r.text
    return elapsed


def test_unknown_user_costs_as_much_as_a_wrong_password(timing_server: MoorageServer) -> None:
    """Coarse: the medians of 8 wrong-password and 8 unknown-user logins are within 50% of
    each other (an unknown user still gets a full argon2 verification). Noise is handled by
    interleaving the two kinds, comparing medians, and allowing up to three rounds."""
    user = new_user(timing_server)
    ghost = unknown_name()
    verdicts = []
    with httpx.Client(base_url=timing_server.url, timeout=60) as c:
        for _ in range(2):  # warm up the connection and both code paths
            _timed(c, user, "warm-up-password")
            _timed(c, ghost, "warm-up-password")
        for _round in range(3):
            existing, missing = [], []
            for i in range(8):
                existing.append(_timed(c, user, f"wrong-password-{i}"))
                missing.append(_timed(c, ghost, f"wrong-password-{i}"))
            a, b = statistics.median(existing), statistics.median(missing)
            verdicts.append((round(a * 1000, 1), round(b * 1000, 1)))
            if abs(a - b) < 0.5 * max(a, b):
                return
    pytest.fail(f"median ms (existing, unknown) per round differ by 50% or more: {verdicts}")
