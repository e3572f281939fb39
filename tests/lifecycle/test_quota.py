"""Storage quotas through a real server: ``moorage admin set-quota ORG-or-USER BYTES|none`` while
the server runs; a push over the quota is refused with DENIED naming the namespace, the quota
and the usage; a layer shared by repositories of one namespace counts once; usage in the API,
freed by garbage collection; concurrent pushes cannot overshoot; the API for administrators."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from moorage.lifecycle.quota import human_bytes, parse_size
from moorage.services.errors import Invalid

from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    error_code,
    image_manifest,
    org_with_admin_developer,
    put_manifest,
    sha256,
)
from .conftest import cli

PASSWORD = "quota-test-password-1"


def setup_org(server: MoorageServer) -> tuple[str, str]:
    return org_with_admin_developer(server, PASSWORD, "quo", "qdev")


def image_size(manifest: bytes, blobs: dict[str, int]) -> int:
    """What a manifest and the blobs it names weigh (sizes from *blobs*, by digest)."""
    doc = json.loads(manifest)
    digests = {doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])}
    return len(manifest) + sum(blobs[d] for d in digests)


def blob_sizes(manifest: bytes) -> dict[str, int]:
    doc = json.loads(manifest)
    out = {doc["config"]["digest"]: doc["config"]["size"]}
    out.update({layer["digest"]: layer["size"] for layer in doc["layers"]})
    return out


def usage(admin: httpx.Client, namespace: str) -> dict[str, object]:
    r = admin.get(f"/api/v1/namespaces/{namespace}/quota")
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def test_sizes_parse_with_units() -> None:
    assert parse_size("1234") == 1234
    assert parse_size("10GiB") == 10 * 1024**3
    assert parse_size("500MB") == 500 * 1000**2
    assert parse_size("1.5 KiB") == 1536
    assert parse_size("2g") == 2 * 1024**3
    for bad in ("", "-1", "10 parsecs", "1e9", "GiB", "10 GiB 2"):
        with pytest.raises(Invalid):
            parse_size(bad)
    assert human_bytes(100 * 1024**2) == "100.0 MiB"


def test_a_push_over_the_quota_is_denied_and_none_removes_it(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    repo = f"{org}/app"
    with (
        httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c,
        httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a,
    ):
        first = image_manifest(c, repo, layers=[os.urandom(6000)])
        one = image_size(first, blob_sizes(first))
        # The CLI while the server runs: room for two images of this size, not three.
        r = cli(auth_gc, "admin", "set-quota", org, str(2 * one + 500))
        assert r.returncode == 0, r.stderr
        assert f"quota of org {org}" in r.stdout
        assert put_manifest(c, repo, "one", first).status_code == 201
        second = image_manifest(c, repo, layers=[os.urandom(6000)])
        assert put_manifest(c, repo, "two", second).status_code == 201
        third = image_manifest(c, repo, layers=[os.urandom(6000)])
        refused = put_manifest(c, repo, "three", third)
        assert refused.status_code == 403 and error_code(refused) == "DENIED", refused.text
        message = refused.json()["errors"][0]["message"]
        quota_text = human_bytes(2 * one + 500)
        would = human_bytes(
            one + image_size(second, blob_sizes(second)) + image_size(third, blob_sizes(third))
        )
        assert f"quota of org {org} is {quota_text}; this push would use {would}" in message
        assert c.get(f"/v2/{repo}/manifests/three").status_code == 404
        got = usage(a, org)
        assert got["limit_bytes"] == 2 * one + 500 and got["kind"] == "org"
        assert got["usage_bytes"] == image_size(first, blob_sizes(first)) + image_size(
            second, blob_sizes(second)
        )

        # Re-pushing what the namespace holds adds nothing and goes through.
        assert put_manifest(c, repo, "one-again", first).status_code == 201

        r = cli(auth_gc, "admin", "set-quota", org, "none")
        assert r.returncode == 0 and "none" in r.stdout, r.stderr
        assert put_manifest(c, repo, "three", third).status_code == 201
        assert usage(a, org)["limit_bytes"] is None

        # Human units; a bad size or an unknown namespace is refused with a clear message.
        r = cli(auth_gc, "admin", "set-quota", org, "1.5GiB")
        assert r.returncode == 0 and "1.5 GiB" in r.stdout, r.stderr
        assert usage(a, org)["limit_bytes"] == 3 * 1024**3 // 2
        r = cli(auth_gc, "admin", "set-quota", org, "lots")
        assert r.returncode == 1 and "not a size" in r.stderr
        r = cli(auth_gc, "admin", "set-quota", f"nobody{uuid.uuid4().hex[:6]}", "1GiB")
        assert r.returncode == 1 and "no organization or user" in r.stderr
        r = cli(auth_gc, "admin", "quota", org)
        assert r.returncode == 0 and "1.5 GiB" in r.stdout, r.stderr

        audit = a.get("/api/v1/audit", params={"action": "quota.set"}).json()["events"]
        assert any(e["details"].get("namespace") == org for e in audit), audit
        audit = a.get("/api/v1/audit", params={"action": "quota.remove"}).json()["events"]
        assert any(e["details"].get("namespace") == org for e in audit), audit


def test_a_shared_layer_counts_once_and_gc_frees_usage(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    base = os.urandom(20000)
    with (
        httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c,
        httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a,
    ):
        images: dict[str, bytes] = {}
        for name in ("web", "api", "worker"):
            repo = f"{org}/{name}"
            images[repo] = image_manifest(c, repo, layers=[base, os.urandom(1000)])
            assert put_manifest(c, repo, "latest", images[repo]).status_code == 201
        sizes: dict[str, int] = {}
        for m in images.values():
            sizes.update(blob_sizes(m))
        expected = sum(sizes.values()) + sum(len(m) for m in images.values())
        assert usage(a, org)["usage_bytes"] == expected
        assert expected < 2 * len(base)  # the base layer once, not three times

        # A quota that the usage already fills: the same base layer in a fourth repository
        # adds only its own small layer and manifest — counted, and refused when over.
        admin_cli(auth_gc, "set-quota", org, str(expected + 500))
        repo4 = f"{org}/cron"
        m4 = image_manifest(c, repo4, layers=[base, os.urandom(3000)])
        r = put_manifest(c, repo4, "latest", m4)
        assert r.status_code == 403 and error_code(r) == "DENIED"
        admin_cli(auth_gc, "set-quota", org, str(expected + 500 + 3000 + 2000 + len(m4)))
        assert put_manifest(c, repo4, "latest", m4).status_code == 201
        grown = usage(a, org)["usage_bytes"]
        assert grown == expected + len(m4) + sum(
            s for d, s in blob_sizes(m4).items() if d not in sizes
        )

        # A deleted tag leaves an untagged manifest: still held until GC removes it.
        assert c.delete(f"/v2/{repo4}/manifests/latest").status_code == 202
        assert usage(a, org)["usage_bytes"] == grown
        r = cli(auth_gc, "gc", "run", "--grace", "0")
        assert r.returncode == 0, r.stderr
        assert f"{repo4}@{sha256(m4)}" in r.stdout
        assert usage(a, org)["usage_bytes"] == expected

        # Deleting two of the three users of the base layer keeps it counted; all three: gone.
        for name in ("web", "api"):
            digest = sha256(images[f"{org}/{name}"])
            assert c.delete(f"/v2/{org}/{name}/manifests/{digest}").status_code == 202
        left = usage(a, org)["usage_bytes"]
        assert isinstance(left, int) and left > len(base)
        digest = sha256(images[f"{org}/worker"])
        assert c.delete(f"/v2/{org}/worker/manifests/{digest}").status_code == 202
        assert cli(auth_gc, "gc", "run", "--grace", "0").returncode == 0
        assert usage(a, org)["usage_bytes"] == 0


def test_a_deletion_makes_room_for_the_next_push(auth_gc: MoorageServer) -> None:
    """The pushes keep an upper bound of the usage that deletions do not lower: a push that
    fits only because of a deletion is decided on the exact usage, and goes through."""
    org, user = setup_org(auth_gc)
    repo = f"{org}/app"
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c:
        a, b, third = (image_manifest(c, repo, layers=[os.urandom(6000)]) for _ in range(3))
        one = max(image_size(m, blob_sizes(m)) for m in (a, b, third))
        admin_cli(auth_gc, "set-quota", org, str(2 * one + 500))
        assert put_manifest(c, repo, "a", a).status_code == 201
        assert put_manifest(c, repo, "b", b).status_code == 201
        for tag in ("a2", "a3", "a4"):  # new tags for what the repository holds add nothing
            assert put_manifest(c, repo, tag, a).status_code == 201
        assert put_manifest(c, repo, "c", third).status_code == 403
        assert c.delete(f"/v2/{repo}/manifests/{sha256(a)}").status_code == 202
        assert put_manifest(c, repo, "c", third).status_code == 201
        assert put_manifest(c, repo, "a", a).status_code == 403  # full again


def test_a_user_namespace_has_a_quota_too(auth_gc: MoorageServer) -> None:
    _, user = setup_org(auth_gc)
    repo = f"{user}/tool"
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c:
        m = image_manifest(c, repo, layers=[os.urandom(5000)])
        admin_cli(auth_gc, "set-quota", user, "4000")
        r = put_manifest(c, repo, "v1", m)
        assert r.status_code == 403 and error_code(r) == "DENIED"
        assert f"quota of user {user} is" in r.text
        own = c.get(f"/api/v1/namespaces/{user}/quota")
        assert own.status_code == 200 and own.json()["kind"] == "user", own.text
        admin_cli(auth_gc, "set-quota", user, "none")
        assert put_manifest(c, repo, "v1", m).status_code == 201


def test_the_api_reads_and_sets_quotas(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    _, outsider = setup_org(auth_gc)
    with (
        httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as u,
        httpx.Client(base_url=auth_gc.url, auth=(outsider, PASSWORD), timeout=60) as o,
        httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a,
    ):
        path = f"/api/v1/namespaces/{org}/quota"
        assert u.put(path, json={"limit_bytes": 10}).status_code == 403
        r = a.put(path, json={"limit_bytes": 1 << 30})
        assert r.status_code == 200 and r.json()["limit_bytes"] == 1 << 30, r.text
        assert r.json()["updated_by"] == "admin"
        assert u.get(path).json()["limit_bytes"] == 1 << 30  # a member reads it
        assert o.get(path).status_code == 403
        listed = a.get("/api/v1/quotas")
        assert listed.status_code == 200 and any(
            q["namespace"] == org for q in listed.json()["items"]
        )
        assert u.get("/api/v1/quotas").status_code == 403
        for bad in ({"limit_bytes": -1}, {"limit_bytes": "lots"}, {}):
            assert a.put(path, json=bad).status_code in (400, 422)
        assert a.put(
            "/api/v1/namespaces/NOT..valid/quota", json={"limit_bytes": 1}
        ).status_code in (400, 404)
        missing = f"/api/v1/namespaces/nobody{uuid.uuid4().hex[:6]}/quota"
        assert a.put(missing, json={"limit_bytes": 1}).status_code == 404
        assert a.get(missing).status_code == 404
        assert u.delete(path).status_code == 403
        assert a.delete(path).status_code == 204
        assert a.get(path).json()["limit_bytes"] is None
        spec = a.get("/api/v1/openapi.json").json()
        assert "/namespaces/{namespace}/quota" in spec["paths"]


def test_concurrent_pushes_cannot_overshoot(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    pushers = 10
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=120) as c:
        payloads = [
            (f"{org}/p{i}", image_manifest(c, f"{org}/p{i}", layers=[os.urandom(8000)]))
            for i in range(pushers)
        ]
    biggest = max(image_size(m, blob_sizes(m)) for _, m in payloads)
    smallest = min(image_size(m, blob_sizes(m)) for _, m in payloads)
    limit = 3 * biggest + smallest // 2  # room for three, not four
    admin_cli(auth_gc, "set-quota", org, str(limit))
    start = threading.Barrier(pushers)

    def push(item: tuple[str, bytes]) -> int:
        repo, m = item
        with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=120) as cc:
            cc.get("/v2/")  # connect first: the PUTs start together
            start.wait()
            return put_manifest(cc, repo, "latest", m).status_code

    with ThreadPoolExecutor(pushers) as pool:
        codes = list(pool.map(push, payloads))
    assert sorted(set(codes)) == [201, 403], codes
    assert codes.count(201) == 3, codes
    with httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a:
        used = usage(a, org)["usage_bytes"]
    assert isinstance(used, int) and used <= limit


@contextlib.contextmanager
def ui_login(server: MoorageServer, username: str, password: str) -> Iterator[httpx.Client]:
    """Signed in through the login form, as a browser is."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        form = c.get("/login")
        r = c.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
        )
        assert r.status_code == 303, r.text
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token field"
    return m.group(1)


def test_the_organization_page_shows_usage_and_admins_set_the_quota(
    auth_gc: MoorageServer,
) -> None:
    org, user = setup_org(auth_gc)
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c:
        m = image_manifest(c, f"{org}/site", layers=[os.urandom(300_000)])
        assert put_manifest(c, f"{org}/site", "latest", m).status_code == 201
    page = f"/ui/organizations/{org}"
    with ui_login(auth_gc, "admin", ADMIN_PASSWORD) as a:
        html = a.get(page).text
        assert "Storage" in html and "no quota" in html and "KiB" in html
        r = a.post(page + "/quota", data={"limit": "1MiB", "csrf_token": csrf_of(html)})
        assert r.status_code == 303 and "done=quota-set" in r.headers["location"], r.text
        html = a.get(page).text
        assert 'of <strong id="quota-limit">1.0 MiB</strong>' in html and "29%" in html
        bad = a.post(page + "/quota", data={"limit": "lots", "csrf_token": csrf_of(html)})
        assert bad.status_code == 400 and "not a size" in bad.text
        r = a.post(page + "/quota", data={"limit": "none", "csrf_token": csrf_of(html)})
        assert r.status_code == 303 and "done=quota-removed" in r.headers["location"]
        assert "no quota" in a.get(page).text
    with ui_login(auth_gc, user, PASSWORD) as u:
        html = u.get(page).text
        assert "quota-usage" in html and 'action="' + page + '/quota"' not in html
        r = u.post(page + "/quota", data={"limit": "1GiB", "csrf_token": csrf_of(html)})
        assert r.status_code == 403
