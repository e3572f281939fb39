"""Cross-tenant access (IDOR) and privilege escalation over /api/v1: a member, team member,
repository admin or organization admin of x reaching into y, or above their role in x."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import API, Tenants, expect


# Every endpoint that reads or changes y's things, as (method, path, JSON body or None).
def y_endpoints(t: Tenants) -> list[tuple[str, str, object]]:
    y, app = t.org["y"], f"{t.org['y']}/app"
    yrobot = "ci"
    d = t.digest["y"]
    role = {"role": "admin"}
    me = t.users["xadmin"]
    return [
        ("GET", f"/organizations/{y}", None),
        ("PATCH", f"/organizations/{y}", {"description": "owned"}),
        ("DELETE", f"/organizations/{y}", None),
        ("GET", f"/organizations/{y}/permissions", None),
        ("PUT", f"/organizations/{y}/permissions/users/{me}", role),
        ("DELETE", f"/organizations/{y}/permissions/users/{t.users['yadmin']}", None),
        ("PUT", f"/organizations/{y}/permissions/teams/devs", role),
        ("GET", f"/organizations/{y}/teams", None),
        ("POST", f"/organizations/{y}/teams", {"name": "mine", "members": [me]}),
        ("GET", f"/organizations/{y}/teams/devs", None),
        ("PATCH", f"/organizations/{y}/teams/devs", {"description": "owned"}),
        ("DELETE", f"/organizations/{y}/teams/devs", None),
        ("PUT", f"/organizations/{y}/teams/devs/members/{me}", None),
        ("DELETE", f"/organizations/{y}/teams/devs/members/{t.users['ymember']}", None),
        ("GET", f"/namespaces/{y}/robots", None),
        ("POST", f"/namespaces/{y}/robots", {"name": "evil", "access": [{"repository": app, "actions": ["pull"]}]}),
        ("GET", f"/namespaces/{y}/robots/{yrobot}", None),
        ("PATCH", f"/namespaces/{y}/robots/{yrobot}", {"description": "owned"}),
        ("POST", f"/namespaces/{y}/robots/{yrobot}/secret", None),
        ("POST", f"/namespaces/{y}/robots/{yrobot}/revoke", None),
        ("DELETE", f"/namespaces/{y}/robots/{yrobot}", None),
        ("GET", f"/repositories/{app}", None),
        ("PATCH", f"/repositories/{app}", {"visibility": "public"}),
        ("DELETE", f"/repositories/{app}", None),
        ("GET", f"/repositories/{app}/-/tags", None),
        ("DELETE", f"/repositories/{app}/-/tags/v1", None),
        ("GET", f"/repositories/{app}/-/manifests/v1", None),
        ("DELETE", f"/repositories/{app}/-/manifests/{d}", None),
        ("GET", f"/repositories/{app}/-/referrers/{d}", None),
        ("GET", f"/repositories/{app}/-/permissions", None),
        ("PUT", f"/repositories/{app}/-/permissions/users/{me}", role),
        ("PUT", f"/repositories/{app}/-/permissions/teams/{t.org['x']}/devs", role),
        ("GET", f"/users/{t.users['yadmin']}", None),
        ("PATCH", f"/users/{t.users['yadmin']}", {"email": "owned@example.org"}),
        ("GET", f"/users/{t.users['yadmin']}/tokens", None),
        ("POST", f"/users/{t.users['yadmin']}/tokens", {"name": "stolen"}),
        ("DELETE", f"/users/{t.users['yadmin']}/tokens/1", None),
        ("POST", f"/users/{t.users['yadmin']}/password", {"old_password": "x", "new_password": "newpassword1"}),
        ("GET", "/audit", None),
        ("GET", "/audit/export", None),
        ("GET", "/users", None),
        ("POST", "/users", {"username": "sneaky", "password": "sneaky-password"}),
        ("POST", "/organizations", {"name": "sneakyorg"}),
        ("GET", "/system/info", None),
    ]  # fmt: skip


def _send(c: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    return (
        c.request(method, API + path, json=body)
        if body is not None
        else c.request(method, API + path)
    )


@pytest.mark.parametrize(
    "who", ["xadmin", "xmember", "xrepoadmin", "outsider", "xrobot", "pat_all"]
)
def test_nobody_of_x_reaches_into_y(tenants: Tenants, who: str) -> None:
    with tenants.client(who) as c:
        for method, path, body in y_endpoints(tenants):
            r = _send(c, method, path, body)
            assert r.status_code == 403, f"{who}: {method} {path}: {r.status_code} {r.text}"
            assert r.json()["error"]["code"] == "DENIED"
    # ...and y is untouched
    with tenants.client("yadmin") as c:
        y = tenants.org["y"]
        team = expect(c.get(f"{API}/organizations/{y}/teams/devs"), 200)
        assert team["members"] == [tenants.users["ymember"]] and team["description"] == ""
        assert expect(c.get(f"{API}/organizations/{y}"), 200)["description"] == ""
        robot = expect(c.get(f"{API}/namespaces/{y}/robots/ci"), 200)
        assert robot["revoked_at"] is None and robot["description"] == ""
        repo = expect(c.get(f"{API}/repositories/{y}/app"), 200)
        assert repo["visibility"] == "private"
        tags = expect(c.get(f"{API}/repositories/{y}/app/-/tags"), 200)["items"]
        assert [x["name"] for x in tags] == ["v1"]


def test_lists_show_only_the_callers_tenancy(tenants: Tenants) -> None:
    x, y = tenants.org["x"], tenants.org["y"]
    with tenants.client("xadmin") as c:
        orgs = [o["name"] for o in expect(c.get(f"{API}/organizations?limit=200"), 200)["items"]]
        assert x in orgs and y not in orgs
        repos = expect(c.get(f"{API}/repositories?limit=200"), 200)["items"]
        # Its own repositories, and public ones of other tests on this server (anyone may browse
        # public repositories, as in Harbor); nothing private of another tenant.
        names = {r["name"] for r in repos}
        assert f"{x}/app" in names
        assert not any(n.startswith(f"{y}/") for n in names), names
        assert all(r["visibility"] == "public" or r["name"].startswith(f"{x}/") for r in repos)
        r = c.get(f"{API}/repositories", params={"namespace": y})
        assert expect(r, 200)["items"] == []
        dash = expect(c.get(f"{API}/dashboard"), 200)
        assert y not in str(dash)


def test_existence_of_y_is_not_revealed_to_outsiders(tenants: Tenants) -> None:
    """An existing private organization, team, robot or repository answers an outsider exactly
    as a missing one does."""
    y = tenants.org["y"]
    pairs = [
        (f"/organizations/{y}", "/organizations/nosuchorg0"),
        (f"/organizations/{y}/teams", "/organizations/nosuchorg0/teams"),
        (f"/organizations/{y}/teams/devs", f"/organizations/{y}/teams/nosuchteam"),
        (f"/organizations/{y}/teams/devs", "/organizations/nosuchorg0/teams/devs"),
        (f"/organizations/{y}/permissions", "/organizations/nosuchorg0/permissions"),
        (f"/namespaces/{y}/robots/ci", f"/namespaces/{y}/robots/nosuchrobot"),
        (f"/namespaces/{y}/robots", "/namespaces/nosuchorg0/robots"),
        (f"/repositories/{y}/app", f"/repositories/{y}/nosuchrepo"),
        (f"/repositories/{y}/app/-/tags", f"/repositories/{y}/nosuchrepo/-/tags"),
        (f"/repositories/{y}/app/-/manifests/v1", f"/repositories/{y}/app/-/manifests/nosuch"),
        (f"/users/{tenants.users['yadmin']}", "/users/nosuchuser0"),
    ]
    writes = [
        ("PATCH", f"/organizations/{y}", "/organizations/nosuchorg0", {"description": "d"}),
        ("PATCH", f"/organizations/{y}/teams/devs", f"/organizations/{y}/teams/nosuchteam", {"description": "d"}),
        ("PUT", f"/organizations/{y}/teams/devs/members/{tenants.users['outsider']}", f"/organizations/nosuchorg0/teams/devs/members/{tenants.users['outsider']}", None),
        ("DELETE", f"/organizations/{y}/teams/devs", f"/organizations/{y}/teams/nosuchteam", None),
        ("POST", f"/organizations/{y}/teams", "/organizations/nosuchorg0/teams", {"name": "t1"}),
        ("PUT", f"/organizations/{y}/permissions/users/{tenants.users['outsider']}", f"/organizations/nosuchorg0/permissions/users/{tenants.users['outsider']}", {"role": "read"}),
    ]  # fmt: skip
    for who in ("outsider", "xadmin", "xmember"):
        with tenants.client(who) as c:
            for real, missing in pairs:
                a, b = c.get(API + real), c.get(API + missing)
                assert (a.status_code, a.json()["error"]["code"]) == (403, "DENIED"), (who, real)
                assert (b.status_code, b.json()["error"]["code"]) == (403, "DENIED"), (who, missing)
            for method, real, missing, body in writes:
                a, b = _send(c, method, real, body), _send(c, method, missing, body)
                assert a.status_code == b.status_code == 403, (who, method, real, a.text, b.text)
    # those who may look still get a 404 for what is missing
    with tenants.client("yadmin") as c:
        expect(c.get(f"{API}/organizations/{y}/teams/nosuchteam"), 404)
    with tenants.client("sysadmin") as c:
        expect(c.get(f"{API}/organizations/nosuchorg0"), 404)
        expect(c.get(f"{API}/organizations/nosuchorg0/teams/devs"), 404)


def test_existence_is_not_revealed_in_the_ui(tenants: Tenants) -> None:
    from tests.security.conftest import login_form

    y = tenants.org["y"]
    with login_form(tenants.server, tenants.users["outsider"]) as c:
        for real, missing in [
            (f"/ui/organizations/{y}", "/ui/organizations/nosuchorg0"),
            (f"/ui/organizations/{y}/teams/devs", f"/ui/organizations/{y}/teams/nosuchteam"),
            (f"/ui/repositories/{y}/app", f"/ui/repositories/{y}/nosuchrepo"),
            (
                f"/ui/repositories/{y}/app/manifests/{tenants.digest['y']}",
                f"/ui/repositories/{y}/nosuchrepo/manifests/{tenants.digest['y']}",
            ),
        ]:
            a, b = c.get(real), c.get(missing)
            assert a.status_code == b.status_code == 403, (real, a.status_code, b.status_code)
            assert "devs" not in a.text


def test_team_member_cannot_manage_their_own_org(tenants: Tenants) -> None:
    """xmember (read on x through team devs) may look at x but change nothing in it."""
    x, me = tenants.org["x"], tenants.users["xmember"]
    with tenants.client("xmember") as c:
        expect(c.get(f"{API}/organizations/{x}"), 200)
        expect(c.get(f"{API}/organizations/{x}/teams/devs"), 200)
        for method, path, body in [
            ("PUT", f"/organizations/{x}/permissions/users/{me}", {"role": "admin"}),
            ("PUT", f"/organizations/{x}/permissions/teams/devs", {"role": "admin"}),
            ("POST", f"/organizations/{x}/teams", {"name": "mine", "members": [me]}),
            ("PATCH", f"/organizations/{x}/teams/devs", {"description": "mine"}),
            ("GET", f"/organizations/{x}/permissions", None),
            ("GET", f"/namespaces/{x}/robots", None),
            ("POST", f"/namespaces/{x}/robots", {"name": "mine", "access": [{"organization": x, "actions": ["push"]}]}),
            ("PUT", f"/repositories/{x}/app/-/permissions/users/{me}", {"role": "write"}),
            ("DELETE", f"/repositories/{x}/app/-/tags/v1", None),
            ("PATCH", f"/repositories/{x}/app", {"description": "mine"}),
        ]:  # fmt: skip
            r = _send(c, method, path, body)
            assert r.status_code == 403, (method, path, r.text)


def test_repository_admin_stays_inside_the_repository(tenants: Tenants) -> None:
    x, me = tenants.org["x"], tenants.users["xrepoadmin"]
    with tenants.client("xrepoadmin") as c:
        expect(c.get(f"{API}/repositories/{x}/app/-/permissions"), 200)
        for method, path, body in [
            ("PUT", f"/organizations/{x}/permissions/users/{me}", {"role": "admin"}),
            ("GET", f"/organizations/{x}/permissions", None),
            ("PUT", f"/organizations/{x}/teams/devs/members/{me}", None),
            ("PUT", f"/repositories/{x}/other/-/permissions/users/{me}", {"role": "admin"}),
            ("PATCH", f"/repositories/{x}/other", {"visibility": "public"}),
            ("POST", f"/namespaces/{x}/robots", {"name": "mine", "access": [{"repository": f"{x}/app", "actions": ["push"]}]}),
        ]:  # fmt: skip
            r = _send(c, method, path, body)
            assert r.status_code == 403, (method, path, r.text)


def test_org_admin_cannot_become_system_admin(tenants: Tenants) -> None:
    me = tenants.users["xadmin"]
    with tenants.client("xadmin") as c:
        for body in ({"is_admin": True}, {"disabled": False}, {"password": "new-password-1"}):
            r = c.patch(f"{API}/users/{me}", json=body)
            assert r.status_code == 403, (body, r.text)
        # profile fields are theirs to change, and is_admin stays false
        u = expect(c.patch(f"{API}/users/{me}", json={"display_name": "X Admin"}), 200)
        assert u["is_admin"] is False and u["display_name"] == "X Admin"
        expect(c.get(f"{API}/system/info"), 403)
        expect(c.get(f"{API}/audit"), 403)
        # a robot of their org cannot be given access outside it
        r = c.post(
            f"{API}/namespaces/{tenants.org['x']}/robots",
            json={"name": "wide", "access": [{"repository": f"{tenants.org['y']}/app", "actions": ["pull"]}]},
        )  # fmt: skip
        assert r.status_code == 422 and r.json()["error"]["field"] == "access", r.text
        r = c.post(
            f"{API}/namespaces/{tenants.org['x']}/robots",
            json={"name": "wider", "access": [{"organization": tenants.org["y"], "actions": ["pull"]}]},
        )  # fmt: skip
        assert r.status_code == 422, r.text
        robot = f"{API}/namespaces/{tenants.org['x']}/robots/ci"
        r = c.patch(
            robot, json={"access": [{"repository": f"{tenants.org['y']}/app", "actions": ["pull"]}]}
        )
        assert r.status_code == 422, r.text
    # the x robot still cannot pull y
    name, secret = tenants.robots["x"]
    with httpx.Client(base_url=tenants.server.url, auth=(name, secret), timeout=60) as c:
        r = c.get(f"/v2/{tenants.org['y']}/app/manifests/v1")
        assert r.status_code in (401, 403), r.text


def test_mass_assignment_renames_and_transfers_are_refused(tenants: Tenants) -> None:
    x, me = tenants.org["x"], tenants.users["xadmin"]
    with tenants.client("xadmin") as c:
        for method, path, body in [
            ("PATCH", f"/users/{me}", {"username": "admin"}),
            ("PATCH", f"/users/{me}", {"source": "ldap"}),
            ("PATCH", f"/users/{me}", {"password_hash": "x"}),
            ("PATCH", f"/organizations/{x}", {"description": "d", "name": tenants.org["y"]}),
            ("PATCH", f"/organizations/{x}/teams/devs", {"description": "d", "organization": tenants.org["y"]}),
            ("PATCH", f"/namespaces/{x}/robots/ci", {"namespace": tenants.org["y"]}),
            ("PATCH", f"/repositories/{x}/app", {"name": f"{tenants.org['y']}/app"}),
            ("POST", f"/namespaces/{x}/robots", {"name": "n1", "namespace": tenants.org["y"], "access": []}),
        ]:  # fmt: skip
            r = c.request(method, API + path, json=body)
            assert r.status_code == 422, (method, path, r.text)
        assert expect(c.get(f"{API}/users/{me}"), 200)["is_admin"] is False


def test_ui_admin_forms_refuse_non_admins(tenants: Tenants) -> None:
    from tests.security.conftest import login_form, page_csrf

    me, y = tenants.users["xadmin"], tenants.org["y"]
    with login_form(tenants.server, me) as c:
        csrf = page_csrf(c)
        for path, form in [
            (f"/ui/users/{me}", {"is_admin": "true"}),
            (
                "/ui/users",
                {"username": "uisneaky", "password": "long-password-1", "is_admin": "true"},
            ),
            ("/ui/organizations", {"name": "uisneakyorg"}),
            (f"/ui/organizations/{y}/teams", {"name": "mine"}),
            (
                f"/ui/organizations/{y}/permissions/grant",
                {"kind": "user", "subject": me, "role": "admin"},
            ),
            (f"/ui/organizations/{y}/teams/devs/members/add", {"username": me}),
            (f"/ui/repositories/{y}/app/settings", {"visibility": "public"}),
            (
                f"/ui/repositories/{y}/app/permissions/grant",
                {"kind": "user", "subject": me, "role": "admin"},
            ),
            (f"/ui/repositories/{y}/app/tags/v1/delete", {}),
            (f"/ui/robots/{y}+ci/revoke", {}),
            ("/ui/robots", {"namespace": y, "name": "mine", "access": f"{y}/app=pull"}),
        ]:
            r = c.post(path, data={**form, "csrf_token": csrf})
            assert r.status_code == 403, (path, r.status_code)
        assert c.get("/ui/audit").status_code == 403
        assert c.get("/ui/users").status_code == 403
    with tenants.client("sysadmin") as c:
        assert expect(c.get(f"{API}/users/{me}"), 200)["is_admin"] is False
        assert expect(c.get(f"{API}/repositories/{y}/app"), 200)["visibility"] == "private"
