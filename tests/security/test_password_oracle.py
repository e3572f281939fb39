"""The change-password endpoint must not be a password-guessing oracle outside the login
lockout: whoever holds a session or an api:write token could otherwise try old passwords
without limit, learn the password and take the account over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer
from tests.security.conftest import API, PASSWORD, expect

LIMIT = 3


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoorageServer]:
    """SQLite, a small per-account limit, a large per-address one (every test is 127.0.0.1)."""
    srv = MoorageServer(
        Path(tmp_path_factory.mktemp("strict")) / "data",
        env={
            "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MOORAGE_AUTH_LOCKOUT_ACCOUNT_LIMIT": str(LIMIT),
            "MOORAGE_AUTH_LOCKOUT_ADDRESS_LIMIT": "10000",
        },
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def _user(server: MoorageServer, name: str) -> None:
    with httpx.Client(base_url=server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        expect(c.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)


@pytest.mark.parametrize("via", ["session", "token"])
def test_old_password_guesses_count_towards_the_lockout(
    strict_server: MoorageServer, via: str
) -> None:
    name = f"victim{via}"
    _user(strict_server, name)
    with httpx.Client(base_url=strict_server.url, timeout=60) as c:
        if via == "session":
            r = c.post(f"{API}/session", json={"username": name, "password": PASSWORD})
            c.headers["X-CSRF-Token"] = expect(r, 201)["csrf_token"]
        else:
            r = c.post(
                f"{API}/users/{name}/tokens",
                json={"name": "ci", "scopes": ["api:write"]},
                auth=(name, PASSWORD),
            )
            c.headers["Authorization"] = "Bearer " + expect(r, 201)["token"]
        url = f"{API}/users/{name}/password"
        for i in range(LIMIT + 1):  # the limit, and the one check a throttled account gets
            r = c.post(
                url, json={"old_password": f"guess-{i}-wrong", "new_password": "attacker-pass-1"}
            )
            assert r.status_code == 422 and r.json()["error"]["field"] == "old_password", r.text
        # the account is now throttled from here: the next attempt is refused unchecked...
        r = c.post(url, json={"old_password": PASSWORD, "new_password": "attacker-pass-1"})
        assert r.status_code in (403, 429), r.text
    # ...and so is a login: the guesses were counted like failed logins
    r = httpx.post(
        f"{strict_server.url}{API}/session",
        json={"username": name, "password": PASSWORD},
        timeout=60,
    )
    assert r.status_code == 429, r.text


def test_a_token_is_no_old_password(strict_server: MoorageServer) -> None:
    name = "victimpat"
    _user(strict_server, name)
    with httpx.Client(base_url=strict_server.url, auth=(name, PASSWORD), timeout=60) as c:
        pat = expect(c.post(f"{API}/users/{name}/tokens", json={"name": "ci"}), 201)["token"]
    with httpx.Client(
        base_url=strict_server.url, headers={"Authorization": f"Bearer {pat}"}, timeout=60
    ) as c:
        r = c.post(
            f"{API}/users/{name}/password",
            json={"old_password": pat, "new_password": "attacker-pass-1"},
        )
        assert r.status_code == 422, r.text
    r = httpx.post(
        f"{strict_server.url}{API}/session",
        json={"username": name, "password": PASSWORD},
        timeout=60,
    )
    assert r.status_code == 201
