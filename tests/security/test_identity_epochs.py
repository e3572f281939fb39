"""Credentials that must not outlive what they were issued for (issue 11, High and Medium):

- a robot's tokens die when its secret is regenerated, when it is revoked (and stay dead after a
  regeneration un-revokes it) and when it is deleted; robots get no refresh (offline) token;
- the tokens of a deleted account never work for a later account of the same name, whose id
  is never the old one's (SQLite AUTOINCREMENT; PostgreSQL sequences);
- personal access tokens end with a recovery (own password change, admin reset, disable and
  re-enable), and the robots the account made are listed for review (API and UI).

Against ``auth_server``: SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, image_manifest, put_manifest
from tests.security.conftest import API, PASSWORD, expect, login_form

NEW_PASSWORD = "another-horse-battery"


@pytest.fixture
def admin(auth_server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


def claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def token_for(
    server: MoorageServer, who: str, secret: str, scope: str, offline: bool = False
) -> dict[str, Any]:
    data = {
        "grant_type": "password",
        "username": who,
        "password": secret,
        "service": "moorage",
        "scope": scope,
    }
    if offline:
        data["access_type"] = "offline"
    return dict(expect(httpx.post(f"{server.url}/auth/token", data=data, timeout=60), 200))


def bearer_get(server: MoorageServer, token: str, path: str) -> int:
    r = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return r.status_code


def refresh(server: MoorageServer, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "service": "moorage"},
        timeout=60,
    )


def new_org_with_image(admin: httpx.Client) -> tuple[str, str]:
    org = f"ep{uuid.uuid4().hex[:8]}"
    expect(admin.post(f"{API}/organizations", json={"name": org}), 201)
    repo = f"{org}/app"
    assert put_manifest(admin, repo, "v1", image_manifest(admin, repo)).status_code == 201
    return org, repo


def new_robot(admin: httpx.Client, org: str, repo: str, name: str = "ci") -> tuple[str, str]:
    body = {"name": name, "access": [{"repository": repo, "actions": ["pull"]}]}
    robot = expect(admin.post(f"{API}/namespaces/{org}/robots", json=body), 201)
    return str(robot["name"]), str(robot["secret"])


def test_robot_tokens_die_with_rotation_revocation_and_deletion(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    org, repo = new_org_with_image(admin)
    name, secret = new_robot(admin, org, repo)
    manifest = f"/v2/{repo}/manifests/v1"
    robot_url = f"{API}/namespaces/{org}/robots/ci"

    # Robots get no offline token: CI logs in with its secret again.
    got = token_for(auth_server, name, secret, f"repository:{repo}:pull", offline=True)
    assert "refresh_token" not in got, "a robot was given a refresh token"
    assert bearer_get(auth_server, got["token"], manifest) == 200

    # Rotation: "the old one stops working at once" — the old secret and what it obtained.
    secret2 = expect(admin.post(f"{robot_url}/secret"), 200)["secret"]
    assert bearer_get(auth_server, got["token"], manifest) == 401
    with httpx.Client(base_url=auth_server.url, auth=(name, secret), timeout=60) as old:
        assert old.get(manifest).status_code == 401
    second = token_for(auth_server, name, secret2, f"repository:{repo}:pull")
    assert bearer_get(auth_server, second["token"], manifest) == 200

    # Revocation, then a regeneration that un-revokes: the token from before stays dead.
    expect(admin.post(f"{robot_url}/revoke"), 204)
    assert bearer_get(auth_server, second["token"], manifest) == 401
    secret3 = expect(admin.post(f"{robot_url}/secret"), 200)["secret"]
    assert bearer_get(auth_server, second["token"], manifest) == 401
    third = token_for(auth_server, name, secret3, f"repository:{repo}:pull")
    assert bearer_get(auth_server, third["token"], manifest) == 200

    # Deleted and made again under the same name (a common rotation): a new identity.
    expect(admin.delete(robot_url), 204)
    _, secret4 = new_robot(admin, org, repo)
    assert bearer_get(auth_server, third["token"], manifest) == 401
    fourth = token_for(auth_server, name, secret4, f"repository:{repo}:pull")
    assert claims(fourth["token"])["moorage"]["id"] != claims(third["token"])["moorage"]["id"]
    assert bearer_get(auth_server, fourth["token"], manifest) == 200


def test_a_recreated_user_does_not_inherit_the_old_accounts_tokens(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    """Delete the newest user, create one of the same name: SQLite handed out the same id, the
    epoch started again at 0, and the old refresh and access tokens passed for the new one."""
    name = f"re{uuid.uuid4().hex[:8]}"
    expect(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    old = token_for(auth_server, name, PASSWORD, f"repository:{name}/app:pull", offline=True)
    assert bearer_get(auth_server, old["token"], "/v2/") == 200
    expect(admin.delete(f"{API}/users/{name}"), 204)

    expect(admin.post(f"{API}/users", json={"username": name, "password": NEW_PASSWORD}), 201)
    new = token_for(auth_server, name, NEW_PASSWORD, f"repository:{name}/app:pull")
    assert claims(new["token"])["moorage"]["id"] != claims(old["token"])["moorage"]["id"]
    assert bearer_get(auth_server, old["token"], "/v2/") == 401
    assert refresh(auth_server, old["refresh_token"]).status_code == 401
    assert bearer_get(auth_server, new["token"], "/v2/") == 200


def new_user_with_pat(server: MoorageServer, admin: httpx.Client) -> tuple[str, str]:
    name = f"pr{uuid.uuid4().hex[:8]}"
    expect(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    with httpx.Client(base_url=server.url, auth=(name, PASSWORD), timeout=60) as c:
        pat = expect(c.post(f"{API}/users/{name}/tokens", json={"name": "ci"}), 201)["token"]
    return name, str(pat)


def pat_works(server: MoorageServer, name: str, pat: str) -> bool:
    with httpx.Client(base_url=server.url, auth=(name, pat), timeout=60) as c:
        api = c.get(f"{API}/user").status_code
        v2 = c.get("/v2/").status_code
    bearer = bearer_get(server, pat, f"{API}/user")
    assert {api, v2, bearer} <= {200, 401}, (api, v2, bearer)
    assert len({api, v2, bearer}) == 1, (api, v2, bearer)
    return api == 200


@pytest.mark.parametrize("recovery", ["own-password", "admin-reset", "disable-enable"])
def test_personal_access_tokens_end_with_a_recovery(
    auth_server: MoorageServer, admin: httpx.Client, recovery: str
) -> None:
    name, pat = new_user_with_pat(auth_server, admin)
    assert pat_works(auth_server, name, pat)
    if recovery == "own-password":
        with httpx.Client(base_url=auth_server.url, auth=(name, PASSWORD), timeout=60) as c:
            body = {"old_password": PASSWORD, "new_password": NEW_PASSWORD}
            expect(c.post(f"{API}/users/{name}/password", json=body), 204)
    elif recovery == "admin-reset":
        expect(admin.patch(f"{API}/users/{name}", json={"password": NEW_PASSWORD}), 200)
    else:
        expect(admin.patch(f"{API}/users/{name}", json={"disabled": True}), 200)
        expect(admin.patch(f"{API}/users/{name}", json={"disabled": False}), 200)
    assert not pat_works(auth_server, name, pat)
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD)) as c:
        listed = expect(c.get(f"{API}/users/{name}/tokens"), 200)["items"]
    assert listed and all(t["revoked_at"] for t in listed), listed


def test_robots_made_by_a_compromised_account_are_listed_for_review(
    auth_server: MoorageServer, admin: httpx.Client
) -> None:
    name = f"cv{uuid.uuid4().hex[:8]}"
    expect(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    org, repo = new_org_with_image(admin)
    expect(
        admin.put(f"{API}/organizations/{org}/permissions/users/{name}", json={"role": "admin"}),
        204,
    )
    other, _ = new_robot(admin, org, repo, "bystander")  # made by the admin: not listed
    with httpx.Client(base_url=auth_server.url, auth=(name, PASSWORD), timeout=60) as thief:
        body = {"name": "backdoor", "access": [{"organization": name, "actions": ["pull", "push"]}]}
        expect(thief.post(f"{API}/namespaces/{name}/robots", json=body), 201)
        body = {"name": "sneaky", "access": [{"repository": repo, "actions": ["pull"]}]}
        expect(thief.post(f"{API}/namespaces/{org}/robots", json=body), 201)

    r = expect(admin.patch(f"{API}/users/{name}", json={"password": NEW_PASSWORD}), 200)
    assert r["username"] == name
    listed = expect(admin.get(f"{API}/users/{name}/robots"), 200)["items"]
    assert sorted(x["name"] for x in listed) == sorted([f"{name}+backdoor", f"{org}+sneaky"])
    assert other not in {x["name"] for x in listed}
    # The reset's audit record names them too.
    events = expect(admin.get(f"{API}/audit", params={"action": "user.update"}), 200)["events"]
    mine = [e for e in events if e["details"].get("user") == name]
    assert mine and f"{org}+sneaky" in mine[0]["details"]["robots_to_review"]
    # The UI shows the same list to administrators.

    with login_form(auth_server, "admin", ADMIN_PASSWORD) as ui:
        page = ui.get("/ui/robots", params={"review": name})
        assert page.status_code == 200
        assert f"{name}+backdoor" in page.text and f"{org}+sneaky" in page.text
        assert other not in page.text
    # Others may not read the list.
    with httpx.Client(base_url=auth_server.url, auth=(name, NEW_PASSWORD), timeout=60) as self_:
        expect(self_.get(f"{API}/users/{name}/robots"), 200)
        assert self_.get(f"{API}/users/admin/robots").status_code == 403


async def test_tokens_of_the_previous_release_still_work_for_their_own_account(
    tmp_path: Path,
) -> None:
    """During a rolling upgrade, nodes of the previous release issue tokens without the
    account's creation time (``ct``): they keep working for the account they were issued to,
    and a token issued before the account existed (to an earlier account of that name and id)
    is refused."""
    import sqlalchemy as sa

    from moorage.auth.service import AuthFailed
    from moorage.config import load_config
    from moorage.db import access_queries as aq
    from moorage.db.engine import upgrade
    from moorage.db.schema import users
    from moorage.runtime import build_access_service, close_context, open_context

    config = load_config(None, overrides={"data_dir": str(tmp_path)})
    await upgrade(config.database_url)
    ctx = open_context(config)
    try:
        access = build_access_service(config, ctx)
        await access.tokens.ensure_key()
        async with ctx.write_engine.begin() as conn:
            uid = await aq.create_user(conn, "carol", None)
        legacy, _ = await access.tokens.issue("carol", "user", uid, [])  # no ct, as before
        assert (await access.from_token(legacy)).name == "carol"
        # The account is "recreated" after the token was issued: same name and id, newer.
        async with ctx.write_engine.begin() as conn:
            await conn.execute(
                sa.update(users)
                .where(users.c.id == uid)
                .values(created_at=datetime.now(UTC) + timedelta(seconds=5))
            )
        with pytest.raises(AuthFailed):
            await access.from_token(legacy)
    finally:
        await close_context(ctx)
