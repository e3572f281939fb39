"""Narrow credentials trying to do more: scoped personal access tokens, robots, a revoked robot,
a disabled user's session, token and password, and refresh tokens minted from a narrow token."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import image_manifest, put_manifest
from tests.security.conftest import API, PASSWORD, Tenants, expect, login_form


def _push(c: httpx.Client, repo: str) -> httpx.Response:
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    return r


def test_pull_only_token_cannot_push_or_use_the_api(tenants: Tenants) -> None:
    x = tenants.org["x"]
    user = tenants.users["xmember"]
    with tenants.client("pat_pull") as c:
        assert c.get(f"/v2/{x}/app/manifests/v1").status_code == 200
        assert _push(c, f"{user}/mine").status_code == 403  # even in their own namespace
        assert c.get(f"{API}/repositories").status_code == 403  # no api:read
        assert c.post(f"{API}/users/{user}/tokens", json={"name": "more"}).status_code == 403
    with tenants.bearer(tenants.pats["pat_pull"]) as c:
        assert c.get(f"{API}/user").status_code == 403
        assert c.delete(f"{API}/repositories/{user}/mine").status_code == 403


def test_api_read_token_cannot_write_or_read_content(tenants: Tenants) -> None:
    x, user = tenants.org["x"], tenants.users["xmember"]
    with tenants.client("pat_read") as c:
        expect(c.get(f"{API}/user"), 200)
        expect(c.get(f"{API}/organizations/{x}"), 200)
        # reading repository content also needs registry:pull
        assert c.get(f"{API}/repositories/{x}/app/-/tags").status_code == 403
        assert c.get(f"/v2/{x}/app/manifests/v1").status_code in (401, 403)
        for method, path, body in [
            ("PATCH", f"/users/{user}", {"display_name": "changed"}),
            ("POST", f"/users/{user}/tokens", {"name": "more"}),
            ("POST", f"/users/{user}/password", {"old_password": PASSWORD, "new_password": "x" * 12}),
            ("PATCH", f"/repositories/{user}/mine", {"description": "d"}),
        ]:  # fmt: skip
            r = c.request(method, API + path, json=body)
            assert r.status_code == 403, (method, path, r.text)


def test_tokens_cannot_mint_tokens_even_with_every_scope(tenants: Tenants) -> None:
    user = tenants.users["xmember"]
    with tenants.client("pat_all") as c:
        r = c.post(f"{API}/users/{user}/tokens", json={"name": "child"})
        assert r.status_code == 403, r.text


def test_a_narrow_token_cannot_be_widened_through_a_refresh_token(tenants: Tenants) -> None:
    """A registry:pull token asked for an offline (refresh) token at /auth/token; the refresh
    token then minted push/delete/admin access tokens with the owner's full rights."""
    user = tenants.users["xmember"]
    repo = f"{user}/widen"
    scope = f"repository:{repo}:pull,push,delete,*"
    with tenants.client("pat_pull") as c:
        r = c.get(
            "/auth/token", params={"service": "moorage", "scope": scope, "offline_token": "true"}
        )
        body = expect(r, 200)
        assert "refresh_token" not in body, "a refresh token would drop the token's scopes"
        access = body["token"]
        r = c.post(
            "/auth/token",
            data={"grant_type": "password", "username": user, "password": tenants.pats["pat_pull"],
                  "scope": scope, "access_type": "offline", "service": "moorage"},
        )  # fmt: skip
        body = expect(r, 200)
        assert "refresh_token" not in body
        assert body["scope"] == f"repository:{repo}:pull"
    with tenants.bearer(access) as c:
        assert c.post(f"/v2/{repo}/blobs/uploads/").status_code in (401, 403)
        assert (
            c.patch(f"{API}/repositories/{repo}", json={"visibility": "public"}).status_code == 403
        )
    # a password login still gets its refresh token, which keeps the user's own rights
    with tenants.client("xmember") as c:
        r = c.get(
            "/auth/token", params={"service": "moorage", "scope": scope, "offline_token": "true"}
        )
        refresh = expect(r, 200)["refresh_token"]
    r = httpx.post(
        tenants.server.url + "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "scope": scope, "service": "moorage"},
    )  # fmt: skip
    assert "push" in expect(r, 200)["scope"]


def test_robot_cannot_use_management_api_or_exceed_its_access(tenants: Tenants) -> None:
    x, y = tenants.org["x"], tenants.org["y"]
    with tenants.client("xrobot") as c:
        expect(c.get(f"{API}/repositories/{x}/app/-/tags"), 200)
        assert c.post(f"/v2/{x}/app/blobs/uploads/").status_code == 403  # pull only
        for method, path, body in [
            ("DELETE", f"/repositories/{x}/app/-/tags/v1", None),
            ("PATCH", f"/repositories/{x}/app", {"visibility": "public"}),
            ("POST", f"/namespaces/{x}/robots", {"name": "clone", "access": [{"organization": x, "actions": ["push"]}]}),
            ("POST", f"/namespaces/{x}/robots/ci/secret", None),
            ("GET", f"/organizations/{x}/permissions", None),
            ("GET", f"/repositories/{y}/app", None),
            ("GET", "/user", None),
        ]:  # fmt: skip
            r = c.request(method, API + path, json=body)
            assert r.status_code in (403, 404), (method, path, r.text)
            assert r.status_code == 403 or path == "/user"
    # robots cannot open web sessions
    r = httpx.post(
        tenants.server.url + f"{API}/session",
        json={"username": tenants.robots["x"][0], "password": tenants.robots["x"][1]},
    )
    assert r.status_code == 401 and "moorage_session" not in r.cookies


def test_revoked_robot_is_refused_everywhere(tenants: Tenants, sysadmin: httpx.Client) -> None:
    y = tenants.org["y"]
    robot = expect(
        sysadmin.post(
            f"{API}/namespaces/{y}/robots",
            json={"name": f"r{uuid.uuid4().hex[:6]}", "access": [{"repository": f"{y}/app", "actions": ["pull"]}]},
        ),
        201,
    )  # fmt: skip
    name, secret = robot["name"], robot["secret"]
    with httpx.Client(base_url=tenants.server.url, auth=(name, secret), timeout=60) as c:
        assert c.get(f"/v2/{y}/app/manifests/v1").status_code == 200
        token = expect(c.get("/auth/token", params={"scope": f"repository:{y}/app:pull"}), 200)[
            "token"
        ]
    expect(sysadmin.post(f"{API}/namespaces/{y}/robots/{name.split('+')[1]}/revoke"), 204)
    with httpx.Client(base_url=tenants.server.url, auth=(name, secret), timeout=60) as c:
        assert c.get(f"/v2/{y}/app/manifests/v1").status_code == 401
        assert c.get(f"{API}/repositories/{y}/app").status_code == 401
        assert c.get("/auth/token", params={"scope": f"repository:{y}/app:pull"}).status_code == 401
    with tenants.bearer(token) as c:
        assert c.get(f"/v2/{y}/app/manifests/v1").status_code == 401
        assert c.get(f"{API}/repositories/{y}/app").status_code == 401


def test_disabled_user_loses_session_token_and_password(
    tenants: Tenants, sysadmin: httpx.Client
) -> None:
    user = tenants.users["disabled"]
    pat = tenants.disabled_pat
    with login_form(tenants.server, user) as ui:
        assert ui.get("/ui/account").status_code == 200
        cookie = ui.cookies["moorage_session"]
        expect(sysadmin.patch(f"{API}/users/{user}", json={"disabled": True}), 200)
        r = ui.get("/ui/account")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    jar = httpx.Client(base_url=tenants.server.url, cookies={"moorage_session": cookie}, timeout=60)
    with jar:
        assert jar.get(f"{API}/user").status_code == 401
    with httpx.Client(base_url=tenants.server.url, auth=(user, PASSWORD), timeout=60) as c:
        assert c.get(f"{API}/user").status_code == 401
        assert c.get(f"/v2/{user}/x/tags/list").status_code == 401
        assert (
            c.get("/auth/token", params={"scope": f"repository:{user}/x:pull"}).status_code == 401
        )
        assert (
            c.post(f"{API}/session", json={"username": user, "password": PASSWORD}).status_code
            == 401
        )
    with tenants.bearer(pat) as c:
        assert c.get(f"{API}/user").status_code == 401
    with httpx.Client(base_url=tenants.server.url, auth=(user, pat), timeout=60) as c:
        assert c.get(f"/v2/{user}/x/tags/list").status_code == 401
    expect(sysadmin.patch(f"{API}/users/{user}", json={"disabled": False}), 200)


def test_write_token_pushes_only_where_its_owner_may(tenants: Tenants) -> None:
    """Every scope on a token never exceeds the owner: xmember (read on x) cannot push to x."""
    x = tenants.org["x"]
    with tenants.client("pat_all") as c:
        assert c.post(f"/v2/{x}/app/blobs/uploads/").status_code == 403
        mine = f"{tenants.users['xmember']}/own"
        assert put_manifest(c, mine, "v1", image_manifest(c, mine)).status_code == 201


def test_a_token_cannot_mint_robot_secrets(tenants: Tenants) -> None:
    """Tokens cannot create tokens — nor robot secrets: an api:write token without
    registry:push made a robot with push on its owner's namespace, a credential that outlived
    the token's revocation."""
    user = tenants.users["outsider"]
    pat = tenants.token("outsider", ["api:read", "api:write"])
    robots = f"{API}/namespaces/{user}/robots"
    with tenants.client("outsider") as c:
        expect(
            c.post(
                robots,
                json={"name": "made", "access": [{"organization": user, "actions": ["pull"]}]},
            ),
            201,
        )
    with tenants.bearer(pat) as c:
        assert c.post(f"/v2/{user}/app/blobs/uploads/").status_code in (
            401,
            403,
        )  # no registry:push
        r = c.post(
            robots,
            json={
                "name": "minted",
                "access": [{"organization": user, "actions": ["pull", "push", "delete"]}],
            },
        )
        assert r.status_code == 403 and 'secret"' not in r.text, r.text
        r = c.post(f"{robots}/made/secret")
        assert r.status_code == 403 and 'secret"' not in r.text, r.text
        # reading and revoking robots stays possible with api:write
        expect(c.get(robots), 200)
        expect(c.post(f"{robots}/made/revoke"), 204)
