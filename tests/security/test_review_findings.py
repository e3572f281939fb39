"""Smaller holes from the security review (issue 11), each against a real ``moorage serve``
(``auth_server``: SQLite and PostgreSQL):

- a new local user named like a namespace holding repositories is refused (API, UI, CLI);
- a JWT signed with another algorithm than its key's is a 401, never a 500 with a traceback;
- ``PATCH /api/v1/repositories/{r}`` answers what happened (refused before any change);
- a token with only api:* scopes cannot expose, grant or delete without the registry scopes;
- robot endpoints answer alike for a missing namespace and someone else's organization;
- anonymous ``/v2/_catalog`` lists public repositories only and its Link header tells nothing
  about private ones sorting after them;
- blob and manifest responses cannot be rendered by a browser on the UI's origin.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    moorage_cli,
    push_blob,
    put_manifest,
)
from tests.security.conftest import API, PASSWORD, expect, login_form, page_csrf


@pytest.fixture
def admin(auth_server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def push_image(c: httpx.Client, repo: str, tag: str = "v1") -> None:
    assert put_manifest(c, repo, tag, image_manifest(c, repo)).status_code == 201


def new_user(admin: httpx.Client, name: str | None = None) -> str:
    name = name or unique("u")
    expect(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    return name


# --- a new user inheriting a namespace's repositories --------------------------------------


def test_a_new_user_cannot_take_over_a_namespace_with_repositories(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    ns = unique("shared")
    push_image(admin, f"{ns}/app")
    r = admin.post(f"{API}/users", json={"username": ns, "password": PASSWORD})
    assert r.status_code == 409, r.text
    assert "repositories" in r.json()["error"]["message"]

    cli = moorage_cli(
        auth_server, "admin", "create-user", ns, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert cli.returncode != 0 and "repositories" in cli.stderr, cli.stderr

    with login_form(auth_server, "admin", ADMIN_PASSWORD) as ui:
        csrf = page_csrf(ui, "/ui/users")
        form = {"username": ns, "password": PASSWORD, "csrf_token": csrf}
        page = ui.post("/ui/users", data=form)
        assert page.status_code == 409, page.status_code

    # No account of that name exists, so nobody holds its repositories.
    assert admin.get(f"{API}/users/{ns}").status_code == 404
    with httpx.Client(base_url=auth_server.url, auth=(ns, PASSWORD), timeout=60) as c:
        assert c.get(f"/v2/{ns}/app/manifests/v1").status_code == 401
    # A namespace without repositories is free to take.
    new_user(admin, unique("free"))


# --- bearer JWTs signed with another algorithm ---------------------------------------------


def test_rs256_token_with_a_valid_kid_is_a_401_not_a_500(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    kid = httpx.get(f"{auth_server.url}/auth/jwks.json", timeout=60).json()["keys"][0]["kid"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": "moorage", "aud": "moorage", "sub": "admin", "exp": now + 300,
              "nbf": now - 1, "iat": now, "jti": uuid.uuid4().hex, "access": [],
              "moorage": {"kind": "user", "id": 1, "typ": "access"}}  # fmt: skip
    forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
    hs = jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": kid})
    for token in (forged, hs):
        for path in ("/v2/", f"{API}/user", f"{API}/repositories"):
            r = httpx.get(
                f"{auth_server.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
            assert r.status_code == 401, (path, r.status_code, r.text)
        r = httpx.post(
            f"{auth_server.url}/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": token, "service": "moorage"},
            timeout=60,
        )
        assert r.status_code == 401, r.text
    assert "Traceback" not in auth_server.log()
    assert "Expecting a PEM" not in auth_server.log()


# --- PATCH answering what happened; api-only tokens ------------------------------------------


def test_patch_by_an_admin_without_pull_changes_nothing_and_says_so(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    owner = new_user(admin)
    repo = f"{owner}/app"
    with httpx.Client(base_url=auth_server.url, auth=(owner, PASSWORD), timeout=60) as c:
        push_image(c, repo)
        pat = expect(
            c.post(
                f"{API}/users/{owner}/tokens",
                json={"name": "wt", "scopes": ["api:write", "api:read"]},
            ),
            201,
        )["token"]
    with httpx.Client(base_url=auth_server.url, auth=(owner, pat), timeout=60) as c:
        r = c.patch(f"{API}/repositories/{repo}", json={"description": "changed by a token"})
        assert r.status_code == 403, r.text
    detail = expect(admin.get(f"{API}/repositories/{repo}"), 200)
    assert detail["description"] != "changed by a token"  # refused means: nothing changed


def test_api_only_token_cannot_expose_grant_or_delete(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    owner, friend = new_user(admin), new_user(admin)
    org = unique("o")
    expect(admin.post(f"{API}/organizations", json={"name": org}), 201)
    expect(admin.post(f"{API}/organizations/{org}/teams", json={"name": "devs"}), 201)
    expect(
        admin.put(f"{API}/organizations/{org}/permissions/users/{owner}", json={"role": "admin"}),
        204,
    )
    repo = f"{owner}/app"
    with httpx.Client(base_url=auth_server.url, auth=(owner, PASSWORD), timeout=60) as c:
        push_image(c, repo)
        scopes = ["api:read", "api:write", "registry:pull"]
        pat = expect(
            c.post(f"{API}/users/{owner}/tokens", json={"name": "wt", "scopes": scopes}), 201
        )["token"]
        full = expect(c.post(f"{API}/users/{owner}/tokens", json={"name": "full"}), 201)["token"]
    with httpx.Client(base_url=auth_server.url, auth=(owner, pat), timeout=60) as c:
        for method, path, body in [
            ("PATCH", f"/repositories/{repo}", {"visibility": "public"}),
            ("PUT", f"/repositories/{repo}/-/permissions/users/{friend}", {"role": "admin"}),
            ("PUT", f"/organizations/{org}/permissions/users/{friend}", {"role": "write"}),
            ("PUT", f"/organizations/{org}/teams/devs/members/{friend}", None),
            ("DELETE", f"/repositories/{repo}", None),
        ]:  # fmt: skip
            r = c.request(method, API + path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert "scope" in r.json()["error"]["message"], r.text
        # What the token may do: describe the repository.
        expect(c.patch(f"{API}/repositories/{repo}", json={"description": "d"}), 200)
    detail = expect(admin.get(f"{API}/repositories/{repo}"), 200)
    assert detail["visibility"] == "private"
    assert expect(admin.get(f"{API}/repositories/{repo}/-/permissions"), 200)["items"] == []
    # A token with every scope may (its owner's rights decide).
    with httpx.Client(base_url=auth_server.url, auth=(owner, full), timeout=60) as c:
        expect(c.patch(f"{API}/repositories/{repo}", json={"visibility": "public"}), 200)
        expect(c.delete(f"{API}/repositories/{repo}"), 204)


# --- robot endpoints and organization existence ---------------------------------------------


def test_robot_endpoints_do_not_tell_which_organizations_exist(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    prober = new_user(admin)
    org = unique("secretorg")
    expect(admin.post(f"{API}/organizations", json={"name": org}), 201)
    missing = unique("noorg")
    answers = {}
    with httpx.Client(base_url=auth_server.url, auth=(prober, PASSWORD), timeout=60) as c:
        for ns in (org, missing):
            got = []
            for method, path, body in [
                ("GET", f"/namespaces/{ns}/robots", None),
                ("POST", f"/namespaces/{ns}/robots", {"name": "ci", "access": [{"organization": ns, "actions": ["pull"]}]}),
                ("GET", f"/namespaces/{ns}/robots/ci", None),
                ("POST", f"/namespaces/{ns}/robots/ci/secret", None),
                ("DELETE", f"/namespaces/{ns}/robots/ci", None),
            ]:  # fmt: skip
                r = c.request(method, API + path, json=body)
                got.append((r.status_code, r.text.replace(ns, "NS")))
            answers[ns] = got
    assert answers[org] == answers[missing]
    assert all(status == 403 for status, _ in answers[org])
    with login_form(auth_server, prober) as ui:
        pages = []
        for ns in (org, missing):
            csrf = page_csrf(ui, "/ui/robots")
            form = {"namespace": ns, "name": "ci", "access": f"{ns}/app=pull", "csrf_token": csrf}
            r = ui.post("/ui/robots", data=form)
            text = r.text.replace(ns, "NS")
            pages.append((r.status_code, text[text.find("<main") :]))
        assert pages[0] == pages[1]


# --- the catalog ---------------------------------------------------------------------------


def test_anonymous_catalog_shows_public_repositories_only_and_no_hint(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    ns = unique("cat")
    public, private = f"{ns}/a-public", f"{ns}/b-private"
    push_image(admin, public)
    push_image(admin, private)
    expect(admin.patch(f"{API}/repositories/{public}", json={"visibility": "public"}), 200)
    anon = httpx.get(f"{auth_server.url}/v2/_catalog", params={"n": 1000}, timeout=60)
    assert anon.status_code == 200, anon.text
    names = anon.json()["repositories"]
    assert public in names and private not in names
    # Page by page: after the last public repository, no Link (a private one sorts after it).
    seen: list[str] = []
    last = None
    while True:
        params = {"n": 1, **({"last": last} if last else {})}
        r = httpx.get(f"{auth_server.url}/v2/_catalog", params=params, timeout=60)
        page = r.json()["repositories"]
        seen += page
        if "Link" not in r.headers:
            break
        last = page[-1]
    assert seen == names
    assert private not in seen
    r = httpx.get(f"{auth_server.url}/v2/_catalog", params={"n": 1, "last": names[-1]}, timeout=60)
    assert r.json()["repositories"] == [] and "Link" not in r.headers
    # The administrator sees both.
    every = admin.get("/v2/_catalog", params={"n": 1000}).json()["repositories"]
    assert {public, private} <= set(every)


# --- content served on the UI's origin -----------------------------------------------------


def test_blobs_and_manifests_cannot_be_rendered_by_a_browser(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    repo = f"{unique('web')}/page"
    html = b"<html><script>alert(document.cookie)</script></html>"
    digest = push_blob(admin, repo, html)
    push_image(admin, repo)
    for path in (f"/v2/{repo}/blobs/{digest}", f"/v2/{repo}/manifests/v1"):
        r = admin.get(path)
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["content-disposition"].startswith("attachment"), path
        assert "sandbox" in r.headers["content-security-policy"], path
    r = admin.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-5"})
    assert r.status_code == 206 and r.headers["content-disposition"].startswith("attachment")
