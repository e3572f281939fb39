"""Attack tests against a real ``moorage serve`` with access control on (``auth_server``).

``Tenants`` builds two organizations side by side, each with its own admin, team member, repo
admin, robot, and images, plus an outsider, narrow personal access tokens and a disabled user —
everything through the API as the system administrator, then the tests try to cross the lines.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    push_blob,
    put_manifest,
    sha256,
)

API = "/api/v1"
PASSWORD = "correct-horse-battery"
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def signature(
    subject: bytes,
    empty: str,
    artifact_type: str = "application/vnd.example.signature",
    **extra: object,
) -> bytes:
    """An artifact manifest referring to *subject* (a signature), with the empty config and
    layer *empty* (digest of ``{}``, pushed by the caller)."""
    descriptor = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": descriptor,
        "layers": [descriptor],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(subject),
            "size": len(subject),
        },
        **extra,
    }
    return json.dumps(doc).encode()


def expect(r: httpx.Response, status: int) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content and "json" in r.headers.get("content-type", "") else None


class Tenants:
    """Organizations x and y. In each: ``<o>admin`` (org admin), ``<o>member`` (in team devs,
    read on the org), ``<o>repoadmin`` (admin of ``<o>/app`` only), robot ``<o>+ci`` (pull on
    ``<o>/app``), image ``<o>/app:v1`` (with a signature referring to it). Also ``outsider``,
    ``disabled`` (disabled after getting a token) and tokens of xmember: ``pat_pull``
    (registry:pull), ``pat_read`` (api:read), ``pat_all`` (every scope)."""

    def __init__(self, server: MoorageServer) -> None:
        self.server = server
        s = uuid.uuid4().hex[:6]
        self.org = {o: f"{o}org{s}" for o in ("x", "y")}
        self.users: dict[str, str] = {}
        for o in ("x", "y"):
            for role in ("admin", "member", "repoadmin"):
                self.users[f"{o}{role}"] = f"{o}{role}{s}"
        self.users["outsider"] = f"outsider{s}"
        self.users["disabled"] = f"disabled{s}"
        self.robots: dict[str, tuple[str, str]] = {}
        self.pats: dict[str, str] = {}
        self.digest: dict[str, str] = {}
        with self.client("sysadmin") as c:
            for name in self.users.values():
                expect(c.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
            for o, org in self.org.items():
                expect(c.post(f"{API}/organizations", json={"name": org}), 201)
                members = [self.users[f"{o}member"]]
                team = {"name": "devs", "members": members}
                expect(c.post(f"{API}/organizations/{org}/teams", json=team), 201)
                perms = f"{API}/organizations/{org}/permissions"
                expect(c.put(f"{perms}/teams/devs", json={"role": "read"}), 204)
                admin_user = self.users[f"{o}admin"]
                expect(c.put(f"{perms}/users/{admin_user}", json={"role": "admin"}), 204)
                app = f"{org}/app"
                manifest = image_manifest(c, app)
                assert put_manifest(c, app, "v1", manifest).status_code == 201
                self.digest[o] = sha256(manifest)
                self._sign(c, app, manifest)
                repo_admin = self.users[f"{o}repoadmin"]
                expect(
                    c.put(
                        f"{API}/repositories/{app}/-/permissions/users/{repo_admin}",
                        json={"role": "admin"},
                    ),
                    204,
                )
                robot = expect(
                    c.post(
                        f"{API}/namespaces/{org}/robots",
                        json={"name": "ci", "access": [{"repository": app, "actions": ["pull"]}]},
                    ),
                    201,
                )
                self.robots[o] = (robot["name"], robot["secret"])
        self.pats = {
            "pat_pull": self.token("xmember", ["registry:pull"]),
            "pat_read": self.token("xmember", ["api:read"]),
            "pat_all": self.token("xmember", None),
        }
        self.disabled_pat = self.token("disabled", None)

    @staticmethod
    def _sign(c: httpx.Client, repo: str, subject: bytes) -> None:
        payload = signature(subject, push_blob(c, repo, b"{}"))
        assert put_manifest(c, repo, sha256(payload), payload).status_code == 201

    def token(self, who: str, scopes: list[str] | None) -> str:
        body: dict[str, Any] = {"name": f"t{uuid.uuid4().hex[:8]}"}
        if scopes is not None:
            body["scopes"] = scopes
        with self.client(who) as c:
            return str(
                expect(c.post(f"{API}/users/{self.users[who]}/tokens", json=body), 201)["token"]
            )

    def creds(self, who: str) -> tuple[str, str] | None:
        if who == "anonymous":
            return None
        if who == "sysadmin":
            return ("admin", ADMIN_PASSWORD)
        if who in ("xrobot", "yrobot"):
            return self.robots[who[0]]
        if who in self.pats:
            return (self.users["xmember"], self.pats[who])
        return (self.users[who], PASSWORD)

    def client(self, who: str, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, auth=self.creds(who), timeout=60, **kw)

    def bearer(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


@pytest.fixture(scope="module")
def tenants(auth_server: MoorageServer) -> Tenants:
    return Tenants(auth_server)


@contextlib.contextmanager
def login_form(
    server: MoorageServer, username: str, password: str = PASSWORD
) -> Iterator[httpx.Client]:
    """A client signed in through the UI's login form, as a browser."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        form = c.get("/login")
        m = CSRF_FIELD.search(form.text)
        assert m, form.text
        data = {"username": username, "password": password, "csrf_token": m[1]}
        r = c.post("/login", data=data)
        assert r.status_code == 303, r.text
        yield c


def page_csrf(c: httpx.Client, path: str = "/ui/account") -> str:
    m = CSRF_FIELD.search(c.get(path).text)
    assert m
    return m[1]


@pytest.fixture
def sysadmin(tenants: Tenants) -> Iterator[httpx.Client]:
    with tenants.client("sysadmin") as c:
        yield c
