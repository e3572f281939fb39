"""The route × method → action table of docs/architecture.md ("Actions per /v2 route"), held
against a real server with access control on, with a push-only and a pull-only bearer token.

Upload status (GET) and cancel (DELETE) are part of pushing: they need `push`, as PATCH and PUT
do; neither `pull` nor `delete` is enough (issue 9).
"""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    image_manifest,
    push_blob,
    put_manifest,
    sha256,
)

PASSWORD = "route-table-password-1"


def token(server: MoorageServer, user: str, scope: str) -> str:
    r = httpx.get(
        f"{server.url}/auth/token",
        params={"service": "moorage", "scope": scope},
        auth=(user, PASSWORD),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


class Setup:
    def __init__(self, server: MoorageServer) -> None:
        s = uuid.uuid4().hex[:8]
        self.server = server
        self.user = f"pusher{s}"
        self.repo = f"team{s}/app"
        admin_cli(server, "create-user", self.user, "--password-stdin", stdin=PASSWORD + "\n")
        admin_cli(server, "create-org", f"team{s}")
        # admin on the repository: every action is the token's to narrow, not the role's
        admin_cli(server, "grant", "admin", self.repo, "--user", self.user)
        with httpx.Client(base_url=server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
            self.manifest = image_manifest(c, self.repo)
            assert put_manifest(c, self.repo, "v1", self.manifest).status_code == 201
            self.blob = push_blob(c, self.repo, b"a blob for reading")

    def client(self, actions: str) -> httpx.Client:
        bearer = token(self.server, self.user, f"repository:{self.repo}:{actions}")
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {bearer}"}, timeout=60
        )

    def session(self) -> str:
        """A fresh upload session (opened with a pull+push token, as docker does)."""
        with self.client("pull,push") as c:
            r = c.post(f"/v2/{self.repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            return str(r.headers["Location"])


@pytest.fixture(scope="module")
def setup(auth_server: MoorageServer) -> Setup:
    return Setup(auth_server)


def test_push_only_token_drives_an_upload(setup: Setup) -> None:
    data = os.urandom(3000)
    with setup.client("push") as c:
        # status, chunk, status again, finish: all `push`
        loc = setup.session()
        r = c.get(loc)
        assert r.status_code == 204 and r.headers["Range"] == "0-0", r.text
        r = c.patch(
            loc,
            content=data[:1000],
            headers={"Content-Range": "0-999", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 202, r.text
        r = c.patch(
            r.headers["Location"],
            content=data[2000:],
            headers={"Content-Range": "2000-2999", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 416, r.text  # out of order: the client asks where it stands
        r = c.get(loc)
        assert r.status_code == 204 and r.headers["Range"] == "0-999", r.text
        r = c.put(loc, params={"digest": sha256(data)}, content=data[1000:])
        assert r.status_code == 201, r.text
        # cancel: `push`, not `delete`
        loc = setup.session()
        assert c.delete(loc).status_code == 204
        assert c.get(loc).status_code == 404
        # a manifest push by tag
        assert put_manifest(c, setup.repo, "v2", setup.manifest).status_code == 201
        # everything that reads or deletes is refused
        name = setup.repo
        for method, path in [
            ("GET", f"/v2/{name}/manifests/v1"),
            ("HEAD", f"/v2/{name}/manifests/v1"),
            ("GET", f"/v2/{name}/blobs/{setup.blob}"),
            ("HEAD", f"/v2/{name}/blobs/{setup.blob}"),
            ("GET", f"/v2/{name}/tags/list"),
            ("GET", f"/v2/{name}/referrers/{sha256(setup.manifest)}"),
            ("POST", f"/v2/{name}/blobs/uploads/"),  # pull and push, as in Distribution
            ("DELETE", f"/v2/{name}/manifests/v2"),
            ("DELETE", f"/v2/{name}/blobs/{setup.blob}"),
        ]:
            assert c.request(method, path).status_code == 403, (method, path)


def test_pull_only_token_reads_and_never_writes(setup: Setup) -> None:
    loc = setup.session()
    name = setup.repo
    with setup.client("pull") as c:
        for method, path in [
            ("GET", f"/v2/{name}/manifests/v1"),
            ("HEAD", f"/v2/{name}/manifests/v1"),
            ("GET", f"/v2/{name}/blobs/{setup.blob}"),
            ("HEAD", f"/v2/{name}/blobs/{setup.blob}"),
            ("GET", f"/v2/{name}/tags/list"),
            ("GET", f"/v2/{name}/referrers/{sha256(setup.manifest)}"),
        ]:
            assert c.request(method, path).status_code == 200, (method, path)
        for method, path in [
            ("POST", f"/v2/{name}/blobs/uploads/"),
            ("GET", loc),
            ("PATCH", loc),
            ("PUT", f"{loc}?digest={sha256(b'')}"),
            ("DELETE", loc),
            ("PUT", f"/v2/{name}/manifests/v3"),
            ("DELETE", f"/v2/{name}/manifests/v1"),
            ("DELETE", f"/v2/{name}/blobs/{setup.blob}"),
        ]:
            assert c.request(method, path).status_code == 403, (method, path)
    with setup.client("push") as c:
        assert c.get(loc).status_code == 204  # the session was left as it was


def test_delete_token_deletes_and_nothing_else(setup: Setup) -> None:
    loc = setup.session()
    name = setup.repo
    with setup.client("delete") as c:
        assert c.get(loc).status_code == 403
        assert c.delete(loc).status_code == 403
        assert c.get(f"/v2/{name}/manifests/v1").status_code == 403
        with httpx.Client(base_url=setup.server.url, auth=("admin", ADMIN_PASSWORD)) as a:
            assert put_manifest(a, name, "gone", setup.manifest).status_code == 201
        assert c.delete(f"/v2/{name}/manifests/gone").status_code == 202
