"""A password change or reset, and disabling an account, void what the old credentials obtained:
bearer JWTs, refresh (offline) tokens and the other web sessions (``users.token_version``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer
from tests.security.conftest import API, PASSWORD, expect, login_form, page_csrf

NEW_PASSWORD = "another-horse-battery"


@pytest.fixture
def user(auth_server: MoorageServer) -> Iterator[str]:
    name = f"ep{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        expect(c.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
        yield name


def offline_login(server: MoorageServer, name: str, password: str) -> dict[str, Any]:
    """Access and refresh tokens, as ``docker login`` with an identity token obtains them."""
    r = httpx.post(
        f"{server.url}/auth/token",
        data={
            "grant_type": "password",
            "username": name,
            "password": password,
            "access_type": "offline",
            "service": "moorage",
            "scope": f"repository:{name}/app:pull,push",
        },
        timeout=60,
    )
    body: dict[str, Any] = expect(r, 200)
    assert body["refresh_token"]
    return body


def refresh(server: MoorageServer, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "service": "moorage"},
        timeout=60,
    )


def bearer_status(server: MoorageServer, token: str) -> int:
    r = httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return r.status_code


def change_own_password(server: MoorageServer, name: str) -> None:
    with httpx.Client(base_url=server.url, auth=(name, PASSWORD), timeout=60) as c:
        body = {"old_password": PASSWORD, "new_password": NEW_PASSWORD}
        expect(c.post(f"{API}/users/{name}/password", json=body), 204)


def test_password_change_voids_refresh_and_bearer_tokens(
    auth_server: MoorageServer, user: str
) -> None:
    old = offline_login(auth_server, user, PASSWORD)
    assert bearer_status(auth_server, old["access_token"]) == 200
    expect(refresh(auth_server, old["refresh_token"]), 200)

    change_own_password(auth_server, user)

    assert bearer_status(auth_server, old["access_token"]) == 401
    expect(refresh(auth_server, old["refresh_token"]), 401)
    # The new password works, and what it obtains works.
    new = offline_login(auth_server, user, NEW_PASSWORD)
    assert bearer_status(auth_server, new["access_token"]) == 200
    refreshed = expect(refresh(auth_server, new["refresh_token"]), 200)
    assert bearer_status(auth_server, refreshed["access_token"]) == 200


@pytest.mark.parametrize(
    "changes",
    [[{"password": NEW_PASSWORD}], [{"disabled": True}, {"disabled": False}]],
    ids=["reset", "disable-enable"],
)
def test_admin_reset_and_disabling_void_tokens(
    auth_server: MoorageServer, user: str, changes: list[dict[str, Any]]
) -> None:
    old = offline_login(auth_server, user, PASSWORD)
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        for change in changes:
            expect(c.patch(f"{API}/users/{user}", json=change), 200)
    # Re-enabled (or reset), the account works again, but not with the tokens of before.
    expect(refresh(auth_server, old["refresh_token"]), 401)
    assert bearer_status(auth_server, old["access_token"]) == 401
    password = NEW_PASSWORD if "password" in changes[0] else PASSWORD
    fresh = offline_login(auth_server, user, password)
    assert bearer_status(auth_server, fresh["access_token"]) == 200


def test_password_change_ends_the_other_sessions_only(
    auth_server: MoorageServer, user: str
) -> None:
    with (
        login_form(auth_server, user) as other,
        httpx.Client(base_url=auth_server.url, timeout=60) as api,
    ):
        csrf = expect(
            api.post(f"{API}/session", json={"username": user, "password": PASSWORD}), 201
        )["csrf_token"]
        body = {"old_password": PASSWORD, "new_password": NEW_PASSWORD}
        r = api.post(f"{API}/users/{user}/password", json=body, headers={"X-CSRF-Token": csrf})
        expect(r, 204)
        expect(api.get(f"{API}/user"), 200)  # the session that made the change stays
        assert other.get("/ui/account").status_code == 303  # the other one has ended


def test_ui_password_change_keeps_its_own_session(auth_server: MoorageServer, user: str) -> None:
    with login_form(auth_server, user) as other, login_form(auth_server, user) as ui:
        r = ui.post(
            "/ui/account/password",
            data={
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "csrf_token": page_csrf(ui),
            },
        )
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/account")
        assert ui.get("/ui/account").status_code == 200
        assert other.get("/ui/account").status_code == 303
