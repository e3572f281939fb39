"""Who manages vulnerability policies through /api/v1/vulnerability-policies: system
administrators any; an organization's admins their organization's and its repositories'; a
repository's admins that repository's; everyone else 403 (anonymous 401); and the list shows
each caller the policies they manage."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, image_manifest, put_manifest

from .conftest import auth_server

pytest.importorskip("moorage.scan.wiring", reason="the scan capability is not in this tree yet")


@pytest.fixture(scope="module")
def srv() -> Iterator[MoorageServer]:
    with auth_server() as s:
        yield s


def user(admin: httpx.Client, srv: MoorageServer) -> httpx.Client:
    name = f"u{uuid.uuid4().hex[:8]}"
    password = "pw-" + uuid.uuid4().hex
    r = admin.post("/api/v1/users", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    c = httpx.Client(base_url=srv.url, auth=(name, password), timeout=30)
    c.headers["x-test-user"] = name
    return c


def name_of(c: httpx.Client) -> str:
    return c.headers["x-test-user"]


def test_org_and_repository_admins_manage_their_own_policies(srv: MoorageServer) -> None:
    admin = httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD), timeout=30)
    org, other = f"pol{uuid.uuid4().hex[:6]}", f"oth{uuid.uuid4().hex[:6]}"
    for o in (org, other):
        assert admin.post("/api/v1/organizations", json={"name": o}).status_code == 201
    for repo in (f"{org}/app", f"{org}/lib", f"{other}/app"):
        assert put_manifest(admin, repo, "1", image_manifest(admin, repo)).status_code == 201
    org_admin, repo_admin, writer = user(admin, srv), user(admin, srv), user(admin, srv)
    perms = f"/api/v1/organizations/{org}/permissions/users"
    assert admin.put(f"{perms}/{name_of(org_admin)}", json={"role": "admin"}).status_code == 204
    assert admin.put(f"{perms}/{name_of(writer)}", json={"role": "write"}).status_code == 204
    r = admin.put(
        f"/api/v1/repositories/{org}/app/-/permissions/users/{name_of(repo_admin)}",
        json={"role": "admin"},
    )
    assert r.status_code == 204, r.text

    body = {
        "block_severity": "high",
        "fixable_only": True,
        "allow": [{"id": "CVE-2024-1234", "expires": "2030-01-01", "reason": "vendor says no"}],
    }
    vp = "/api/v1/vulnerability-policies"
    # the organization's admin: its policy and its repositories'
    r = org_admin.put(f"{vp}/{org}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "namespace" and r.json()["fixable_only"] is True
    assert org_admin.get(f"{vp}/{org}").json()["allow"] == body["allow"]
    assert org_admin.put(f"{vp}/{org}/lib", json={"block_severity": "critical"}).status_code == 200
    assert org_admin.put(f"{vp}/{other}", json=body).status_code == 403
    assert org_admin.put(f"{vp}/{other}/app", json=body).status_code == 403
    assert org_admin.get(f"{vp}/{other}").status_code == 403
    # the repository's admin: that repository only
    assert repo_admin.put(f"{vp}/{org}/app", json=body).status_code == 200
    assert repo_admin.put(f"{vp}/{org}", json=body).status_code == 403
    assert repo_admin.delete(f"{vp}/{org}/lib").status_code == 403
    assert repo_admin.get(f"{vp}/{org}").status_code == 403
    # a writer of the organization, an outsider, anonymous, the system administrator
    assert writer.put(f"{vp}/{org}", json=body).status_code == 403
    assert writer.get(f"{vp}/{org}").status_code == 403
    assert writer.put(f"{vp}/{org}/app", json=body).status_code == 403
    assert httpx.put(f"{srv.url}{vp}/{org}", json=body).status_code == 401
    assert admin.put(f"{vp}/{other}", json={"block_severity": "low"}).status_code == 200

    # each sees the policies they manage
    def listed(c: httpx.Client) -> list[str]:
        r = c.get(vp)
        assert r.status_code == 200, r.text
        return [p["target"] for p in r.json()["items"]]

    assert listed(org_admin) == [org, f"{org}/app", f"{org}/lib"]
    assert listed(repo_admin) == [f"{org}/app"]
    assert listed(writer) == []
    assert set(listed(admin)) >= {org, f"{org}/app", f"{org}/lib", other}
    # removing: the organization's admin may, within the organization
    assert org_admin.delete(f"{vp}/{org}/lib").status_code == 204
    assert org_admin.delete(f"{vp}/{org}/lib").status_code == 404
    assert org_admin.delete(f"{vp}/{other}").status_code == 403
    assert org_admin.get(f"{vp}/{org}/lib").status_code == 404
    # every change is audited, with who made it
    events = admin.get("/api/v1/audit", params={"actor": name_of(org_admin)}).json()["events"]
    actions = [(e["action"], e["details"].get("target")) for e in events]
    assert ("vulnerability.policy.set", org) in actions
    assert ("vulnerability.policy.remove", f"{org}/lib") in actions
    # malformed targets
    assert admin.get(f"{vp}/Bad..Name").status_code in (400, 422)
