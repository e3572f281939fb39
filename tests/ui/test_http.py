"""The web UI over plain HTTP: headers, redirects, CSRF refusals, escaping, sessions, 404s."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.clients.ocigen import OCI_MANIFEST
from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    free_port,
    image_manifest,
    own_auth_server,
    put_manifest,
    sha256,
    stop_process,
)
from tests.test_operation import _self_signed, _start_raw

from .conftest import csrf_from, login_http

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def assert_secure_headers(r: httpx.Response) -> None:
    assert r.headers.get("content-security-policy") == CSP, r.headers
    assert r.headers.get("x-content-type-options") == "nosniff"
    assert r.headers.get("referrer-policy") == "same-origin"


@pytest.fixture
def anon(ui_server: MoorageServer) -> httpx.Client:
    with httpx.Client(base_url=ui_server.url, timeout=60) as c:
        yield c


@pytest.fixture
def admin(ui_server: MoorageServer) -> httpx.Client:
    with login_http(ui_server) as c:
        yield c


def test_anonymous_visitors_are_sent_to_the_login_form(anon: httpx.Client) -> None:
    r = anon.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert_secure_headers(r)
    r = anon.get("/ui/organizations?q=x")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/ui/organizations%3Fq%3Dx"
    page = anon.get("/login")
    assert page.status_code == 200
    assert_secure_headers(page)
    assert 'name="username"' in page.text and 'name="password"' in page.text
    cookie = page.headers["set-cookie"].lower()
    assert "moorage_login_csrf=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_anonymous_visitors_browse_public_repositories(
    ui_server: MoorageServer, anon: httpx.Client
) -> None:
    """auth.anonymous_access (default on): public repositories read without login; private
    and missing ones alike lead to the login form; no management form is offered."""
    suffix = hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:8]
    pub, priv = f"admin/pub{suffix}", f"admin/priv{suffix}"
    with httpx.Client(base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        payload = image_manifest(c, pub)
        assert put_manifest(c, pub, "v1", payload).status_code == 201
        assert put_manifest(c, priv, "v1", image_manifest(c, priv)).status_code == 201
        r = c.patch(f"/api/v1/repositories/{pub}", json={"visibility": "public"})
        assert r.status_code == 200, r.text
    listing = anon.get("/ui/repositories", params={"namespace": "admin"})
    assert listing.status_code == 200
    assert_secure_headers(listing)
    assert f">{pub}</a>" in listing.text and priv not in listing.text
    assert 'href="/login?next=/ui/repositories%3Fnamespace%3Dadmin">Sign in</a>' in listing.text
    assert "Sign out" not in listing.text and 'name="csrf_token"' not in listing.text
    repo = anon.get(f"/ui/repositories/{pub}")
    assert repo.status_code == 200 and "v1" in repo.text and "docker pull" in repo.text
    assert 'method="post"' not in repo.text  # no settings, permissions or delete buttons
    image = anon.get(f"/ui/repositories/{pub}/manifests/{sha256(payload)}")
    assert image.status_code == 200 and "Layers" in image.text
    for hidden in (priv, "admin/does-not-exist", "nobody/nothing"):
        for page in (
            f"/ui/repositories/{hidden}",
            f"/ui/repositories/{hidden}/manifests/{sha256(payload)}",
        ):
            r = anon.get(page)
            assert r.status_code == 303, (page, r.status_code)
            assert r.headers["location"] == "/login?next=" + quote(page, safe="/")
    # Changes still need a session (and its CSRF token).
    r = anon.post(f"/ui/repositories/{pub}/delete")
    assert r.status_code == 403 and "Sign in again" in r.text
    assert anon.get("/").headers["location"] == "/login"


def test_basic_credentials_do_not_sign_in_to_the_ui(anon: httpx.Client) -> None:
    """Browsers replay cached Basic credentials on forged cross-site posts: the UI ignores them."""
    basic = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    r = anon.get("/", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_login_needs_the_form_token(anon: httpx.Client) -> None:
    creds = {"username": "admin", "password": ADMIN_PASSWORD}
    assert anon.post("/login", data=creds).status_code == 403
    form = anon.get("/login")
    token = csrf_from(form.text)
    r = anon.post("/login", data={**creds, "csrf_token": token[:-2] + "xx"})
    assert r.status_code == 403 and "moorage_session" not in anon.cookies
    # The right value in the field but a cookie the server never signed: refused too.
    anon.cookies.set("moorage_login_csrf", "forged.0000", path="/login")
    r = anon.post("/login", data={**creds, "csrf_token": "forged.0000"})
    assert r.status_code == 403 and "moorage_session" not in anon.cookies


def test_login_errors_do_not_say_whether_the_user_exists(anon: httpx.Client) -> None:
    bodies = []
    for username in ("admin", "no-such-user-anywhere"):
        token = csrf_from(anon.get("/login").text)
        r = anon.post(
            "/login", data={"username": username, "password": "wrong-pw", "csrf_token": token}
        )
        assert r.status_code == 401
        assert "Wrong username or password." in r.text
        bodies.append(r.text.replace(username, "NAME").replace(token, ""))
    strip = [b.split('name="csrf_token" value="')[0] for b in bodies]
    assert strip[0] == strip[1]


def test_session_cookie_flags_and_logout_ends_the_session(ui_server: MoorageServer) -> None:
    c = httpx.Client(base_url=ui_server.url, timeout=60)
    form = c.get("/login")
    r = c.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf_from(form.text)},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    set_cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
    session = next(v for v in set_cookie if v.startswith("moorage_session="))
    assert "httponly" in session.lower() and "samesite=lax" in session.lower()
    assert "secure" not in session.lower()  # plain HTTP here; Secure is set over TLS
    value = c.cookies["moorage_session"]
    home = c.get("/")
    assert home.status_code == 200 and "Dashboard" in home.text
    # Logout without the token is refused and the session lives on.
    assert c.post("/logout", data={}).status_code == 403
    assert c.get("/").status_code == 200
    r = c.post("/logout", data={"csrf_token": csrf_from(home.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    # The old cookie value is dead on the server, not just dropped by this client.
    with httpx.Client(base_url=ui_server.url, cookies={"moorage_session": value}) as replay:
        assert replay.get("/").status_code == 303
    c.close()


def test_login_redirects_only_to_our_own_pages(anon: httpx.Client) -> None:
    for target, expected in (
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/ui/audit", "/ui/audit"),
    ):
        anon.cookies.clear()
        token = csrf_from(anon.get("/login").text)
        r = anon.post(
            "/login",
            data={
                "username": "admin",
                "password": ADMIN_PASSWORD,
                "csrf_token": token,
                "next": target,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == expected, target


def test_signed_in_forms_refuse_missing_or_wrong_tokens(admin: httpx.Client, unique: str) -> None:
    name = f"csrf{unique}"
    token = csrf_from(admin.get("/ui/organizations").text)
    for data in ({"name": name}, {"name": name, "csrf_token": "wrong" + token[5:]}):
        r = admin.post("/ui/organizations", data=data)
        assert r.status_code == 403, r.text
        assert_secure_headers(r)
    assert admin.get(f"/ui/organizations/{name}").status_code == 404
    r = admin.post("/ui/organizations", data={"name": name, "csrf_token": token})
    assert r.status_code == 303
    assert admin.get(f"/ui/organizations/{name}").status_code == 200


def test_values_are_escaped(admin: httpx.Client, unique: str) -> None:
    org = f"esc{unique}"
    token = csrf_from(admin.get("/ui/organizations").text)
    evil = '<script>alert("org")</script>'
    r = admin.post(
        "/ui/organizations", data={"name": org, "description": evil, "csrf_token": token}
    )
    assert r.status_code == 303
    page = admin.get(f"/ui/organizations/{org}")
    assert "&lt;script&gt;alert(&#34;org&#34;)&lt;/script&gt;" in page.text
    assert evil not in page.text
    # Hostile text in a query string is escaped in the filter form too.
    r = admin.get("/ui/repositories", params={"q": '"><img src=x onerror=alert(1)>'})
    assert r.status_code == 200
    assert "<img src=x" not in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text


def test_unknown_pages_are_404_pages(admin: httpx.Client, anon: httpx.Client) -> None:
    for path in ("/ui/no-such-page", "/ui/repositories/no/such/repo", "/ui/organizations/nope0"):
        r = admin.get(path)
        assert r.status_code == 404, path
        assert "text/html" in r.headers["content-type"]
        assert_secure_headers(r)
    r = admin.get("/ui/repositories/x/manifests/sha256:" + "0" * 64)
    assert r.status_code == 404


def test_static_files_are_cached_and_typed(anon: httpx.Client) -> None:
    page = anon.get("/login").text
    href = page.split('<link rel="stylesheet" href="')[1].split('"')[0]
    r = anon.get(href)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert "immutable" in r.headers["cache-control"]
    assert_secure_headers(r)
    assert anon.get(href, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    js = anon.get("/static/ui/ui.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert anon.get("/static/ui/../app.py").status_code == 404
    assert anon.get("/static/ui/nothing.css").status_code == 404
    # No inline script or style anywhere in a page: the CSP forbids them.
    assert "<script>" not in page and "style=" not in page and "<style" not in page


def test_non_admins_cannot_open_admin_pages(ui_server: MoorageServer, unique: str) -> None:
    name, private = f"plain{unique}", f"admin/private{unique}"
    admin_cli(ui_server, "create-user", name, "--password-stdin", stdin="plain-password-1\n")
    with httpx.Client(base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD)) as registry:
        manifest = image_manifest(registry, private)
        assert put_manifest(registry, private, "v1", manifest).status_code == 201
    with login_http(ui_server, name, "plain-password-1") as c:
        # Another user's private repository is nowhere to be seen, not even as "forbidden".
        assert private not in c.get("/ui/repositories").text
        home = c.get("/").text
        assert private not in home and "storage used" not in home  # no system-wide figures
        # Refused before existence is checked (as on /v2): the same answer as for no repository.
        hidden = c.get(f"/ui/repositories/{private}")
        absent = c.get(f"/ui/repositories/admin/none{unique}")
        assert hidden.status_code == absent.status_code == 403
        assert hidden.text.replace(private, "X") == absent.text.replace(f"admin/none{unique}", "X")
        r = c.get(f"/ui/repositories/{private}/manifests/{sha256(manifest)}")
        assert r.status_code == 403
        assert 'href="/ui/audit"' not in c.get("/").text  # admin-only sections not offered
        for path in ("/ui/audit", "/ui/users"):
            assert c.get(path).status_code == 403, path
        token = csrf_from(c.get("/").text)
        r = c.post("/ui/organizations", data={"name": f"x{unique}", "csrf_token": token})
        assert r.status_code == 403


def test_administrators_see_every_robot(ui_server: MoorageServer, unique: str) -> None:
    org, user = f"rb{unique}", f"rbu{unique}"
    admin_cli(ui_server, "create-org", org)
    admin_cli(ui_server, "create-user", user, "--password-stdin", stdin="robot-owner-pw1\n")
    with httpx.Client(base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD)) as api:
        for i in range(3):
            body = {"name": f"ci{i}", "access": [{"organization": org, "actions": ["pull"]}]}
            r = api.post(f"/api/v1/namespaces/{org}/robots", json=body)
            assert r.status_code == 201, r.text
    with httpx.Client(base_url=ui_server.url, auth=(user, "robot-owner-pw1")) as api:
        body = {"name": "own", "access": [{"organization": user, "actions": ["pull"]}]}
        assert api.post(f"/api/v1/namespaces/{user}/robots", json=body).status_code == 201
    with login_http(ui_server) as c:
        page = c.get("/ui/robots").text
        assert 'name="namespace" value=""' in page  # the filter
        assert f"{org}+ci0" in page and f"{user}+own" in page  # every namespace
        only = c.get("/ui/robots", params={"namespace": org}).text
        assert f"{org}+ci0" in only and f"{user}+own" not in only
        bad = c.get("/ui/robots", params={"namespace": "<b>x</b>"})
        assert bad.status_code == 200 and "namespace must be" in bad.text and "<b>x" not in bad.text
        empty = c.get("/ui/robots", params={"namespace": f"none{unique}"}).text
        assert f"No robot accounts in none{unique}" in empty
    with login_http(ui_server, user, "robot-owner-pw1") as c:  # non-admins: as before
        page = c.get("/ui/robots").text
        assert (
            f"{user}+own" in page and org not in page and 'placeholder="all namespaces"' not in page
        )


def _login_attempt(c: httpx.Client, username: str, password: str) -> httpx.Response:
    token = csrf_from(c.get("/login").text)
    return c.post("/login", data={"username": username, "password": password, "csrf_token": token})


def test_the_lockout_rules_apply_to_the_login_form(ui_server: MoorageServer, unique: str) -> None:
    name = f"lock{unique}"
    admin_cli(ui_server, "create-user", name, "--password-stdin", stdin="right-password-1\n")
    with httpx.Client(base_url=ui_server.url, timeout=60) as c:
        # auth.lockout.account_limit, plus the one check a throttled account still gets
        for _ in range(11):
            assert _login_attempt(c, name, "wrong-password").status_code == 401
        r = _login_attempt(c, name, "right-password-1")
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text
        assert "moorage_session" not in c.cookies


def test_users_are_managed_from_the_ui(ui_server: MoorageServer, unique: str) -> None:
    name = f"ui{unique}"
    with login_http(ui_server) as admin:
        token = csrf_from(admin.get("/ui/users").text)
        r = admin.post(
            "/ui/users",
            data={"username": name, "password": "first-password-1", "csrf_token": token},
        )
        assert r.status_code == 303
        assert name in admin.get("/ui/users").text
        # Validation errors come back as a page saying what to fix, not a 500.
        r = admin.post(
            "/ui/users", data={"username": "Bad Name!", "password": "x", "csrf_token": token}
        )
        assert r.status_code == 400 and "username" in r.text
    with login_http(ui_server, name, "first-password-1") as user:
        token = csrf_from(user.get("/ui/account").text)
        r = user.post(
            "/ui/account/password",
            data={
                "current_password": "first-password-1",
                "new_password": "second-password-2",
                "csrf_token": token,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/ui/account?done=password-changed"
        assert user.get("/ui/account").status_code == 200  # this session stays
    with login_http(ui_server, name, "second-password-2"):
        pass
    with login_http(ui_server) as admin:
        token = csrf_from(admin.get("/ui/users").text)
        r = admin.post(f"/ui/users/{name}", data={"disabled": "true", "csrf_token": token})
        assert r.status_code == 303
    with httpx.Client(base_url=ui_server.url, timeout=60) as c:
        r = _login_attempt(c, name, "second-password-2")
        assert r.status_code == 401 and "Wrong username or password." in r.text


def test_the_session_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    srv = MoorageServer(
        tmp_path / "data",
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    srv.port = free_port()
    proc = _start_raw(srv)
    try:
        tls = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{srv.port}", verify=tls) as c:
            for _ in range(150):  # the server is starting: wait until it answers
                try:
                    form = c.get("/login")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                raise AssertionError("the TLS server did not answer")
            assert "secure" in form.headers["set-cookie"].lower()
            r = c.post(
                "/login",
                data={
                    "username": "admin",
                    "password": ADMIN_PASSWORD,
                    "csrf_token": csrf_from(form.text),
                },
            )
            assert r.status_code == 303
            session = next(
                v for k, v in r.headers.multi_items() if k == "set-cookie" and "session=" in v
            )
            assert "secure" in session.lower() and "httponly" in session.lower()
    finally:
        stop_process(proc)


def test_roles_are_granted_and_revoked_from_the_pages(
    ui_server: MoorageServer, admin: httpx.Client, unique: str
) -> None:
    org, repo = f"perm{unique}", f"perm{unique}/app"
    admin_cli(ui_server, "create-org", org)
    admin_cli(ui_server, "create-team", org, "ops")
    admin_cli(ui_server, "grant", "read", repo, "--team", f"{org}/ops")  # makes the repository
    token = csrf_from(admin.get(f"/ui/organizations/{org}").text)
    # An organization-wide role for a team named without its organization.
    r = admin.post(
        f"/ui/organizations/{org}/permissions/grant",
        data={"kind": "team", "subject": "ops", "role": "write", "csrf_token": token},
    )
    assert r.status_code == 303, r.text
    page = admin.get(f"/ui/organizations/{org}").text
    assert f"team: {org}/ops" in page.split('id="org-perm-table"')[1]
    r = admin.post(
        f"/ui/organizations/{org}/permissions/revoke",
        data={"kind": "team", "subject": f"{org}/ops", "csrf_token": token},
    )
    assert r.status_code == 303
    assert 'id="org-perm-table"' not in admin.get(f"/ui/organizations/{org}").text
    # A repository role: grant to a user, then revoke it.
    r = admin.post(
        f"/ui/repositories/{repo}/permissions/grant",
        data={"kind": "user", "subject": "admin", "role": "admin", "csrf_token": token},
    )
    assert r.status_code == 303
    assert "user: admin" in admin.get(f"/ui/repositories/{repo}").text
    r = admin.post(
        f"/ui/repositories/{repo}/permissions/revoke",
        data={"kind": "user", "subject": "admin", "csrf_token": token},
    )
    assert r.status_code == 303
    assert "user: admin" not in admin.get(f"/ui/repositories/{repo}").text
    # The team's page lists its roles (organization and repositories) and revokes them.
    admin_cli(ui_server, "grant", "write", org, "--team", f"{org}/ops")
    team_page = f"/ui/organizations/{org}/teams/ops"
    roles = admin.get(team_page).text.split('id="role-table"')[1].split("</table>")[0]
    assert f">{org}</a></td>\n    <td>write</td>" in roles
    assert f">{repo}</a></td>\n    <td>read</td>" in roles
    r = admin.post(f"{team_page}/revoke", data={"repository": repo, "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=revoked")
    roles = admin.get(team_page).text.split('id="role-table"')[1].split("</table>")[0]
    assert repo not in roles and f">{org}</a>" in roles
    assert admin.post(f"{team_page}/revoke", data={"csrf_token": token}).status_code == 303
    assert "This team holds no role yet" in admin.get(team_page).text
    # the team's organization role was the last one: the organization page agrees
    assert 'id="org-perm-table"' not in admin.get(f"/ui/organizations/{org}").text
    # An unknown operation is a 404, not a grant.
    r = admin.post(
        f"/ui/repositories/{repo}/permissions/steal",
        data={"kind": "user", "subject": "admin", "csrf_token": token},
    )
    assert r.status_code == 404


HOSTILE_GETS = [
    "/ui/repositories?after=%00%ff&q=" + "x" * 5000,
    "/ui/repositories?visibility=<b>&namespace=a/b",
    "/ui/repositories/UPPER/Case",
    "/ui/repositories/a/manifests/not-a-digest",
    "/ui/repositories/a%00b",
    "/ui/repositories/" + "a/" * 200 + "b",
    "/ui/audit?since=yesterday&until=%00&cursor=abc&result=<x>",
    "/ui/audit?cursor=-5&actor=" + "%ff" * 300,
    "/ui/organizations/%2e%2e",
    "/ui/organizations/x/teams/%00",
    "/static/ui/%2e%2e%2fapp.py",
]


@pytest.mark.parametrize("path", HOSTILE_GETS)
def test_hostile_addresses_get_pages_not_server_errors(admin: httpx.Client, path: str) -> None:
    r = admin.get(path)
    assert r.status_code in (200, 400, 404), (path, r.status_code, r.text[:300])
    assert_secure_headers(r)


def test_hostile_forms_get_pages_not_server_errors(admin: httpx.Client, unique: str) -> None:
    token = csrf_from(admin.get("/ui/organizations").text)
    posts = [
        ("/ui/organizations", {"name": "Bad Name", "description": "x"}),
        ("/ui/organizations", {"name": f"nul{unique}", "description": "a\x00b"}),
        ("/ui/organizations", {"name": "x" * 10000}),
        ("/ui/robots", {"namespace": "admin", "name": "ci", "access": "no-equals-sign"}),
        ("/ui/robots", {"namespace": "admin", "name": "ci", "access": "other/repo=pull"}),
        ("/ui/robots", {"namespace": "admin", "name": "c", "access": "admin/x=fly"}),
        ("/ui/robots", {"namespace": "admin", "name": "c", "access": "", "expires_days": "-1"}),
        ("/ui/robots/nobody+none/revoke", {}),
        ("/ui/users", {"username": "ab", "password": "short"}),
        ("/ui/users/nobody-here", {"is_admin": "true"}),
        ("/ui/repositories/none/here/settings", {"visibility": "secret"}),
        ("/ui/repositories/none/here/tags/%2e%2e/delete", {}),
        ("/ui/organizations/nope/teams/none/members/add", {"username": "admin"}),
    ]
    for path, data in posts:
        r = admin.post(path, data={**data, "csrf_token": token})
        assert r.status_code in (400, 403, 404, 409), (path, r.status_code, r.text[:300])
        assert "text/html" in r.headers["content-type"]
    # A body that is not a form at all is refused like a missing token.
    r = admin.post(
        "/ui/organizations", content=b"\xff" * 100, headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 403


def test_image_page_shows_config_layers_and_referrers(
    ui_server: MoorageServer, admin: httpx.Client, unique: str
) -> None:
    repo = f"admin/ref{unique}"  # the admin's personal namespace
    config = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "config": {
                "Entrypoint": ["/bin/sh", "-c"],
                "Env": ["GREETING=<b>hi</b>"],
                "Labels": {"org.example.note": "<script>alert(1)</script>"},
            },
            "history": [{"created_by": "RUN make <all>"}],
        }
    ).encode()
    with httpx.Client(
        base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60
    ) as registry:
        image = image_manifest(registry, repo, [b"eleven byte"], config)
        assert put_manifest(registry, repo, "v1", image).status_code == 201
        subject = {"mediaType": OCI_MANIFEST, "digest": sha256(image), "size": len(image)}
        sbom = image_manifest(
            registry, repo, [b"{}"], artifactType="application/spdx+json", subject=subject
        )
        assert put_manifest(registry, repo, sha256(sbom), sbom).status_code == 201
    page = admin.get(f"/ui/repositories/{repo}/manifests/{sha256(image)}").text
    layers = page.split('id="layer-table"')[1].split("</table>")[0]
    assert "11 B" in layers
    assert "<code>/bin/sh -c</code>" in page
    assert "GREETING=&lt;b&gt;hi&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "RUN make &lt;all&gt;" in page
    referrers = page.split('id="referrer-table"')[1].split("</table>")[0]
    assert "application/spdx+json" in referrers
    assert f"/ui/repositories/{repo}/manifests/{sha256(sbom)}" in referrers
    # The referrer's own page names its artifact type and links back to its subject.
    art = admin.get(f"/ui/repositories/{repo}/manifests/{sha256(sbom)}").text
    assert "Artifact" in art and f"/manifests/{sha256(image)}" in art


def _run_sql(server: MoorageServer, sql: str) -> None:
    """One statement against the server's own database (SQLite file or PostgreSQL)."""
    if server.database_url:
        subprocess.run(
            [
                "psql",
                server.database_url.replace("+asyncpg", ""),
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    else:
        with sqlite3.connect(server.data_dir / "moorage.db") as db:
            db.execute(sql)


def test_an_expired_session_is_signed_out(ui_server: MoorageServer) -> None:
    with login_http(ui_server) as c:
        assert c.get("/").status_code == 200
        sid = hashlib.sha256(c.cookies["moorage_session"].encode()).hexdigest()
        # The session reaches its end (auth.session.max_hours) without anyone waiting for it.
        _run_sql(ui_server, f"UPDATE web_sessions SET expires_at = created_at WHERE id = '{sid}'")
        r = c.get("/ui/organizations")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert ">Sign in</a>" in c.get("/ui/repositories").text  # public pages: signed out


@pytest.fixture(scope="module")
def short_idle_server() -> Iterator[MoorageServer]:
    """Sessions end after 6 idle seconds (auth.session.idle_minutes = 0.1, from the env)."""
    with own_auth_server(MOORAGE_AUTH_SESSION_IDLE_MINUTES="0.1") as srv:
        yield srv


def test_an_idle_session_ends_while_an_active_one_continues(
    short_idle_server: MoorageServer,
) -> None:
    idle_limit = 6.0
    with login_http(short_idle_server) as active, login_http(short_idle_server) as idle:
        assert idle.get("/ui/account").status_code == 200
        last_idle_use = time.monotonic()
        # The active session is used every half second for longer than the idle limit
        # (each use counts, even though use is recorded only every idle/4).
        while time.monotonic() - last_idle_use < idle_limit + 2:
            assert active.get("/ui/account").status_code == 200
            time.sleep(0.5)
        r = idle.get("/ui/account")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert idle.get("/api/v1/user").status_code == 401  # gone for the API too
        page = active.get("/ui/account")
        assert page.status_code == 200 and "admin" in page.text


def test_the_repository_list_links_to_its_next_page(
    ui_server: MoorageServer, admin: httpx.Client, unique: str
) -> None:
    org = f"many{unique}"
    admin_cli(ui_server, "create-org", org)
    names = [f"{org}/r{i:02d}" for i in range(51)]  # a page holds 50
    with httpx.Client(base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        for name in names:
            assert (
                put_manifest(c, name, "v1", image_manifest(c, name, layers=[])).status_code == 201
            )
    first = admin.get("/ui/repositories", params={"namespace": org})
    rows = re.findall(r'<td><a href="/ui/repositories/([^"]+)">', first.text)
    assert rows == names[:50]
    links = re.findall(r'<a href="(/ui/repositories\?[^"]*after=[^"]*)">Next page', first.text)
    assert len(links) == 1 and "First page" not in first.text
    second = admin.get(links[0].replace("&amp;", "&"))
    assert second.status_code == 200
    assert re.findall(r'<td><a href="/ui/repositories/([^"]+)">', second.text) == names[50:]
    assert "Next page" not in second.text and "First page" in second.text
    assert f"namespace={org}" in second.text.split("First page")[0].rsplit("<a", 1)[1]


def test_the_audit_page_pages_through_filtered_records(
    ui_server: MoorageServer, admin: httpx.Client, unique: str
) -> None:
    org = f"aud{unique}"
    admin_cli(ui_server, "create-org", org)
    token = csrf_from(admin.get(f"/ui/organizations/{org}").text)
    for i in range(51):  # one page holds 50 records
        r = admin.post(
            f"/ui/organizations/{org}/teams", data={"name": f"t{i}", "csrf_token": token}
        )
        assert r.status_code == 303
    seen: list[int] = []
    url = "/ui/audit?" + urlencode({"action": "team.create", "since": "2000-01-01T00:00"})
    for _ in range(40):  # records are written in batches: wait for all 51 to land
        first = admin.get(url).text
        if first.count("<tr>") - 1 == 50 and "Older »" in first:
            break
        time.sleep(0.25)
    while url:
        page = admin.get(url).text
        rows = re.findall(r'<td class="num">(\d+)</td>', page)
        assert rows and all(
            "team.create" in row for row in page.split("<tbody>")[1].split("<tr>")[1:]
        )
        seen += [int(x) for x in rows]
        more = re.search(r'href="(/ui/audit\?[^"]*cursor=[^"]*)">Older', page)
        url = more.group(1).replace("&amp;", "&") if more else ""
    assert len(seen) >= 51 and seen == sorted(seen, reverse=True) and len(set(seen)) == len(seen)


def test_personal_access_tokens_from_the_account_page(
    ui_server: MoorageServer, admin: httpx.Client, unique: str
) -> None:
    page = admin.get("/ui/account").text
    r = admin.post(
        "/ui/account/tokens",
        data={
            "name": f"tok{unique}",
            "scope:registry:pull": "on",
            "scope:api:read": "on",
            "csrf_token": csrf_from(page),
        },
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    found = re.search(r'id="secret-value" class="secret">([^<]+)<', r.text)
    assert found
    token = found.group(1)
    with httpx.Client(base_url=ui_server.url, auth=("admin", token)) as c:
        assert c.get("/v2/").status_code == 200
    page = admin.get("/ui/account").text
    assert f"tok{unique}" in page and token not in page  # listed, never shown again
    row = page.split(f"<td>tok{unique}</td>")[1].split("</tr>")[0]
    assert "api:read, registry:pull" in row
    delete = re.search(r'action="(/ui/account/tokens/\d+/delete)"', row)
    assert delete
    assert admin.post(delete.group(1), data={"csrf_token": csrf_from(page)}).status_code == 303
    with httpx.Client(base_url=ui_server.url, auth=("admin", token)) as c:
        assert c.get("/v2/").status_code == 401
