"""Injection and escaping: hostile text in every field the UI renders, hostile image content
pushed through /v2, open redirects after login, path traversal on static files, header
injection through names — and the CSP on every page."""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, image_manifest, put_manifest, sha256
from tests.security.conftest import (
    API,
    PASSWORD,
    XSS,
    Tenants,
    expect,
    login_form,
    signature,
)

RAW = ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>")


def _assert_escaped(html: str, where: str) -> None:
    for raw in RAW:
        assert raw not in html, f"{where}: {raw} rendered as HTML"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, f"{where}: payload not shown as text"


def test_hostile_text_in_every_field_is_shown_as_text(
    tenants: Tenants, sysadmin: httpx.Client
) -> None:
    x = tenants.org["x"]
    repo = f"{x}/xss{uuid.uuid4().hex[:6]}"
    user = f"xss{uuid.uuid4().hex[:6]}"
    config = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "author": XSS,
            "config": {"Env": [f"EVIL={XSS}"], "Labels": {XSS: XSS}, "Entrypoint": [XSS], "WorkingDir": XSS, "User": XSS},
            "history": [{"created_by": XSS, "comment": XSS}],
        }
    ).encode()  # fmt: skip
    manifest = image_manifest(sysadmin, repo, [os.urandom(64)], config, annotations={XSS: XSS})
    assert put_manifest(sysadmin, repo, "v1", manifest).status_code == 201
    expect(sysadmin.patch(f"{API}/repositories/{repo}", json={"description": XSS}), 200)
    expect(sysadmin.patch(f"{API}/organizations/{x}", json={"description": XSS}), 200)
    expect(sysadmin.patch(f"{API}/organizations/{x}/teams/devs", json={"description": XSS}), 200)
    body = {"username": user, "password": PASSWORD, "email": XSS, "display_name": XSS}
    expect(sysadmin.post(f"{API}/users", json=body), 201)
    robot = {
        "name": f"x{uuid.uuid4().hex[:6]}",
        "description": XSS,
        "access": [{"organization": x, "actions": ["pull"]}],
    }
    expect(sysadmin.post(f"{API}/namespaces/{x}/robots", json=robot), 201)
    # an audit record carrying attacker text: a failed login with a hostile username
    r = httpx.post(tenants.server.url + f"{API}/session", json={"username": XSS, "password": "x"})
    assert r.status_code == 401
    with login_form(tenants.server, "admin", ADMIN_PASSWORD) as c:
        pages = {
            "repository": f"/ui/repositories/{repo}",
            "repositories": "/ui/repositories",
            "image": f"/ui/repositories/{repo}/manifests/{sha256(manifest)}",
            "organization": f"/ui/organizations/{x}",
            "organizations": "/ui/organizations",
            "team": f"/ui/organizations/{x}/teams/devs",
            "users": "/ui/users",
            "robots": "/ui/robots",
        }
        for where, path in pages.items():
            r = c.get(path)
            assert r.status_code == 200, (where, r.status_code)
            assert "script-src 'self'" in r.headers["content-security-policy"], where
            assert "'unsafe-inline'" not in r.headers["content-security-policy"]
            assert r.headers["x-content-type-options"] == "nosniff"
            _assert_escaped(r.text, where)
        r = c.get("/ui/audit", params={"action": "login.failed"})
        assert r.status_code == 200
        for raw in RAW:
            assert raw not in r.text
        assert "&lt;script&gt;" in r.text
    # the API hands the text back as JSON data, never HTML
    r = sysadmin.get(f"{API}/repositories/{repo}")
    assert (
        r.headers["content-type"].startswith("application/json") and r.json()["description"] == XSS
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "/%2f%2fevil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/login/../\\evil.example",
        " //evil.example",
    ],
)
def test_login_never_redirects_off_site(tenants: Tenants, target: str) -> None:
    from tests.security.conftest import CSRF_FIELD

    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        form = c.get("/login", params={"next": target})
        assert form.status_code == 200
        m = CSRF_FIELD.search(form.text)
        assert m
        data = {
            "username": tenants.users["outsider"],
            "password": PASSWORD,
            "csrf_token": m[1],
            "next": target,
        }
        r = c.post("/login", data=data)
        assert r.status_code == 303
        location = r.headers["location"]
        assert location == "/", (target, location)
        # signed in already: GET /login?next= redirects too
        r = c.get("/login", params={"next": target})
        assert r.status_code == 303 and r.headers["location"] == "/", (
            target,
            r.headers["location"],
        )


def test_login_keeps_our_own_next_page(tenants: Tenants) -> None:
    with login_form(tenants.server, tenants.users["outsider"]) as c:
        r = c.get("/login", params={"next": "/ui/account"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/account"


@pytest.mark.parametrize(
    "path",
    [
        "/static/ui/../../app.py",
        "/static/ui/..%2f..%2fapp.py",
        "/static/ui/%2e%2e/%2e%2e/web.py",
        "/static/ui/....//....//web.py",
        "/static/ui/..%5c..%5cweb.py",
        "/static/ui/%00ui.css",
        "/static/ui/templates/base.html",
        "/api/v1/static/../app.py",
        "/api/v1/static/..%2fapp.py",
        "/api/v1/static/%2e%2e%2fapp.py",
        "/api/v1/static/..%5capp.py",
        "/api/v1/static/__init__.py",
        "/api/v1/static/%2fetc%2fpasswd",
        "/static/../../../../etc/passwd",
    ],
)
def test_static_files_do_not_traverse(tenants: Tenants, path: str) -> None:
    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        r = c.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        for marker in ("import ", "root:x:0", "{% ", "def "):
            assert marker not in r.text, (path, marker)


def test_names_cannot_inject_headers(tenants: Tenants, sysadmin: httpx.Client) -> None:
    evil = "a%0d%0aSet-Cookie:%20moorage_session=evil"
    for path in (
        f"/v2/{evil}/b/manifests/v1",
        f"/ui/repositories/{evil}/b",
        f"{API}/repositories/x/{evil}",
    ):
        r = sysadmin.get(path)
        assert "set-cookie" not in {
            k.lower() for k in r.headers if r.headers[k].startswith("moorage_session=evil")
        }
        assert all(
            "evil" not in v for k, v in r.headers.items() if k.lower() in ("set-cookie", "location")
        ), path
    with httpx.Client(base_url=tenants.server.url, timeout=60) as anon:
        assert anon.get(f"/ui/repositories/{evil}").status_code == 404  # no route matches CR/LF
        r = anon.get(f"/ui/repositories/a/b?q={evil}")
        assert r.status_code == 303
        location = r.headers["location"]
        assert "\r" not in location and "\n" not in location and location.startswith("/login?next=")


def test_hostile_referrer_and_layer_fields_are_shown_as_text(
    tenants: Tenants, sysadmin: httpx.Client
) -> None:
    """A referrer (signature) whose artifactType and annotations carry markup, and layers with
    hostile annotations, on the subject's image page."""
    from tests.conftest import push_blob

    repo = f"{tenants.org['x']}/ref{uuid.uuid4().hex[:6]}"
    subject = image_manifest(sysadmin, repo, [os.urandom(32)])
    doc = json.loads(subject)
    doc["layers"][0]["annotations"] = {XSS: XSS}
    subject = json.dumps(doc).encode()
    assert put_manifest(sysadmin, repo, "v1", subject).status_code == 201
    payload = signature(
        subject,
        push_blob(sysadmin, repo, b"{}"),
        "application/vnd.x+json;<script>alert(1)</script>",
        annotations={XSS: XSS},
    )
    pushed = put_manifest(sysadmin, repo, sha256(payload), payload).status_code
    assert pushed in (201, 400), pushed
    with login_form(tenants.server, "admin", ADMIN_PASSWORD) as c:
        for path in (
            f"/ui/repositories/{repo}/manifests/{sha256(subject)}",
            f"/ui/repositories/{repo}",
        ):
            r = c.get(path)
            assert r.status_code == 200
            for raw in RAW:
                assert raw not in r.text, (path, raw)
        if pushed == 201:
            r = c.get(f"/ui/repositories/{repo}/manifests/{sha256(payload)}")
            assert r.status_code == 200
            _assert_escaped(r.text, "referrer")
