"""Cache organizations through the REST API and the web UI (issue 14: "the same through the API
and UI"), on a real server with access control: create with write-only upstream credentials, a
pull through it showing in the usage, update, delete; non-administrators refused; the UI form
with its CSRF token."""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, postgres_database
from tests.replication.peers import Distribution

from .conftest import SECRET
from .test_clients import _push_image

ADMIN = ("admin", ADMIN_PASSWORD)
UPSTREAM_PASSWORD = "upstream-pw-never-returned-7f3a"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="moorage-mirror-api-"))
        url = stack.enter_context(postgres_database()) if backend[0] == "postgresql" else None
        srv = MoorageServer(
            Path(tmp) / "data",
            database_url=url,
            env={
                "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": SECRET,
            },
        ).start(timeout=180)
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def api(server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", auth=ADMIN, timeout=60) as c:
        yield c


def test_cache_lifecycle_through_the_api(
    server: MoorageServer, api: httpx.Client, upstream: Distribution
) -> None:
    name = f"api{uuid.uuid4().hex[:8]}"
    _push_image(upstream.url, f"team/{name}", "v1")
    r = api.post("/mirror/caches", json={
        "name": name, "url": upstream.url, "username": "robot", "password": UPSTREAM_PASSWORD,
        "platforms": ["linux/amd64"], "staleness_seconds": 60, "evict_after_days": 30,
    })
    assert r.status_code == 201, r.text
    assert UPSTREAM_PASSWORD not in r.text
    created = r.json()
    assert "password" not in created and created["has_password"] is True
    assert created["url"] == upstream.url and created["username"] == "robot"
    assert created["platforms"] == ["linux/amd64"] and created["evict_after_days"] == 30

    listed = api.get("/mirror/caches")
    assert listed.status_code == 200 and UPSTREAM_PASSWORD not in listed.text
    assert name in [c["name"] for c in listed.json()["items"]]
    # the organization exists as any other, and is a cache: a second create conflicts
    assert api.get(f"/organizations/{name}").status_code == 200
    assert api.post("/mirror/caches", json={"name": name, "url": upstream.url}).status_code == 409

    one = api.get(f"/mirror/caches/{name}").json()
    assert one["usage"] == {"bytes": 0, "images": 0, "repositories": 0, "last_pull": None}

    # a pull through the cache shows in the usage (Distribution sends no challenge: the
    # stored credentials are not needed, only kept)
    repo = f"{name}/team/{name}"
    with httpx.Client(base_url=server.url, auth=ADMIN, timeout=60) as v2:
        m = v2.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT})
        assert m.status_code == 200, m.text
        for layer in m.json()["layers"]:
            assert v2.get(f"/v2/{repo}/blobs/{layer['digest']}").status_code == 200
    deadline = time.monotonic() + 60
    while True:
        usage = api.get(f"/mirror/caches/{name}").json()["usage"]
        if usage["images"] == 1 and usage["bytes"] > 0 and usage["last_pull"]:
            break
        assert time.monotonic() < deadline, (usage, server.log())
        time.sleep(0.3)
    assert usage["repositories"] == 1

    r = api.patch(f"/mirror/caches/{name}", json={
        "staleness_seconds": 0, "max_bytes": 10_000_000, "evict_after_days": None,
        "platforms": None,
    })
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["staleness_seconds"] == 0 and changed["max_bytes"] == 10_000_000
    assert changed["evict_after_days"] is None and changed["platforms"] is None
    assert changed["has_password"] is True and changed["username"] == "robot"
    r = api.patch(f"/mirror/caches/{name}", json={"password": None})
    assert r.status_code == 200 and r.json()["has_password"] is False
    r = api.patch(f"/mirror/caches/{name}", json={"password": UPSTREAM_PASSWORD + "2"})
    assert r.json()["has_password"] is True and UPSTREAM_PASSWORD not in r.text
    r = api.patch(f"/mirror/caches/{name}", json={"staleness_seconds": None})
    assert r.status_code == 422 and r.json()["error"]["field"] == "staleness_seconds"
    assert api.patch(f"/mirror/caches/{name}", json={"url": "ftp://x"}).status_code == 422
    assert api.patch("/mirror/caches/nosuch", json={"insecure": True}).status_code == 404

    # the audit log has the changes, never the password
    audit = api.get("/audit", params={"limit": 100})
    if audit.status_code == 200:
        assert UPSTREAM_PASSWORD not in audit.text

    assert api.delete(f"/mirror/caches/{name}").status_code == 204
    assert api.get(f"/mirror/caches/{name}").status_code == 404
    assert api.delete(f"/mirror/caches/{name}").status_code == 404
    # the organization and its content stay
    assert api.get(f"/organizations/{name}").status_code == 200


def test_invalid_input_is_refused(api: httpx.Client) -> None:
    name = f"bad{uuid.uuid4().hex[:8]}"
    for body in (
        {"name": name, "url": "https://host/path"},
        {"name": name, "url": "http://127.0.0.1:1", "platforms": ["linux"]},
        {"name": name, "url": "http://127.0.0.1:1", "password": "x"},
        {"name": "Bad Name!", "url": "http://127.0.0.1:1"},
        {"name": name, "url": "http://127.0.0.1:1", "staleness_seconds": -1},
        {"name": name, "url": "http://127.0.0.1:1", "extra": 1},
    ):
        r = api.post("/mirror/caches", json=body)
        assert r.status_code in (400, 422), (body, r.status_code, r.text)
    assert api.get(f"/organizations/{name}").status_code == 404  # nothing half-created


def test_non_administrators_are_refused(
    server: MoorageServer, api: httpx.Client, upstream: Distribution
) -> None:
    user, password = f"u{uuid.uuid4().hex[:8]}", "a-user-password-123"
    assert api.post("/users", json={"username": user, "password": password}).status_code == 201
    name = f"na{uuid.uuid4().hex[:8]}"
    assert api.post("/mirror/caches", json={"name": name, "url": upstream.url}).status_code == 201
    with httpx.Client(base_url=server.url + "/api/v1", auth=(user, password), timeout=60) as c:
        assert c.post("/mirror/caches", json={"name": name + "x", "url": upstream.url}
                      ).status_code == 403
        assert c.get("/mirror/caches").status_code == 403
        assert c.get(f"/mirror/caches/{name}").status_code == 403
        assert c.patch(f"/mirror/caches/{name}", json={"insecure": True}).status_code == 403
        assert c.delete(f"/mirror/caches/{name}").status_code == 403
    with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as anon:
        assert anon.get("/mirror/caches").status_code == 401
    assert api.get(f"/mirror/caches/{name}").json()["insecure"] is False
    assert api.get(f"/organizations/{name}x").status_code == 404


@contextlib.contextmanager
def _login(server: MoorageServer, who: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as ui:
        page = ui.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        r = ui.post("/login", data={"username": who[0], "password": who[1], "csrf_token": token})
        assert r.status_code in (200, 303), r.text
        yield ui


def test_ui_page_lists_and_adds_caches(
    server: MoorageServer, api: httpx.Client, upstream: Distribution
) -> None:
    name = f"ui{uuid.uuid4().hex[:8]}"
    with _login(server, ADMIN) as ui:
        page = ui.get("/ui/mirror")
        assert page.status_code == 200 and "Add a cache" in page.text
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        form = {
            "name": name, "url": upstream.url, "username": "robot",
            "password": UPSTREAM_PASSWORD, "platforms": "linux/amd64, linux/arm64",
            "staleness": "120", "evict_after_days": "", "max_bytes": "",
        }
        # without the CSRF token: refused, nothing created
        r = ui.post("/ui/mirror", data=form)
        assert r.status_code in (400, 403)
        assert api.get(f"/mirror/caches/{name}").status_code == 404
        r = ui.post("/ui/mirror", data={**form, "csrf_token": token})
        assert r.status_code == 303 and "done=cache-added" in r.headers["location"]
        listed = ui.get("/ui/mirror")
        assert name in listed.text and upstream.url in listed.text
        assert UPSTREAM_PASSWORD not in listed.text
        bad = ui.post("/ui/mirror", data={**form, "name": name + "b", "staleness": "-5",
                                          "csrf_token": token})
        assert bad.status_code == 400
    cache = api.get(f"/mirror/caches/{name}").json()
    assert cache["platforms"] == ["linux/amd64", "linux/arm64"]
    assert cache["staleness_seconds"] == 120 and cache["has_password"] is True

    user, password = f"v{uuid.uuid4().hex[:8]}", "a-user-password-123"
    assert api.post("/users", json={"username": user, "password": password}).status_code == 201
    with _login(server, (user, password)) as ui:
        assert ui.get("/ui/mirror").status_code == 403
