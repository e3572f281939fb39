"""Access control on /v2: challenges, Basic and Bearer, the role × action matrix, mounts, catalog.

Every cell of the matrix is asserted against a real server (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    image_manifest,
    put_manifest,
    sha256,
)

PASSWORD = "correct-horse-battery"
API = "/api/v1"


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


class World:
    """Organizations, users, teams, robots and repositories for the matrix."""

    def __init__(self, server: MoorageServer) -> None:
        self.server = server
        s = uuid.uuid4().hex[:6]
        self.org, self.other_org = f"acme{s}", f"other{s}"
        self.app, self.pub = f"{self.org}/app", f"{self.org}/pub"
        self.users = {
            k: f"{k}{s}" for k in ("reader", "writer", "repoadmin", "teamuser", "outsider")
        }
        # Built through the REST API as the administrator: one request each, where a
        # `moorage admin` process per step cost about a second of CPU (the CLI's own
        # spellings are tested in test_audit_e2e and the CLI tests).
        with self.admin() as c:
            for name in self.users.values():
                _ok(c.post(f"{API}/users", json={"username": name, "password": PASSWORD}))
            for org, team, member in (
                (self.org, "devs", self.users["teamuser"]),
                (self.other_org, "all", self.users["outsider"]),
            ):
                _ok(c.post(f"{API}/organizations", json={"name": org}))
                _ok(
                    c.post(
                        f"{API}/organizations/{org}/teams", json={"name": team, "members": [member]}
                    )
                )
            for org, team, role in ((self.other_org, "all", "admin"), (self.org, "devs", "write")):
                _ok(
                    c.put(
                        f"{API}/organizations/{org}/permissions/teams/{team}", json={"role": role}
                    )
                )
            for who, role in (("reader", "read"), ("writer", "write"), ("repoadmin", "admin")):
                url = f"{API}/repositories/{self.app}/-/permissions/users/{self.users[who]}"
                _ok(c.put(url, json={"role": role}))
            self.robots: dict[str, tuple[str, str]] = {}
            for key, repo, actions in (
                ("robot_ci", self.app, ["pull", "push"]),
                ("robot_noscope", f"{self.org}/elsewhere", ["pull"]),
            ):
                body = {
                    "name": key.replace("_", ""),
                    "access": [{"repository": repo, "actions": actions}],
                }
                robot = _ok(c.post(f"{API}/namespaces/{self.org}/robots", json=body))
                self.robots[key] = (robot["name"], robot["secret"])
            for repo in (self.app, self.pub):
                assert put_manifest(c, repo, "base", image_manifest(c, repo)).status_code == 201
            _ok(c.patch(f"{API}/repositories/{self.pub}", json={"visibility": "public"}))

    def creds(self, who: str) -> tuple[str, str] | None:
        if who == "anonymous":
            return None
        if who == "sysadmin":
            return ("admin", ADMIN_PASSWORD)
        if who in self.robots:
            return self.robots[who]
        return (self.users[who], PASSWORD)

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, auth=self.creds(who), timeout=60)

    def admin(self) -> httpx.Client:
        return self.client("sysadmin")


@pytest.fixture(scope="module")
def world(auth_server: MoorageServer) -> World:
    return World(auth_server)


SUBJECTS = [
    "anonymous",
    "reader",
    "writer",
    "repoadmin",
    "teamuser",
    "outsider",
    "robot_ci",
    "robot_noscope",
    "sysadmin",
]
ROLE_ON_APP = {
    "reader": "read",
    "writer": "write",
    "repoadmin": "admin",
    "teamuser": "write",
    "robot_ci": "write",
    "sysadmin": "admin",
}
ROLE_ON_PUB = {"teamuser": "write", "sysadmin": "admin"}
RANK = {None: 0, "read": 1, "write": 2, "admin": 3}


def expected_role(who: str, repo_kind: str) -> str | None:
    role = (ROLE_ON_APP if repo_kind == "app" else ROLE_ON_PUB).get(who)
    if repo_kind == "pub" and role is None:
        role = "read"  # public: anyone may pull, anonymous included
    return role


def denied_status(who: str) -> int:
    return 401 if who == "anonymous" else 403


@pytest.mark.parametrize("repo_kind", ["app", "pub"])
@pytest.mark.parametrize("who", SUBJECTS)
def test_matrix(world: World, who: str, repo_kind: str) -> None:
    repo = world.app if repo_kind == "app" else world.pub
    role = expected_role(who, repo_kind)
    can_read, can_write, can_admin = (RANK[role] >= n for n in (1, 2, 3))
    with world.admin() as adm:
        doomed = image_manifest(adm, repo)
        assert put_manifest(adm, repo, "doomed-tag", doomed).status_code == 201
        doomed2 = image_manifest(adm, repo)
        assert put_manifest(adm, repo, sha256(doomed2), doomed2).status_code == 201
    with world.client(who) as c:
        cells: dict[str, tuple[int, int]] = {}
        r = c.get(f"/v2/{repo}/manifests/base")
        cells["pull"] = (r.status_code, 200 if can_read else denied_status(who))
        r = c.get(f"/v2/{repo}/tags/list")
        cells["list tags"] = (r.status_code, 200 if can_read else denied_status(who))
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        cells["push"] = (r.status_code, 202 if can_write else denied_status(who))
        r = c.delete(f"/v2/{repo}/manifests/doomed-tag")
        cells["delete tag"] = (r.status_code, 202 if can_admin else denied_status(who))
        r = c.delete(f"/v2/{repo}/manifests/{sha256(doomed2)}")
        cells["delete manifest"] = (r.status_code, 202 if can_admin else denied_status(who))
        if who not in ("anonymous",) and not who.startswith("robot"):
            # Mount into a repository the caller may write (its own namespace, or this one).
            user = world.creds(who)[0]  # type: ignore[index]
            target = f"{user}/mnt" if who != "sysadmin" else f"{world.org}/mnt"
            blob = json.loads(world.admin().get(f"/v2/{repo}/manifests/base").content)["config"][
                "digest"
            ]
            r = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": blob, "from": repo})
            cells["mount"] = (r.status_code, 201 if can_read else 202)
        r = c.get("/v2/_catalog", params={"n": 1000})
        if who == "anonymous":
            listed = repo in r.json().get("repositories", []) if r.status_code == 200 else False
        else:
            assert r.status_code == 200
            listed = repo in r.json()["repositories"]
        cells["catalog lists it"] = (int(listed), int(can_read))
    wrong = {k: v for k, v in cells.items() if v[0] != v[1]}
    assert not wrong, f"{who} on {repo_kind}: (got, expected) {wrong}"


def test_challenge_names_the_refused_scope(world: World) -> None:
    r = httpx.get(f"{world.server.url}/v2/")
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="') and '/auth/token"' in challenge
    assert 'service="moorage"' in challenge
    r = httpx.get(f"{world.server.url}/v2/{world.app}/manifests/base")
    assert r.status_code == 401
    assert f'scope="repository:{world.app}:pull"' in r.headers["WWW-Authenticate"]
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_basic_credentials_directly_on_v2(world: World) -> None:
    with world.client("reader") as c:
        assert c.get("/v2/").status_code == 200
        assert c.get(f"/v2/{world.app}/manifests/base").status_code == 200
    with httpx.Client(
        base_url=world.server.url, auth=(world.users["reader"], "wrong-password")
    ) as c:
        r = c.get(f"/v2/{world.app}/manifests/base")
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_unknown_namespace_is_not_writable(world: World) -> None:
    with world.client("writer") as c:
        assert c.post("/v2/nobody-owns-this/app/blobs/uploads/").status_code == 403
    with world.client("sysadmin") as c:
        assert c.post("/v2/nobody-owns-this/app/blobs/uploads/").status_code == 202


def test_personal_namespace(world: World) -> None:
    user = world.users["outsider"]
    with world.client("outsider") as c:
        assert (
            put_manifest(c, f"{user}/mine", "1", image_manifest(c, f"{user}/mine")).status_code
            == 201
        )
    with world.client("reader") as c:
        assert c.get(f"/v2/{user}/mine/manifests/1").status_code == 403


@pytest.mark.parametrize("who", SUBJECTS)
def test_manage_permissions(world: World, who: str) -> None:
    """The matrix's last column: granting a role on a repository needs its admin role."""
    can = RANK[expected_role(who, "app")] >= 3
    target = world.users["outsider"]
    url = f"/api/v1/repositories/{world.app}/-/permissions/users/{target}"
    with world.client(who) as c:
        r = c.put(url, json={"role": "read"})
        assert r.status_code == (204 if can else denied_status(who)), r.text
        listed = c.get(f"/api/v1/repositories/{world.app}/-/permissions")
        assert listed.status_code == (200 if can else denied_status(who))
        if can:
            assert {"user": target, "team": None, "role": "read"} in listed.json()["items"]
    with world.admin() as adm:
        assert adm.delete(url).status_code == 204
        assert {"user": target, "team": None, "role": "read"} not in adm.get(
            f"/api/v1/repositories/{world.app}/-/permissions"
        ).json()["items"]
    with world.client("outsider") as c:
        assert c.get(f"/v2/{world.app}/manifests/base").status_code == 403


def test_permission_api_validation(world: World) -> None:
    url = f"/api/v1/repositories/{world.app}/-/permissions/users/{world.users['outsider']}"
    with world.admin() as c:
        assert c.put(url, json={"role": "owner"}).status_code == 422
        assert c.put(url, content=b"not json").status_code == 400
        assert (
            c.put(
                f"/api/v1/repositories/{world.app}/-/permissions/users/nobody-here",
                json={"role": "read"},
            ).status_code
            == 404
        )
        assert c.put(
            f"/api/v1/repositories/{world.org}/-/permissions/teams/{world.org}/nosuch",
            json={"role": "read"},
        ).status_code in (400, 404)
        r = c.put(
            f"/api/v1/repositories/{world.app}/-/permissions/teams/{world.org}/devs",
            json={"role": "admin"},
        )
        assert r.status_code == 204
        assert (
            c.delete(
                f"/api/v1/repositories/{world.app}/-/permissions/teams/{world.org}/devs"
            ).status_code
            == 204
        )


def test_first_start_writes_the_admin_password_once(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No users and no MOORAGE_ADMIN_PASSWORD: a random password, in a 0600 file, announced."""
    import stat
    from pathlib import Path

    data = Path(str(tmp_path)) / "data"
    monkeypatch.delenv("MOORAGE_ADMIN_PASSWORD", raising=False)
    srv = MoorageServer(data)
    try:
        srv.start()
        secret = data / "initial-admin-password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = secret.read_text().strip()
        assert len(password) >= 16
        assert "initial-admin-password" in srv.log()
        assert password not in srv.log()
        r = httpx.get(f"{srv.url}/v2/", auth=("admin", password))
        assert r.status_code == 200
        srv.restart()  # not regenerated
        assert secret.read_text().strip() == password
        assert httpx.get(f"{srv.url}/v2/", auth=("admin", password)).status_code == 200
    finally:
        srv.stop()


def test_anonymous_access_can_be_switched_off(tmp_path: object) -> None:
    from pathlib import Path

    srv = MoorageServer(
        Path(str(tmp_path)) / "data",
        env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, "MOORAGE_AUTH_ANONYMOUS_ACCESS": "false"},
    ).start()
    try:
        with httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD)) as c:
            assert (
                put_manifest(c, "admin/pub", "1", image_manifest(c, "admin/pub")).status_code == 201
            )
        admin_cli(srv, "set-visibility", "admin/pub", "public")
        r = httpx.get(f"{srv.url}/v2/admin/pub/manifests/1")
        assert r.status_code == 401
        r = httpx.get(
            f"{srv.url}/auth/token",
            params={"service": "moorage", "scope": "repository:admin/pub:pull"},
        )
        assert r.status_code == 401
        assert httpx.get(f"{srv.url}/v2/_catalog").status_code == 401
    finally:
        srv.stop()
