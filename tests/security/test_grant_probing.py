"""Probing accounts, organizations and teams through permission grants on one's own repository.

Any user administers the repositories of their personal namespace, so grants are open to every
account: a grant names a user and must say when there is none (as in Harbor and Quay), but a
disabled account answers like a missing one, and other organizations' teams cannot be named."""

from __future__ import annotations

import httpx

from tests.security.conftest import API, Tenants, expect


def answer(r: httpx.Response) -> tuple[int, str | None]:
    body = r.json() if r.content else None
    return r.status_code, body["error"]["code"] if body else None


def test_grants_reveal_no_more_than_a_repository_admin_needs(tenants: Tenants) -> None:
    me = tenants.users["outsider"]
    perms = f"{API}/repositories/{me}/probe/-/permissions"
    read = {"role": "read"}
    with tenants.client("sysadmin") as admin:
        body = {"disabled": True}
        expect(admin.patch(f"{API}/users/{tenants.users['disabled']}", json=body), 200)
    with tenants.client("outsider") as c:
        # A disabled account looks like a missing one.
        missing = c.put(f"{perms}/users/nosuchuser0", json=read)
        disabled = c.put(f"{perms}/users/{tenants.users['disabled']}", json=read)
        assert answer(missing) == answer(disabled) == (404, "NOT_FOUND"), disabled.text
        # Revoking from a missing account is as quiet as from one holding no grant.
        none_held = c.delete(f"{perms}/users/{tenants.users['ymember']}")
        assert answer(c.delete(f"{perms}/users/nosuchuser0")) == answer(none_held)
        # Another organization's team cannot be named, existing or not.
        y = tenants.org["y"]
        real = c.put(f"{perms}/teams/{y}/devs", json=read)
        fake = c.put(f"{perms}/teams/nosuchorg0/devs", json=read)
        assert answer(real) == answer(fake) and real.status_code == 400, real.text
        assert real.json()["error"]["message"].replace(y, "") == fake.json()["error"][
            "message"
        ].replace("nosuchorg0", "")
        assert [g for g in expect(c.get(perms), 200)["items"] if g.get("team")] == []
        # Granting an active account works, as it must.
        expect(c.put(f"{perms}/users/{tenants.users['ymember']}", json=read), 204)
    # Inside the organization, its own teams are granted as before.
    with tenants.client("xrepoadmin") as c:
        x = tenants.org["x"]
        expect(c.put(f"{API}/repositories/{x}/app/-/permissions/teams/{x}/devs", json=read), 204)
