"""/api/v1 organizations, teams, members, organization permissions, users and robots."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api.conftest import API, PASSWORD, World, err, ok
from tests.conftest import image_manifest, put_manifest


def test_organizations(world: World, admin: httpx.Client) -> None:
    name = f"org{uuid.uuid4().hex[:8]}"
    with world.client("reader") as c:
        err(c.post(f"{API}/organizations", json={"name": name}), 403)
    org = ok(
        admin.post(f"{API}/organizations", json={"name": name, "description": "<b>x</b>"}), 201
    )
    assert org == {
        **org,
        "name": name,
        "description": "<b>x</b>",
        "team_count": 0,
        "repository_count": 0,
    }
    err(admin.post(f"{API}/organizations", json={"name": name}), 409)
    err(admin.post(f"{API}/organizations", json={"name": world.users["reader"]}), 409)
    for bad in ("A", "x", "has space", "-lead", "x" * 65):
        err(admin.post(f"{API}/organizations", json={"name": bad}), 422, "name")
    err(admin.post(f"{API}/organizations", json={}), 422, "name")
    assert ok(admin.get(f"{API}/organizations/{name}"))["name"] == name
    err(admin.get(f"{API}/organizations/nosuch{world.s}"), 404)
    listed = {
        o["name"] for o in ok(admin.get(f"{API}/organizations", params={"limit": 200}))["items"]
    }
    assert {name, world.org} <= listed
    with world.client("teamuser") as c:  # members see their organizations only
        assert [o["name"] for o in ok(c.get(f"{API}/organizations"))["items"]] == [world.org]
        err(c.get(f"{API}/organizations/{name}"), 403)
        err(c.patch(f"{API}/organizations/{world.org}", json={"description": "x"}), 403)
    with world.client("orgadmin") as c:
        assert (
            ok(c.patch(f"{API}/organizations/{world.org}", json={"description": "ours"}))[
                "description"
            ]
            == "ours"
        )
        err(c.delete(f"{API}/organizations/{world.org}"), 403)  # deleting is for system admins
    err(admin.delete(f"{API}/organizations/{world.org}"), 409)  # it has repositories
    ok(admin.delete(f"{API}/organizations/{name}"), 204)
    err(admin.get(f"{API}/organizations/{name}"), 404)
    actions = {
        e["action"]
        for e in ok(admin.get(f"{API}/audit", params={"actor": "admin", "limit": 1000}))["events"]
    }
    assert {"organization.create", "organization.delete"} <= actions


def test_teams_and_members(world: World, admin: httpx.Client) -> None:
    org = world.org
    team = f"t{uuid.uuid4().hex[:6]}"
    reader, outsider = world.users["reader"], world.users["outsider"]
    with world.client("teamuser") as c:  # a member of the org, not its admin
        err(c.post(f"{API}/organizations/{org}/teams", json={"name": team}), 403)
        assert "devs" in {t["name"] for t in ok(c.get(f"{API}/organizations/{org}/teams"))["items"]}
    with world.client("outsider") as c:
        err(c.get(f"{API}/organizations/{org}/teams"), 403)
    with world.client("orgadmin") as c:
        t = ok(
            c.post(f"{API}/organizations/{org}/teams", json={"name": team, "members": [reader]}),
            201,
        )
        assert t["members"] == [reader] and t["organization"] == org and t["source"] == "local"
        err(c.post(f"{API}/organizations/{org}/teams", json={"name": team}), 409)
        err(
            c.post(
                f"{API}/organizations/{org}/teams",
                json={"name": "ok-name", "members": [f"ghost{world.s}"]},
            ),
            404,
        )
        err(
            c.post(f"{API}/organizations/{org}/teams", json={"name": "ok", "members": "alice"}),
            422,
            "members",
        )
        ok(c.put(f"{API}/organizations/{org}/teams/{team}/members/{outsider}"), 204)
        assert ok(c.get(f"{API}/organizations/{org}/teams/{team}"))["members"] == sorted(
            [reader, outsider]
        )
        assert (
            ok(c.patch(f"{API}/organizations/{org}/teams/{team}", json={"description": "d"}))[
                "description"
            ]
            == "d"
        )
        # a team grant on a repository gives its members that role
        ok(
            c.put(
                f"{API}/repositories/{world.app}/-/permissions/teams/{org}/{team}",
                json={"role": "write"},
            ),
            204,
        )
    with world.client("outsider") as c:
        assert c.post(f"/v2/{world.app}/blobs/uploads/").status_code == 202
    with world.client("orgadmin") as c:
        ok(c.delete(f"{API}/organizations/{org}/teams/{team}/members/{outsider}"), 204)
        err(c.delete(f"{API}/organizations/{org}/teams/{team}/members/{outsider}"), 404)
        err(c.put(f"{API}/organizations/{org}/teams/{team}/members/ghost{world.s}"), 404)
    with world.client("outsider") as c:
        assert c.post(f"/v2/{world.app}/blobs/uploads/").status_code == 403
    with world.client("orgadmin") as c:
        page = ok(c.get(f"{API}/organizations/{org}/teams", params={"limit": 1}))
        assert len(page["items"]) == 1 and page["next_cursor"]
        ok(c.delete(f"{API}/organizations/{org}/teams/{team}"), 204)
        err(c.get(f"{API}/organizations/{org}/teams/{team}"), 404)
    actions = [
        e["action"]
        for e in ok(
            admin.get(f"{API}/audit", params={"actor": world.users["orgadmin"], "limit": 1000})
        )["events"]
    ]
    for a in ("team.create", "team.member.add", "team.member.remove", "team.delete"):
        assert a in actions


def test_organization_permissions(world: World, admin: httpx.Client) -> None:
    org, outsider = world.org, world.users["outsider"]
    url = f"{API}/organizations/{org}/permissions"
    with world.client("teamuser") as c:
        err(c.get(url), 403)
        err(c.put(f"{url}/users/{outsider}", json={"role": "read"}), 403)
    with world.client("orgadmin") as c:
        grants = ok(c.get(url))["items"]
        assert {"user": None, "team": f"{org}/devs", "role": "write"} in grants
        ok(c.put(f"{url}/users/{outsider}", json={"role": "read"}), 204)
    with world.client("outsider") as c:  # read on the org: pull on all its repositories
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200
        err(c.delete(f"{API}/repositories/{world.app}/-/tags/v1"), 403)
    with world.client("orgadmin") as c:
        err(c.put(f"{url}/users/{outsider}", json={"role": "boss"}), 422, "role")
        err(c.put(f"{url}/teams/nosuch", json={"role": "read"}), 404)
        ok(c.delete(f"{url}/users/{outsider}"), 204)
    with world.client("outsider") as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 403
    err(admin.get(f"{API}/organizations/nosuch{world.s}/permissions"), 404)


def test_team_permissions(world: World, admin: httpx.Client) -> None:
    """The roles a team holds, organization first then repositories, paginated; its org's
    admins only."""
    org = world.org
    url = f"{API}/organizations/{org}/teams/devs/permissions"
    team_on_pub = f"{API}/repositories/{world.pub}/-/permissions/teams/{org}/devs"
    ok(admin.put(team_on_pub, json={"role": "read"}), 204)
    try:
        with world.client("orgadmin") as c:
            assert ok(c.get(url))["items"] == [
                {"organization": org, "repository": None, "role": "write"},
                {"organization": None, "repository": world.pub, "role": "read"},
            ]
            first = c.get(url, params={"limit": 1})
            page = ok(first)
            assert [g["organization"] for g in page["items"]] == [org]
            assert page["next_cursor"] and 'rel="next"' in first.headers["link"]
            rest = ok(c.get(url, params={"limit": 1, "cursor": page["next_cursor"]}))
            assert [g["repository"] for g in rest["items"]] == [world.pub]
            assert rest["next_cursor"] is None
            err(c.get(url, params={"limit": 0}), 400, "limit")
            err(c.get(f"{API}/organizations/{org}/teams/nosuch/permissions"), 404)
        for who, status in (("teamuser", 403), ("outsider", 403), ("robot", 403)):
            with world.client(who) as c:
                err(c.get(url), status)
        with world.client("anonymous") as c:
            err(c.get(url), 401)
    finally:
        ok(admin.delete(team_on_pub), 204)
    assert ok(admin.get(url))["items"] == [
        {"organization": org, "repository": None, "role": "write"}
    ]
    err(admin.get(f"{API}/organizations/nosuch{world.s}/teams/devs/permissions"), 404)


def test_users_admin_and_self(world: World, admin: httpx.Client) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    with world.client("reader") as c:
        err(c.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 403)
        err(c.get(f"{API}/users"), 403)
        err(c.get(f"{API}/users/{world.users['writer']}"), 403)
        me = ok(c.get(f"{API}/user"))
        assert me["username"] == world.users["reader"] and me["is_admin"] is False
    u = ok(
        admin.post(
            f"{API}/users", json={"username": name, "password": PASSWORD, "email": "u@example.org"}
        ),
        201,
    )
    assert u["email"] == "u@example.org" and u["disabled"] is False and u["source"] == "local"
    assert "password" not in u and "password_hash" not in u
    err(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 409)
    err(admin.post(f"{API}/users", json={"username": world.org, "password": PASSWORD}), 409)
    err(
        admin.post(f"{API}/users", json={"username": "ok-name", "password": "short"}),
        422,
        "password",
    )
    err(admin.post(f"{API}/users", json={"username": "Bad", "password": PASSWORD}), 422, "username")
    err(
        admin.post(
            f"{API}/users", json={"username": "okname", "password": PASSWORD, "is_admin": "yes"}
        ),
        422,
        "is_admin",
    )
    assert name in {
        x["username"] for x in ok(admin.get(f"{API}/users", params={"q": name}))["items"]
    }
    with httpx.Client(base_url=world.server.url, auth=(name, PASSWORD)) as c:
        assert (
            ok(c.patch(f"{API}/users/{name}", json={"display_name": "U <i>"}))["display_name"]
            == "U <i>"
        )
        err(c.patch(f"{API}/users/{name}", json={"is_admin": True}), 403)
        err(c.patch(f"{API}/users/{name}", json={"password": "new-password-1"}), 403)
        err(
            c.post(
                f"{API}/users/{name}/password",
                json={"old_password": "wrong-one", "new_password": "new-password-1"},
            ),
            422,
            "old_password",
        )
        err(
            c.post(
                f"{API}/users/{name}/password",
                json={"old_password": PASSWORD, "new_password": "short"},
            ),
            422,
            "new_password",
        )
        ok(
            c.post(
                f"{API}/users/{name}/password",
                json={"old_password": PASSWORD, "new_password": "new-password-1"},
            ),
            204,
        )
    with httpx.Client(base_url=world.server.url, auth=(name, PASSWORD)) as c:
        err(c.get(f"{API}/user"), 401)
    with httpx.Client(base_url=world.server.url, auth=(name, "new-password-1")) as c:
        ok(c.get(f"{API}/user"))
        err(
            c.post(
                f"{API}/users/{world.users['reader']}/password",
                json={"old_password": PASSWORD, "new_password": "new-password-2"},
            ),
            403,
        )
    ok(admin.patch(f"{API}/users/{name}", json={"disabled": True}))
    with httpx.Client(base_url=world.server.url, auth=(name, "new-password-1")) as c:
        err(c.get(f"{API}/user"), 401)
        assert c.get("/v2/").status_code == 401
    err(admin.patch(f"{API}/users/admin", json={"disabled": True}), 409)
    err(admin.patch(f"{API}/users/admin", json={"is_admin": False}), 409)
    err(admin.delete(f"{API}/users/admin"), 409)
    with world.client("reader") as c:
        err(c.delete(f"{API}/users/{name}"), 403)
    ok(admin.patch(f"{API}/users/{name}", json={"disabled": False}))
    with httpx.Client(base_url=world.server.url, auth=(name, "new-password-1")) as c:
        assert (
            put_manifest(c, f"{name}/own", "1", image_manifest(c, f"{name}/own")).status_code == 201
        )
        robot = ok(
            c.post(
                f"{API}/namespaces/{name}/robots",
                json={"name": "bot", "access": [{"organization": name, "actions": ["pull"]}]},
            ),
            201,
        )
    err(admin.delete(f"{API}/users/{name}"), 409)  # a personal namespace with repositories
    ok(admin.delete(f"{API}/repositories/{name}/own"), 204)
    ok(admin.delete(f"{API}/users/{name}"), 204)
    err(admin.get(f"{API}/users/{name}"), 404)
    # a new account of the same name inherits nothing: not the old robot
    ok(admin.post(f"{API}/users", json={"username": name, "password": PASSWORD}), 201)
    with httpx.Client(base_url=world.server.url, auth=(robot["name"], robot["secret"])) as c:
        assert c.get("/v2/").status_code == 401
    actions = [
        e["action"]
        for e in ok(admin.get(f"{API}/audit", params={"action": "user.update", "limit": 1000}))[
            "events"
        ]
    ]
    assert actions


def test_every_robot_for_administrators(world: World, admin: httpx.Client) -> None:
    """GET /robots: all namespaces' robots (system administrators), a namespace filter,
    pagination; others keep the per-namespace list."""
    own = world.users["writer"]
    with world.client("writer") as c:
        mine = ok(
            c.post(
                f"{API}/namespaces/{own}/robots",
                json={"name": "mine", "access": [{"organization": own, "actions": ["pull"]}]},
            ),
            201,
        )["name"]
    names = set()
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = ok(admin.get(f"{API}/robots", params=params))
        assert len(page["items"]) <= 2
        names |= {r["name"] for r in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert {world.robot[0], mine} <= names
    assert [
        r["name"] for r in ok(admin.get(f"{API}/robots", params={"namespace": own}))["items"]
    ] == [mine]
    in_org = ok(admin.get(f"{API}/robots", params={"namespace": world.org}))["items"]
    assert {r["namespace"] for r in in_org} == {world.org} and world.robot[0] in {
        r["name"] for r in in_org
    }
    assert ok(admin.get(f"{API}/robots", params={"namespace": f"none{world.s}"}))["items"] == []
    err(admin.get(f"{API}/robots", params={"namespace": "a/b"}), 400, "namespace")
    err(admin.get(f"{API}/robots", params={"limit": 500}), 400, "limit")
    for who in ("orgadmin", "writer", "robot"):
        with world.client(who) as c:
            err(c.get(f"{API}/robots"), 403)
    with world.client("anonymous") as c:
        err(c.get(f"{API}/robots"), 401)
    with world.client("writer") as c:  # what non-admins see is unchanged
        assert [r["name"] for r in ok(c.get(f"{API}/namespaces/{own}/robots"))["items"]] == [mine]
        ok(c.delete(f"{API}/namespaces/{own}/robots/mine"), 204)


def test_robots(world: World, admin: httpx.Client) -> None:
    org = world.org
    repo = f"{org}/robotic"
    body = {
        "name": "deploy",
        "description": "CD",
        "access": [{"repository": repo, "actions": ["pull", "push"]}],
    }
    with world.client("teamuser") as c:
        err(c.post(f"{API}/namespaces/{org}/robots", json=body), 403)
        err(c.get(f"{API}/namespaces/{org}/robots"), 403)
    with world.client("reader") as c:  # a user manages robots of their personal namespace
        mine = ok(
            c.post(
                f"{API}/namespaces/{world.users['reader']}/robots",
                json={
                    "name": "me",
                    "access": [{"organization": world.users["reader"], "actions": ["pull"]}],
                },
            ),
            201,
        )
        assert mine["name"] == f"{world.users['reader']}+me"
        err(c.post(f"{API}/namespaces/{world.users['writer']}/robots", json=body), 403)
    with world.client("orgadmin") as c:
        created = c.post(f"{API}/namespaces/{org}/robots", json=body)
        assert created.headers["cache-control"] == "no-store"
        r = ok(created, 201)
        name, secret = r["name"], r["secret"]
        assert name == f"{org}+deploy" and r["access"] == [
            {"repository": repo, "organization": None, "actions": ["pull", "push"]}
        ]
        assert "secret" not in ok(c.get(f"{API}/namespaces/{org}/robots/deploy"))
        assert name in {x["name"] for x in ok(c.get(f"{API}/namespaces/{org}/robots"))["items"]}
        err(c.post(f"{API}/namespaces/{org}/robots", json=body), 409)
        outside = {
            **body,
            "name": "x1",
            "access": [{"repository": "elsewhere/app", "actions": ["pull"]}],
        }
        err(c.post(f"{API}/namespaces/{org}/robots", json=outside), 422, "access")
        err(
            c.post(
                f"{API}/namespaces/{org}/robots",
                json={**body, "name": "x2", "access": [{"repository": repo, "actions": ["own"]}]},
            ),
            422,
            "access.actions",
        )
        err(
            c.post(
                f"{API}/namespaces/{org}/robots", json={**body, "name": "x3", "expires_in_days": 0}
            ),
            422,
            "expires_in_days",
        )
    with httpx.Client(base_url=world.server.url, auth=(name, secret)) as rc:
        assert put_manifest(rc, repo, "1", image_manifest(rc, repo)).status_code == 201
    with world.client("orgadmin") as c:
        again = ok(c.post(f"{API}/namespaces/{org}/robots/deploy/secret"))
        assert again["secret"] != secret
        upd = ok(
            c.patch(
                f"{API}/namespaces/{org}/robots/deploy",
                json={"access": [{"repository": repo, "actions": ["pull"]}]},
            )
        )
        assert upd["access"][0]["actions"] == ["pull"]
    with httpx.Client(base_url=world.server.url, auth=(name, secret)) as rc:
        assert rc.get(f"/v2/{repo}/manifests/1").status_code == 401  # the old secret is dead
    with httpx.Client(base_url=world.server.url, auth=(name, again["secret"])) as rc:
        assert rc.get(f"/v2/{repo}/manifests/1").status_code == 200
        assert rc.post(f"/v2/{repo}/blobs/uploads/").status_code == 403  # pull only now
        err(rc.get(f"{API}/namespaces/{org}/robots"), 403)  # robots manage nothing
    with world.client("orgadmin") as c:
        ok(c.post(f"{API}/namespaces/{org}/robots/deploy/revoke"), 204)
        assert ok(c.get(f"{API}/namespaces/{org}/robots/deploy"))["revoked_at"] is not None
    with httpx.Client(base_url=world.server.url, auth=(name, again["secret"])) as rc:
        assert rc.get(f"/v2/{repo}/manifests/1").status_code == 401
    with world.client("orgadmin") as c:
        ok(c.delete(f"{API}/namespaces/{org}/robots/deploy"), 204)
        err(c.get(f"{API}/namespaces/{org}/robots/deploy"), 404)
        err(c.delete(f"{API}/namespaces/{org}/robots/deploy"), 404)
    actions = {
        e["action"]
        for e in ok(
            admin.get(f"{API}/audit", params={"actor": world.users["orgadmin"], "limit": 1000})
        )["events"]
    }
    assert {
        "robot.create",
        "robot.regenerate",
        "robot.update",
        "robot.revoke",
        "robot.delete",
    } <= actions


@pytest.mark.parametrize("path", ["/user", "/organizations", "/users/admin", "/dashboard"])
def test_anonymous_is_refused(world: World, path: str) -> None:
    with world.client("anonymous") as c:
        r = c.get(f"{API}{path}")
        err(r, 401)
        assert r.headers["www-authenticate"].startswith("Basic")
    with httpx.Client(base_url=world.server.url, auth=("admin", "wrong-password")) as c:
        err(c.get(f"{API}{path}"), 401)
