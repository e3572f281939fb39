"""Single sign-on end to end: a real ``moorage serve`` with ``auth.oidc`` pointed at a real
OpenID provider (oidc-provider 9 on loopback), driven by headless Debian Chromium through
Playwright. A person signs in at the provider, lands in Moorage's UI with teams mapped from
their groups, creates a personal access token in the UI and pushes with it from skopeo; a
provider account named like a local Moorage account is refused (never taken over)."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM, launch_chromium
from tests.clients.harness import Skopeo
from tests.conftest import ADMIN_PASSWORD, MoorageServer, admin_cli, free_port
from tests.ui.conftest import shot, skopeo_push

from .conftest import CLIENT_ID, CLIENT_SECRET, USERS, OpenIDProvider, openid_provider

ORG = "acme"


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MoorageServer, OpenIDProvider]]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/auth/oidc/callback"
    with (
        openid_provider(tmp_path_factory.mktemp("sso"), redirect_uri=callback) as op,
        tempfile.TemporaryDirectory(prefix="moorage-sso-") as tmp,
    ):
        srv = MoorageServer(
            Path(tmp) / "data",
            port=port,
            env={
                "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MOORAGE_AUTH_OIDC_ENABLED": "true",
                "MOORAGE_AUTH_OIDC_ISSUER": op.issuer,
                "MOORAGE_AUTH_OIDC_CLIENT_ID": CLIENT_ID,
                "MOORAGE_AUTH_OIDC_CLIENT_SECRET": CLIENT_SECRET,
                "MOORAGE_AUTH_OIDC_DISPLAY_NAME": "Test IdP",
                "MOORAGE_AUTH_OIDC_GROUP_TEAM_MAP": json.dumps(
                    {"moorage-admins": f"{ORG}/admins", "Platform": f"{ORG}/platform"}
                ),
            },
        ).start()
        try:
            admin_cli(srv, "create-org", ORG)
            admin_cli(srv, "create-team", ORG, "admins")
            admin_cli(srv, "grant", "admin", ORG, "--team", f"{ORG}/admins")
            admin_cli(srv, "create-user", "carol", "--password-stdin", stdin="carol-local-pw-1\n")
            yield srv, op
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


def _sso_login(page: Any, server: MoorageServer, op: OpenIDProvider, user: str) -> None:
    """From Moorage's login page through the provider's sign-in and consent pages."""
    page.goto("/ui/account")
    assert "/login" in page.url
    page.click("#sso-login")
    page.wait_for_url(lambda url: url.startswith(op.issuer))
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", str(USERS[user]["password"]))
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.url.startswith(op.issuer) and page.locator("text=Authorize").count():
        page.click("button[type=submit]")  # consent
    page.wait_for_url(lambda url: url.startswith(server.url))


def _team(server: MoorageServer, team: str) -> dict[str, Any]:
    r = httpx.get(
        f"{server.url}/api/v1/organizations/{ORG}/teams/{team}",
        auth=("admin", ADMIN_PASSWORD),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sign_in_teams_from_groups_and_a_token_for_skopeo(
    sso: tuple[MoorageServer, OpenIDProvider], browser: Any, skopeo: Skopeo
) -> None:
    server, op = sso
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    try:
        page.goto("/login")
        assert page.locator("#sso-login").inner_text() == "Sign in with Test IdP"
        _sso_login(page, server, op, "alice")
        # Back where she was going, signed in as herself.
        assert page.url == f"{server.url}/ui/account", page.url
        assert page.locator(".account .who").inner_text().startswith("alice")
        cookies = {c["name"]: c for c in context.cookies()}
        assert "moorage_session" in cookies and "moorage_oidc" not in cookies
        shot(page, "sso-01-signed-in")
        # Her groups are teams: moorage-admins → acme/admins (granted admin on acme by the
        # operator), Platform → acme/platform (created at her first sign-in).
        assert "alice" in _team(server, "admins")["members"]
        platform = _team(server, "platform")
        assert platform["members"] == ["alice"] and platform["source"] == "oidc"
        page.goto(f"/ui/organizations/{ORG}")
        assert page.locator("#team-table", has_text="platform").count() == 1
        # A personal access token from the UI, for the command line.
        page.goto("/ui/account")
        assert "no Moorage password" in page.content()
        page.fill("input[name=name]", "laptop")
        page.check("input[name='scope:registry:push']")
        page.click("form[action='/ui/account/tokens'] button[type=submit]")
        token = page.locator("#secret-value").inner_text()
        shot(page, "sso-02-token")
    finally:
        context.close()
    repo = f"{ORG}/sso-{uuid.uuid4().hex[:6]}"
    skopeo_push(skopeo, server, repo, "1.0", f"alice:{token}", multiarch=False)
    tags = httpx.get(f"{server.url}/v2/{repo}/tags/list", auth=("alice", token), timeout=30)
    assert tags.status_code == 200 and tags.json()["tags"] == ["1.0"]
    # Without a token, the account has no password to log in with.
    assert (
        httpx.get(f"{server.url}/v2/{repo}/tags/list", auth=("alice", "x" * 12)).status_code == 401
    )
    # The sign-in is in the audit log, as a login via oidc.
    events = httpx.get(
        f"{server.url}/api/v1/audit",
        params={"actor": "alice", "action": "login"},
        auth=("admin", ADMIN_PASSWORD),
    ).json()["events"]
    assert any(e["details"].get("via") == "oidc" for e in events), events


def test_a_local_account_is_never_taken_over(
    sso: tuple[MoorageServer, OpenIDProvider], browser: Any
) -> None:
    server, op = sso
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    try:
        _sso_login(page, server, op, "carol")
        assert "/ui/" not in page.url
        error = page.locator(".flash.error").inner_text()
        assert "belongs to another account" in error, error
        assert "moorage_session" not in {c["name"] for c in context.cookies()}
    finally:
        context.close()
    # Carol's local account still signs in with its own password and stays local.
    r = httpx.get(
        f"{server.url}/api/v1/users/carol", auth=("admin", ADMIN_PASSWORD), timeout=30
    ).json()
    assert r["source"] == "local"
    assert (
        httpx.get(f"{server.url}/api/v1/user", auth=("carol", "carol-local-pw-1")).json()[
            "username"
        ]
        == "carol"
    )


def test_a_callback_without_its_login_is_refused(
    sso: tuple[MoorageServer, OpenIDProvider],
) -> None:
    server, _op = sso
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/auth/oidc/callback", params={"code": "stolen", "state": "guessed"})
        assert r.status_code == 400 and "expired or was started in another browser" in r.text
        assert "moorage_session" not in c.cookies
        # A tampered sealed cookie is no better.
        c.cookies.set("moorage_oidc", "A" * 120, path="/auth/oidc")
        r = c.get("/auth/oidc/callback", params={"code": "x", "state": "y"})
        assert r.status_code == 400
        # The start sets the sealed cookie and sends the browser to the provider with PKCE.
        c.cookies.clear()
        r = c.get("/auth/oidc/login", params={"next": "https://evil.example/"})
        assert r.status_code == 303 and "code_challenge_method=S256" in r.headers["location"]
        (sealed,) = [k for k in c.cookies.jar if k.name == "moorage_oidc"]
        assert sealed.path == "/auth/oidc" and sealed.value
        state = r.headers["location"].split("state=")[1].split("&")[0]
        assert state not in (sealed.value or "")  # sealed: nothing readable in it
