"""A directory (LDAP) account named like an organization must not become that organization's
owner: a user's personal namespace gives every right on ``<username>/*``."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.auth.slapd import missing_tools
from tests.auth.test_ldap_e2e import LDAP_PASSWORD, ORG, REPO, LdapRegistry, ldap_registry
from tests.conftest import ADMIN_PASSWORD, image_manifest, put_manifest

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))


@pytest.fixture(scope="module")
def reg(backend: tuple[str, str | None]) -> Iterator[LdapRegistry]:
    with ldap_registry(backend) as r:
        yield r


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_directory_user_named_like_an_organization_gets_nothing(reg: LdapRegistry) -> None:
    url = reg.server.url
    with httpx.Client(base_url=url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
        assert put_manifest(admin, REPO, "v1", image_manifest(admin, REPO)).status_code == 201
    reg.ldap.add_user(ORG, LDAP_PASSWORD, mail="squatter@example.org")
    headers = _basic(ORG, LDAP_PASSWORD)
    r = httpx.get(
        f"{url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{REPO}:pull,push,delete"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 401, r.text
    r = httpx.delete(f"{url}/v2/{REPO}/manifests/v1", headers=headers, timeout=60)
    assert r.status_code in (401, 403), r.text
    r = httpx.patch(
        f"{url}/api/v1/repositories/{REPO}",
        json={"visibility": "public"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code in (401, 403), r.text
    with httpx.Client(base_url=url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
        assert admin.get(f"/v2/{REPO}/manifests/v1").status_code == 200
        assert admin.get(f"/api/v1/users/{ORG}").status_code == 404  # no account was made


def test_directory_user_named_like_a_namespace_with_repositories_gets_nothing(
    reg: LdapRegistry,
) -> None:
    """``library/nginx`` pushed by an administrator (no organization ``library``): a directory
    account ``library`` must not become its owner."""
    url = reg.server.url
    repo = "library/nginx"
    with httpx.Client(base_url=url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
        assert put_manifest(admin, repo, "v1", image_manifest(admin, repo)).status_code == 201
    reg.ldap.add_user("library", LDAP_PASSWORD)
    headers = _basic("library", LDAP_PASSWORD)
    r = httpx.delete(f"{url}/v2/{repo}/manifests/v1", headers=headers, timeout=60)
    assert r.status_code == 401, r.text
    with httpx.Client(base_url=url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
        assert admin.get(f"/v2/{repo}/manifests/v1").status_code == 200
