"""Tag immutability through a real server: ``moorage admin immutable add|remove ORG-or-REPO
PATTERN``; an immutable tag is pushed once, then cannot be overwritten or deleted (alone or
with its manifest) — DENIED naming the rule — except by a system administrator."""

from __future__ import annotations

import httpx

from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    error_code,
    image_manifest,
    org_with_admin_developer,
    put_manifest,
    sha256,
)
from .conftest import cli

PASSWORD = "immutable-test-password-1"


def setup_org(server: MoorageServer) -> tuple[str, str]:
    return org_with_admin_developer(server, PASSWORD, "imm", "dev")


def test_immutable_tags_cannot_move_or_go(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    repo = f"{org}/app"
    r = cli(auth_gc, "admin", "immutable", "add", org, "v*")
    assert r.returncode == 0 and "added" in r.stdout, r.stderr
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c:
        first = image_manifest(c, repo)
        assert put_manifest(c, repo, "v1", first).status_code == 201  # the first push
        assert put_manifest(c, repo, "v1", first).status_code == 201  # same manifest: no change
        second = image_manifest(c, repo)
        r2 = put_manifest(c, repo, "v1", second)
        assert r2.status_code == 403 and error_code(r2) == "DENIED"
        assert "immutable" in r2.text and "v*" in r2.text
        assert put_manifest(c, repo, "latest", first).status_code == 201
        assert put_manifest(c, repo, "latest", second).status_code == 201  # not matched
        d = c.delete(f"/v2/{repo}/manifests/v1")
        assert d.status_code == 403 and error_code(d) == "DENIED"
        d = c.delete(f"/v2/{repo}/manifests/{sha256(first)}")  # would take v1 along
        assert d.status_code == 403 and error_code(d) == "DENIED"
        got = c.get(f"/v2/{repo}/manifests/v1")
        assert got.status_code == 200 and got.content == first

    # A system administrator overrides (audited).
    with httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a:
        assert put_manifest(a, repo, "v1", second).status_code == 201
        assert a.get(f"/v2/{repo}/manifests/v1").content == second

    r = cli(auth_gc, "admin", "immutable", "list", org)
    assert r.returncode == 0 and "v*" in r.stdout
    r = cli(auth_gc, "admin", "immutable", "remove", org, "v*")
    assert r.returncode == 0 and "removed" in r.stdout, r.stderr
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c:
        assert put_manifest(c, repo, "v1", first).status_code == 201
        assert c.delete(f"/v2/{repo}/manifests/v1").status_code == 202


def test_repository_rule_applies_to_that_repository_only(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    r = cli(auth_gc, "admin", "immutable", "add", f"{org}/app", "release-*")
    assert r.returncode == 0, r.stderr
    with httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as c:
        for repo, code in ((f"{org}/app", 403), (f"{org}/other", 201)):
            assert put_manifest(c, repo, "release-1", image_manifest(c, repo)).status_code == 201
            assert put_manifest(c, repo, "release-1", image_manifest(c, repo)).status_code == code


def test_rules_are_validated(auth_gc: MoorageServer) -> None:
    r = cli(auth_gc, "admin", "immutable", "add", "acme", "v 1/../")
    assert r.returncode == 1 and "pattern" in r.stderr
    r = cli(auth_gc, "admin", "immutable", "add", "Bad Org!", "v*")
    assert r.returncode == 1 and "organization" in r.stderr
    r = cli(auth_gc, "admin", "immutable", "remove", "acme", "nothing-*")
    assert r.returncode == 1 and "not found" in r.stderr


def test_the_api_manages_rules_history_and_gc(auth_gc: MoorageServer) -> None:
    org, user = setup_org(auth_gc)
    repo = f"{org}/api"
    with (
        httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as a,
        httpx.Client(base_url=auth_gc.url, auth=(user, PASSWORD), timeout=60) as u,
    ):
        rule = {"target": repo, "pattern": "stable"}
        assert u.post("/api/v1/immutable-tags", json=rule).status_code == 403
        assert a.post("/api/v1/immutable-tags", json=rule).status_code == 204
        listed = a.get("/api/v1/immutable-tags").json()["items"]
        assert {"scope": "repository", "target": repo, "pattern": "stable"}.items() <= next(
            r for r in listed if r["target"] == repo
        ).items()
        bad = a.post("/api/v1/immutable-tags", json={"target": repo, "pattern": "a/b"})
        assert bad.status_code in (400, 422)

        first, second = image_manifest(u, repo), image_manifest(u, repo)
        assert put_manifest(u, repo, "stable", first).status_code == 201
        assert put_manifest(u, repo, "stable", second).status_code == 403
        assert a.post("/api/v1/immutable-tags/remove", json=rule).status_code == 204
        assert put_manifest(u, repo, "stable", second).status_code == 201

        h = a.get(f"/api/v1/repositories/{repo}/-/tags/stable/history")
        assert h.status_code == 200, h.text
        # This server keeps no history window (gc.history_days 0): only the current value.
        assert h.json()["items"][0]["digest"] == sha256(second)
        r = a.post(
            f"/api/v1/repositories/{repo}/-/tags/stable/restore", json={"digest": sha256(first)}
        )
        assert r.status_code == 204, r.text
        assert u.get(f"/v2/{repo}/manifests/stable").content == first

        run = a.post("/api/v1/gc/runs", json={"dry_run": True, "grace": 0})
        assert run.status_code == 200, run.text
        assert run.json()["dry_run"] is True
        assert u.post("/api/v1/gc/runs", json={"dry_run": True}).status_code == 403
