"""Personal access tokens (REST, /v2 Basic, /auth/token, scopes, revocation) and the UI session
cookie on the REST API (CSRF header on changes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import API, PASSWORD, World, err, new_session, ok
from tests.conftest import image_manifest, put_manifest


def _token(world: World, who: str, **body: object) -> dict[str, object]:
    with world.client(who) as c:
        return dict(
            ok(
                c.post(
                    f"{API}/users/{world.users[who]}/tokens",
                    json={"name": f"t{uuid.uuid4().hex[:6]}", **body},
                ),
                201,
            )
        )


def test_token_lifecycle(world: World, admin: httpx.Client) -> None:
    user = world.users["writer"]
    t = _token(world, "writer", expires_in_days=7)
    token = str(t["token"])
    assert token.startswith(f"moorage_pat_{t['prefix']}_") and t["expires_at"]
    assert t["scopes"] == [
        "api:read",
        "api:write",
        "registry:delete",
        "registry:pull",
        "registry:push",
    ]
    with world.client("writer") as c:
        listed = ok(c.get(f"{API}/users/{user}/tokens"))["items"]
        assert [x["prefix"] for x in listed if x["id"] == t["id"]] == [t["prefix"]]
        assert all("token" not in x for x in listed)  # shown once
        err(c.post(f"{API}/users/{user}/tokens", json={"name": t["name"]}), 409)
        err(c.post(f"{API}/users/{user}/tokens", json={"name": "x y"}), 422, "name")
        err(
            c.post(f"{API}/users/{user}/tokens", json={"name": "okname", "scopes": ["root"]}),
            422,
            "scopes",
        )
        err(
            c.post(f"{API}/users/{user}/tokens", json={"name": "okname", "scopes": []}),
            422,
            "scopes",
        )
        err(
            c.post(f"{API}/users/{user}/tokens", json={"name": "okname", "expires_in_days": 4000}),
            422,
            "expires_in_days",
        )
        err(c.get(f"{API}/users/{world.users['reader']}/tokens"), 403)
        err(c.post(f"{API}/users/{world.users['reader']}/tokens", json={"name": "steal"}), 403)
    # Bearer on the REST API
    with httpx.Client(base_url=world.server.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert ok(c.get(f"{API}/user"))["username"] == user
        err(c.post(f"{API}/users/{user}/tokens", json={"name": "fromtoken"}), 403)  # no minting
    # Basic with the token as password on /v2, like docker login / skopeo --creds
    with httpx.Client(base_url=world.server.url, auth=(user, token)) as c:
        assert put_manifest(c, world.app, "by-pat", image_manifest(c, world.app)).status_code == 201
        assert c.get(f"/v2/{world.app}/manifests/by-pat").status_code == 200
    with httpx.Client(base_url=world.server.url, auth=(world.users["reader"], token)) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 401  # not the owner's name
    # and on the token endpoint: a JWT for the scopes the user may have
    r = httpx.get(
        f"{world.server.url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{world.app}:pull,push"},
        auth=(user, token),
    )
    assert r.status_code == 200, r.text
    jwt = r.json()["token"]
    with httpx.Client(base_url=world.server.url, headers={"Authorization": f"Bearer {jwt}"}) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200
    # last_used_at is recorded
    with world.client("writer") as c:
        [row] = [x for x in ok(c.get(f"{API}/users/{user}/tokens"))["items"] if x["id"] == t["id"]]
        assert row["last_used_at"] is not None
        err(c.delete(f"{API}/users/{user}/tokens/999999999"), 404)
        err(c.delete(f"{API}/users/{user}/tokens/abc"), 400, "token_id")
        ok(c.delete(f"{API}/users/{user}/tokens/{t['id']}"), 204)
    with httpx.Client(base_url=world.server.url, auth=(user, token)) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 401
    with httpx.Client(base_url=world.server.url, headers={"Authorization": f"Bearer {token}"}) as c:
        err(c.get(f"{API}/user"), 401)
    actions = [
        e["action"]
        for e in ok(admin.get(f"{API}/audit", params={"actor": user, "limit": 1000}))["events"]
    ]
    assert "token.create" in actions and "token.delete" in actions


def test_token_scopes_narrow_the_owner(world: World) -> None:
    user = world.users["writer"]
    read_only = str(_token(world, "writer", scopes=["api:read", "registry:pull"])["token"])
    with httpx.Client(base_url=world.server.url, auth=(user, read_only)) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200
        assert c.post(f"/v2/{world.app}/blobs/uploads/").status_code == 403
        ok(c.get(f"{API}/repositories/{world.app}"))
        err(c.patch(f"{API}/users/{user}", json={"display_name": "x"}), 403)
    api_only = str(_token(world, "writer", scopes=["api:read"])["token"])
    with httpx.Client(base_url=world.server.url, auth=(user, api_only)) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 403
        err(c.get(f"{API}/repositories/{world.app}"), 403)  # reading content needs registry:pull
        assert ok(c.get(f"{API}/repositories"))["items"] == []
    registry_only = str(_token(world, "writer", scopes=["registry:pull"])["token"])
    with httpx.Client(base_url=world.server.url, auth=(user, registry_only)) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200
        err(c.get(f"{API}/user"), 403)


def test_bearer_tokens_issued_for_a_pat_die_with_it(world: World) -> None:
    """A JWT from /auth/token obtained with a personal access token is refused on the very next
    request once that token is revoked."""
    user = world.users["writer"]
    t = _token(world, "writer", scopes=["registry:pull"])
    token = str(t["token"])
    r = httpx.get(
        f"{world.server.url}/auth/token",
        params={
            "service": "moorage",
            "scope": f"repository:{world.app}:pull,push",
            "offline_token": "true",
        },
        auth=(user, token),
    )
    assert r.status_code == 200, r.text
    jwt = r.json()["token"]
    # No refresh token for a PAT: it could outlive the PAT (re-send the PAT instead).
    assert "refresh_token" not in r.json()
    bearer = {"Authorization": f"Bearer {jwt}"}
    with httpx.Client(base_url=world.server.url, headers=bearer) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200
        with world.client("writer") as owner:
            ok(owner.delete(f"{API}/users/{user}/tokens/{t['id']}"), 204)
        refused = c.get(f"/v2/{world.app}/manifests/v1")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer ")
        err(c.get(f"{API}/repositories/{world.app}"), 401)
    # A user's own JWT (password login) is untouched by revoking one of their tokens.
    r = httpx.get(
        f"{world.server.url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{world.app}:pull"},
        auth=(user, PASSWORD),
    )
    with httpx.Client(
        base_url=world.server.url, headers={"Authorization": f"Bearer {r.json()['token']}"}
    ) as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200


def test_token_of_a_disabled_user_is_refused(world: World, admin: httpx.Client) -> None:
    name = f"p{uuid.uuid4().hex[:8]}"
    ok(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    with httpx.Client(base_url=world.server.url, auth=(name, PASSWORD)) as c:
        token = ok(c.post(f"{API}/users/{name}/tokens", json={"name": "ci"}), 201)["token"]
    with httpx.Client(base_url=world.server.url, auth=(name, token)) as c:
        assert c.get("/v2/").status_code == 200
        ok(admin.patch(f"{API}/users/{name}", json={"disabled": True}))
        assert c.get("/v2/").status_code == 401
        err(c.get(f"{API}/user"), 401)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with httpx.Client(
        base_url=world.server.url, headers={"Authorization": f"Bearer {forged}"}
    ) as c:
        err(c.get(f"{API}/user"), 401)


def test_session_cookie_and_csrf(world: World, admin: httpx.Client) -> None:
    cookie, csrf = new_session(world.server, world.users["repoadmin"])
    url = f"{API}/repositories/{world.app}"
    with httpx.Client(base_url=world.server.url, cookies={"moorage_session": cookie}) as c:
        assert ok(c.get(f"{API}/user"))["username"] == world.users["repoadmin"]
        e = err(c.patch(url, json={"description": "via session"}), 403)
        assert e["code"] == "CSRF_FAILED"
        err(c.patch(url, json={"description": "x"}, headers={"X-CSRF-Token": "wrong"}), 403)
        d = ok(c.patch(url, json={"description": "via session"}, headers={"X-CSRF-Token": csrf}))
        assert d["description"] == "via session"
    with httpx.Client(base_url=world.server.url, cookies={"moorage_session": "forged" * 8}) as c:
        err(c.get(f"{API}/user"), 401)
    # another user's session token is no CSRF token for this one
    _, other_csrf = new_session(world.server, world.users["reader"])
    with httpx.Client(base_url=world.server.url, cookies={"moorage_session": cookie}) as c:
        err(c.patch(url, json={"description": "x"}, headers={"X-CSRF-Token": other_csrf}), 403)


def test_other_sessions_end_when_the_password_changes(world: World, admin: httpx.Client) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    ok(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    other, _ = new_session(world.server, name)
    cookie, csrf = new_session(world.server, name)
    with httpx.Client(base_url=world.server.url, cookies={"moorage_session": cookie}) as c:
        ok(c.get(f"{API}/user"))
        ok(
            c.post(
                f"{API}/users/{name}/password",
                json={"old_password": PASSWORD, "new_password": "another-pass-1"},
                headers={"X-CSRF-Token": csrf},
            ),
            204,
        )
        ok(c.get(f"{API}/user"))  # the session that made the change stays
    with httpx.Client(base_url=world.server.url, cookies={"moorage_session": other}) as c:
        err(c.get(f"{API}/user"), 401)  # the others end


@pytest.mark.parametrize("idle", [False, True])
def test_sessions_expire(world: World, idle: bool) -> None:
    """A session past its idle limit or its absolute lifetime is refused (aged in the DB)."""
    import sys

    from tests.api.conftest import _db_env

    cookie, _ = new_session(world.server, world.users["reader"])
    column = "last_seen_at" if idle else "expires_at"
    code = f"""
import asyncio, hashlib
from datetime import datetime, timedelta, timezone
import sqlalchemy as sa
from moorage.config import load_config
from moorage.db.engine import create_engine, writer
from moorage.db.schema import web_sessions

async def main():
    config = load_config(overrides={{"data_dir": {str(world.server.data_dir)!r}}})
    engine = create_engine(config.database_url, 1)
    sid = hashlib.sha256({cookie!r}.encode()).hexdigest()
    age = timedelta(minutes=config.auth.session.idle_minutes + 1) if {idle!r} else timedelta(seconds=1)
    async with writer(engine).begin() as conn:
        await conn.execute(sa.update(web_sessions).where(web_sessions.c.id == sid).values({column}=datetime.now(timezone.utc) - age))
    await engine.dispose()

asyncio.run(main())
"""
    with httpx.Client(base_url=world.server.url, cookies={"moorage_session": cookie}) as c:
        ok(c.get(f"{API}/user"))
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=_db_env(world.server),
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        err(c.get(f"{API}/user"), 401)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo (apt) not installed")
def test_skopeo_pushes_and_pulls_with_a_token(
    world: World, admin: httpx.Client, tmp_path: Path
) -> None:
    """A personal access token as the password of a real client (Basic, then /auth/token)."""
    from tests.clients.ocigen import make_image, write_layout

    user = world.users["writer"]
    created = _token(world, "writer", scopes=["registry:pull", "registry:push"])
    token, ok_id = str(created["token"]), created["id"]
    layout = write_layout(tmp_path / "src", {"v1": make_image(n_layers=1)})
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
    }
    dest = f"docker://{world.server.host}/{world.app}:skopeo-pat"
    common = ["--registries-conf", str(conf), "--insecure-policy"]
    push = subprocess.run(
        [
            "skopeo",
            *common,
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{user}:{token}",
            f"oci:{layout}:v1",
            dest,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert push.returncode == 0, push.stderr

    def inspect(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["skopeo", *common, "inspect", "--tls-verify=false", "--creds", f"{user}:{password}"]
            + [dest],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    found = inspect(token)
    assert found.returncode == 0, found.stderr
    tags = {
        t["name"]
        for t in ok(admin.get(f"{API}/repositories/{world.app}/-/tags", params={"limit": 200}))[
            "items"
        ]
    }
    assert "skopeo-pat" in tags
    assert inspect(f"{token[:-1]}x").returncode != 0
    with world.client("writer") as c:
        ok(c.delete(f"{API}/users/{user}/tokens/{ok_id}"), 204)
    revoked = inspect(token)  # the same token, once revoked
    assert revoked.returncode != 0 and "unauthorized" in revoked.stderr


def test_login_and_logout_over_the_api(world: World, admin: httpx.Client) -> None:
    user = world.users["repoadmin"]
    with httpx.Client(base_url=world.server.url) as c:
        err(c.post(f"{API}/session", json={"username": user, "password": "wrong-password"}), 401)
        err(
            c.post(f"{API}/session", json={"username": world.robot[0], "password": world.robot[1]}),
            401,
        )
        err(c.post(f"{API}/session", json={"username": user}), 422, "password")
        r = c.post(f"{API}/session", json={"username": user, "password": PASSWORD})
        info = ok(r, 201)
        cookie = r.headers["set-cookie"]
        assert "moorage_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here; set on TLS
        assert ok(c.get(f"{API}/user"))["username"] == user and info["username"] == user
        err(c.delete(f"{API}/session"), 403)  # a change: needs the CSRF token
        ok(c.delete(f"{API}/session", headers={"X-CSRF-Token": info["csrf_token"]}), 204)
        err(c.get(f"{API}/user"), 401)
    with world.client("reader") as c:
        err(c.delete(f"{API}/session"), 401)  # Basic callers have no session to end
    events = ok(admin.get(f"{API}/audit", params={"actor": user, "limit": 1000}))["events"]
    assert {"login", "logout"} <= {e["action"] for e in events}
    failed = ok(admin.get(f"{API}/audit", params={"action": "login.failed", "limit": 1000}))[
        "events"
    ]
    assert any(
        e["details"].get("username") == user and e["details"].get("via") == "web" for e in failed
    )
