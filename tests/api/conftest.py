"""A populated registry for the REST API tests: built through the API itself (as an admin) and
through /v2 (images), against a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
)

PASSWORD = "correct-horse-battery"
API = "/api/v1"


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def err(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is an API error with *status* (and names *field* when given)."""
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if field is not None:
        assert body["error"].get("field") == field, body
    return dict(body["error"])


class World:
    """org with team devs (write on the org), users with read/write/admin on org/app, an
    outsider, a robot, and images: org/app:v1 (image with config), org/app:multi (an index of
    two platforms), a signature referring to v1; org/pub public; a personal repository."""

    def __init__(self, server: MoorageServer) -> None:
        self.server = server
        s = uuid.uuid4().hex[:6]
        self.s = s
        self.org = f"acme{s}"
        self.app, self.pub = f"{self.org}/app", f"{self.org}/pub"
        self.users = {
            k: f"{k}{s}"
            for k in ("reader", "writer", "repoadmin", "teamuser", "outsider", "orgadmin")
        }
        with self.admin() as c:
            for name in self.users.values():
                ok(c.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
            ok(c.post(f"{API}/organizations", json={"name": self.org}), 201)
            ok(
                c.post(
                    f"{API}/organizations/{self.org}/teams",
                    json={"name": "devs", "members": [self.users["teamuser"]]},
                ),
                201,
            )
            ok(
                c.put(
                    f"{API}/organizations/{self.org}/permissions/teams/devs", json={"role": "write"}
                ),
                204,
            )
            ok(
                c.put(
                    f"{API}/organizations/{self.org}/permissions/users/{self.users['orgadmin']}",
                    json={"role": "admin"},
                ),
                204,
            )
            for who, role in (("reader", "read"), ("writer", "write"), ("repoadmin", "admin")):
                ok(
                    c.put(
                        f"{API}/repositories/{self.app}/-/permissions/users/{self.users[who]}",
                        json={"role": role},
                    ),
                    204,
                )
            robot = ok(
                c.post(
                    f"{API}/namespaces/{self.org}/robots",
                    json={
                        "name": "ci",
                        "access": [{"repository": self.app, "actions": ["pull", "push"]}],
                    },
                ),
                201,
            )
            self.robot = (robot["name"], robot["secret"])
            self.config = json.dumps(
                {
                    "os": "linux",
                    "architecture": "amd64",
                    "created": "2024-01-02T03:04:05Z",
                    "config": {
                        "Entrypoint": ["/bin/app"],
                        "Cmd": ["--serve"],
                        "Env": ["PATH=/usr/bin", "MODE=prod"],
                        "Labels": {"org.opencontainers.image.title": "app"},
                    },
                    "history": [
                        {"created_by": "ADD rootfs /"},
                        {"created_by": "ENV MODE=prod", "empty_layer": True},
                    ],
                }
            ).encode()
            self.layers = [os.urandom(2048), os.urandom(512)]
            self.v1 = image_manifest(c, self.app, self.layers, self.config)
            assert put_manifest(c, self.app, "v1", self.v1).status_code == 201
            self.v1_digest = _digest(self.v1)
            arm_cfg = json.dumps({"os": "linux", "architecture": "arm64", "variant": "v8"}).encode()
            arm = image_manifest(c, self.app, [os.urandom(300)], arm_cfg)
            assert put_manifest(c, self.app, _digest(arm), arm).status_code == 201
            index = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": _digest(self.v1),
                        "size": len(self.v1),
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": _digest(arm),
                        "size": len(arm),
                        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                    },
                ],
            }
            self.index = json.dumps(index).encode()
            self.arm = arm
            r = put_manifest(
                c, self.app, "multi", self.index, "application/vnd.oci.image.index.v1+json"
            )
            assert r.status_code == 201, r.text
            empty = push_blob(c, self.app, b"{}")
            sig = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.example.signature",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": empty,
                    "size": 2,
                },
                "layers": [
                    {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}
                ],
                "subject": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(self.v1),
                    "size": len(self.v1),
                },
                "annotations": {"org.example.signed-by": "ci"},
            }
            self.sig = json.dumps(sig).encode()
            assert put_manifest(c, self.app, _digest(self.sig), self.sig).status_code == 201
            assert (
                put_manifest(c, self.pub, "latest", image_manifest(c, self.pub)).status_code == 201
            )
            ok(c.patch(f"{API}/repositories/{self.pub}", json={"visibility": "public"}))

    def creds(self, who: str) -> tuple[str, str] | None:
        if who == "anonymous":
            return None
        if who == "sysadmin":
            return ("admin", ADMIN_PASSWORD)
        if who == "robot":
            return self.robot
        return (self.users[who], PASSWORD)

    def client(self, who: str, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, auth=self.creds(who), timeout=60, **kw)

    def admin(self) -> httpx.Client:
        return self.client("sysadmin")


def _digest(payload: bytes) -> str:
    from tests.conftest import sha256

    return sha256(payload)


@pytest.fixture(scope="module")
def world(auth_server: MoorageServer) -> World:
    return World(auth_server)


@pytest.fixture
def admin(world: World) -> Iterator[httpx.Client]:
    with world.admin() as c:
        yield c


def new_session(server: MoorageServer, username: str) -> tuple[str, str]:
    """A web session for *username* made the way the UI's login does (SessionStore.create),
    against the server's database: (cookie value, CSRF token)."""
    code = f"""
import asyncio, json
from moorage.config import load_config
from moorage.db.engine import create_engine
from moorage.db import access_queries as aq
from moorage.auth.sessions import SessionStore

async def main():
    config = load_config(overrides={{"data_dir": {str(server.data_dir)!r}}})
    engine = create_engine(config.database_url, 1)
    async with engine.connect() as conn:
        user = await aq.user_by_name(conn, {username!r})
    cookie, session = await SessionStore(engine, config.auth.session).create(user.id, "127.0.0.1", "test")
    await engine.dispose()
    print(json.dumps([cookie, session.csrf_token]))

asyncio.run(main())
"""
    env = dict(os.environ)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    cookie, csrf = json.loads(out.stdout.strip().splitlines()[-1])
    return str(cookie), str(csrf)


def _db_env(server: MoorageServer) -> dict[str, str]:
    env = dict(os.environ)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    return env
