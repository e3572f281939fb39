"""Web sessions on the API and the UI: CSRF, fixation, logout, cookie flags, login CSRF."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import httpx

from tests.security.conftest import API, PASSWORD, Tenants, expect, login_form, page_csrf


@contextlib.contextmanager
def _api_login(tenants: Tenants, who: str) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        r = c.post(f"{API}/session", json={"username": tenants.users[who], "password": PASSWORD})
        yield c, str(expect(r, 201)["csrf_token"])


def test_cookie_changes_need_this_sessions_csrf_token(tenants: Tenants) -> None:
    user = tenants.users["outsider"]
    with (
        _api_login(tenants, "outsider") as (a, csrf_a),
        _api_login(tenants, "xmember") as (
            _b,
            csrf_b,
        ),
    ):
        expect(a.get(f"{API}/user"), 200)  # reads need no token
        change = {"display_name": "csrf-victim"}
        for headers in (
            {},
            {"X-CSRF-Token": ""},
            {"X-CSRF-Token": csrf_b},
            {"X-CSRF-Token": csrf_a + "x"},
        ):
            r = a.patch(f"{API}/users/{user}", json=change, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "CSRF_FAILED", headers
        # a form-encoded token does not count on the API, nor a query parameter
        r = a.patch(f"{API}/users/{user}?csrf_token={csrf_a}", json=change)
        assert r.status_code == 403
        assert a.delete(f"{API}/session").status_code == 403  # logout is a change too
        assert expect(a.get(f"{API}/user"), 200)["display_name"] is None
        r = a.patch(f"{API}/users/{user}", json=change, headers={"X-CSRF-Token": csrf_a})
        assert expect(r, 200)["display_name"] == "csrf-victim"


def test_ui_forms_refuse_a_token_of_another_session(tenants: Tenants) -> None:
    with (
        login_form(tenants.server, tenants.users["outsider"]) as a,
        login_form(tenants.server, tenants.users["xmember"]) as b,
    ):
        other = page_csrf(b)
        r = a.post(
            "/ui/account/tokens",
            data={"name": "csrfprobe", "scope:api:read": "on", "csrf_token": other},
        )
        assert r.status_code == 403 and "moorage_pat_" not in r.text
        r = a.post("/logout", data={"csrf_token": other})
        assert r.status_code == 403
        assert a.get("/ui/account").status_code == 200  # still signed in


def test_login_needs_the_signed_form_token(tenants: Tenants) -> None:
    """Login CSRF: a cross-site form cannot sign the victim in as the attacker."""
    user = tenants.users["outsider"]
    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        r = c.post("/login", data={"username": user, "password": PASSWORD})
        assert r.status_code == 403 and "moorage_session" not in r.cookies
        forged = "nonce.0000"
        c.cookies.set("moorage_login_csrf", forged, path="/login")
        r = c.post("/login", data={"username": user, "password": PASSWORD, "csrf_token": forged})
        assert r.status_code == 403 and "moorage_session" not in r.cookies


def test_session_fixation_and_logout(tenants: Tenants) -> None:
    user = tenants.users["outsider"]
    planted = "A" * 43
    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        c.cookies.set("moorage_session", planted)
        form = c.get("/login")
        assert form.status_code == 200  # a planted value is no session
        from tests.security.conftest import CSRF_FIELD

        m = CSRF_FIELD.search(form.text)
        assert m
        r = c.post("/login", data={"username": user, "password": PASSWORD, "csrf_token": m[1]})
        assert r.status_code == 303
        set_cookie = r.headers["set-cookie"]
        new = r.cookies["moorage_session"]
        assert new != planted and len(new) >= 40
        low = set_cookie.lower()
        assert "httponly" in low and "samesite=lax" in low and "path=/" in low
        c.cookies.clear()
        c.cookies.set("moorage_session", new)
        csrf = page_csrf(c)
        r = c.post("/logout", data={"csrf_token": csrf})
        assert r.status_code == 303
    # the old cookie value is dead on the server, not just dropped by the browser
    with httpx.Client(
        base_url=tenants.server.url, cookies={"moorage_session": new}, timeout=60
    ) as c:
        assert c.get(f"{API}/user").status_code == 401
        assert c.get("/ui/account").status_code == 303


def test_api_logout_ends_the_session_server_side(tenants: Tenants) -> None:
    with _api_login(tenants, "outsider") as (c, csrf):
        cookie = c.cookies["moorage_session"]
        assert c.delete(f"{API}/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    with httpx.Client(
        base_url=tenants.server.url, cookies={"moorage_session": cookie}, timeout=60
    ) as c:
        assert c.get(f"{API}/user").status_code == 401


def test_basic_credentials_do_not_open_ui_pages(tenants: Tenants) -> None:
    with tenants.client("sysadmin") as c:
        r = c.get("/ui/users")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        r = c.post("/ui/users", data={"username": "viabasic", "password": "long-password-1"})
        assert r.status_code == 403


def test_the_registry_protocol_ignores_the_session_cookie(tenants: Tenants) -> None:
    """/v2 and /auth/token have no CSRF check, so a browser's cookie must not authenticate
    there (else a cross-site form could delete or push with the victim's rights)."""
    x = tenants.org["x"]
    with _api_login(tenants, "xadmin") as (c, _csrf):
        assert c.get(f"/v2/{x}/app/tags/list").status_code == 401
        r = c.delete(f"/v2/{x}/app/manifests/{tenants.digest['x']}")
        assert r.status_code == 401
        r = c.get("/auth/token", params={"scope": f"repository:{x}/app:pull,push,delete"})
        assert r.status_code in (200, 401)
        if r.status_code == 200:
            assert r.json().get("scope", "") == "" or "push" not in r.json()["scope"]
            token = r.json()["token"]
            with tenants.bearer(token) as b:
                assert b.get(f"/v2/{x}/app/tags/list").status_code in (401, 403)
    with tenants.client("xadmin") as c:
        tags = expect(c.get(f"{API}/repositories/{x}/app/-/tags"), 200)["items"]
        assert [t["name"] for t in tags] == ["v1"]


def test_api_login_cannot_be_forged_by_a_cross_site_form(tenants: Tenants) -> None:
    """A cross-site HTML form can post text/plain or form bodies, never application/json
    (that needs a CORS preflight this server never grants)."""
    body = json.dumps({"username": tenants.users["outsider"], "password": PASSWORD})
    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            r = c.post(
                f"{API}/session",
                content=body,
                headers={"content-type": ctype, "origin": "https://evil.example"},
            )
            assert r.status_code == 400 and "moorage_session" not in r.cookies, ctype
        r = c.options(
            f"{API}/session",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in r.headers
