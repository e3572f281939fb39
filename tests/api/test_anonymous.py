"""Anonymous browsing of public repositories (auth.anonymous_access), and its refusal when off."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import API, World, err, ok
from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    own_auth_server,
    put_manifest,
)

PATHS = ("", "/-/tags", "/-/manifests/latest")


def test_anonymous_reads_public_repositories_only(world: World) -> None:
    with world.client("anonymous") as c:
        names = {
            r["name"] for r in ok(c.get(f"{API}/repositories", params={"limit": 200}))["items"]
        }
        assert world.pub in names and world.app not in names
        assert all(
            r["visibility"] == "public"
            for r in ok(c.get(f"{API}/repositories", params={"limit": 200}))["items"]
        )
        assert ok(c.get(f"{API}/repositories", params={"visibility": "private"}))["items"] == []
        detail = ok(c.get(f"{API}/repositories/{world.pub}"))
        assert detail["visibility"] == "public" and detail["permissions"] == ["pull"]
        assert [
            t["name"] for t in ok(c.get(f"{API}/repositories/{world.pub}/-/tags"))["items"]
        ] == ["latest"]
        digest = ok(c.get(f"{API}/repositories/{world.pub}/-/manifests/latest"))["digest"]
        assert ok(c.get(f"{API}/repositories/{world.pub}/-/referrers/{digest}"))["items"] == []
        # A private repository and a missing one are refused alike (before existence is
        # checked), as /v2 answers anonymous callers: 401, log in.
        for repo in (world.app, f"{world.org}/does-not-exist", "nobody/nothing"):
            for path in PATHS:
                r = c.get(f"{API}/repositories/{repo}{path}")
                err(r, 401)
                assert r.headers["www-authenticate"].startswith("Basic")
        err(c.get(f"{API}/repositories/{world.app}/-/referrers/{world.v1_digest}"), 401)
        # Reading only: settings, permissions and deletions still need an account.
        err(c.patch(f"{API}/repositories/{world.pub}", json={"description": "x"}), 401)
        err(c.delete(f"{API}/repositories/{world.pub}/-/tags/latest"), 401)
        err(c.get(f"{API}/repositories/{world.pub}/-/permissions"), 401)
        err(c.get(f"{API}/organizations"), 401)
    # Wrong credentials are not read as anonymous.
    with httpx.Client(base_url=world.server.url, auth=("admin", "wrong-password")) as c:
        err(c.get(f"{API}/repositories/{world.pub}"), 401)


def test_openapi_marks_public_reads(world: World) -> None:
    with world.client("anonymous") as c:
        doc = ok(c.get(f"{API}/openapi.json"))
    assert {} in doc["paths"]["/repositories"]["get"]["security"]
    assert {} not in doc["paths"]["/repositories/{repository}/-/permissions"]["get"]["security"]


@pytest.fixture(scope="module")
def closed_server() -> Iterator[MoorageServer]:
    """A registry with anonymous access off (SQLite) and one public repository."""
    with own_auth_server(MOORAGE_AUTH_ANONYMOUS_ACCESS="false") as srv:
        with httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD)) as c:
            r = put_manifest(c, "admin/open", "latest", image_manifest(c, "admin/open"))
            assert r.status_code == 201, r.text
            ok(c.patch(f"{API}/repositories/admin/open", json={"visibility": "public"}))
        yield srv


def test_anonymous_access_off_refuses_everything(closed_server: MoorageServer) -> None:
    with httpx.Client(base_url=closed_server.url) as c:
        err(c.get(f"{API}/repositories"), 401)
        for path in PATHS:
            err(c.get(f"{API}/repositories/admin/open{path}"), 401)
        assert c.get("/v2/admin/open/manifests/latest").status_code == 401
        # and the web UI's public pages send the visitor to the login form
        for page in ("/ui/repositories", "/ui/repositories/admin/open"):
            r = c.get(page)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    with httpx.Client(base_url=closed_server.url, auth=("admin", ADMIN_PASSWORD)) as c:
        assert [r["name"] for r in ok(c.get(f"{API}/repositories"))["items"]] == ["admin/open"]
