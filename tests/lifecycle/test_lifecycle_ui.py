"""The lifecycle pages through a real server, over HTTP as a browser posts them (session cookie,
CSRF token): an organization's retention policy (view, edit, dry-run preview, run), its
immutability rules (system administrators add and remove them), a tag's history with restore;
and once in headless Chromium."""

from __future__ import annotations

import contextlib
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..browser import CHROMIUM, launch_chromium
from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    image_manifest,
    postgres_database,
    put_manifest,
    sha256,
)
from ..ui.conftest import csrf_from, login_http
from .conftest import ZERO

PASSWORD = "lifecycle-ui-password-1"
ROW = re.compile(r"<tr>\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>\s*<td class=\"mono\"", re.S)


@pytest.fixture(scope="module")
def ui_lc(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """Access control on, GC only when asked, a week of tag history."""
    with tempfile.TemporaryDirectory(prefix="moorage-lc-ui-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            env = {
                **ZERO,
                "MOORAGE_GC_ENABLED": "false",
                "MOORAGE_GC_HISTORY_DAYS": "7",
                "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            }
            srv = MoorageServer(Path(tmp) / "data", database_url=url, env=env).start(timeout=120)
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture
def org(ui_lc: MoorageServer) -> str:
    name = f"lcui{uuid.uuid4().hex[:8]}"
    admin_cli(ui_lc, "create-org", name)
    return name


@pytest.fixture
def registry(ui_lc: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_lc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


def post(c: httpx.Client, page: str, action: str, **fields: str) -> httpx.Response:
    token = csrf_from(c.get(page).text)
    return c.post(action, data={"csrf_token": token, **fields})


def push(c: httpx.Client, repo: str, *tags: str) -> None:
    for t in tags:
        assert put_manifest(c, repo, t, image_manifest(c, repo)).status_code == 201


def listed(html: str) -> list[tuple[str, str]]:
    """(repository, tag) rows of the preview/run table."""
    table = html.split('id="retention-removals"', 1)
    if len(table) < 2:
        return []
    return [(a.strip(), b.strip()) for a, b in ROW.findall(table[1].split("</table>", 1)[0])]


def test_retention_policy_edit_preview_and_run(
    ui_lc: MoorageServer, org: str, registry: httpx.Client
) -> None:
    repo = f"{org}/web"
    push(registry, repo, "old", "older", "v1", "new")
    page = f"/ui/lifecycle/{org}"
    with login_http(ui_lc) as ui:
        index = ui.get("/ui/lifecycle")
        assert index.status_code == 200 and f'href="/ui/lifecycle/{org}"' in index.text
        r = ui.get(page)
        assert r.status_code == 200 and 'id="no-policy"' in r.text
        # No token, no change.
        r = ui.post(page + "/retention", data={"target": org, "rules": "keep-last=1"})
        assert r.status_code == 403
        r = post(ui, page, page + "/retention", target=org, rules="keep-last=x")
        assert r.status_code == 400 and "keep-last" in r.text
        r = post(ui, page, page + "/retention", target="other/repo", rules="keep-last=1")
        assert r.status_code == 400
        r = post(ui, page, page + "/retention", target=org, rules="keep-last=1 keep-tags=v*")
        assert r.status_code == 303 and r.headers["location"].endswith("done=retention-set")
        shown = ui.get(r.headers["location"]).text
        assert "keep-last=1" in shown and "keep-tags=v*" in shown and "Retention policy saved" in shown

        preview = post(ui, page, page + "/retention/preview", target=org)
        assert preview.status_code == 200, preview.text
        assert "Preview" in preview.text
        would = listed(preview.text)
        assert sorted(would) == [(repo, "old"), (repo, "older")]
        with httpx.Client(base_url=ui_lc.url, auth=("admin", ADMIN_PASSWORD)) as c:
            assert set(c.get(f"/v2/{repo}/tags/list").json()["tags"]) == {"old", "older", "v1", "new"}

        run = post(ui, page, page + "/retention/run", target=org)
        assert run.status_code == 200, run.text
        assert listed(run.text) == would  # exactly what the preview listed
        assert set(registry.get(f"/v2/{repo}/tags/list").json()["tags"]) == {"v1", "new"}
        assert "Last run" in ui.get(page).text

        # A repository's own policy, then cleared.
        r = post(ui, page, page + "/retention", target=repo, rules="untagged-after=30d")
        assert r.status_code == 303
        assert 'id="repo-policies"' in ui.get(page).text
        r = post(ui, page, page + "/retention/clear", target=repo)
        assert r.status_code == 303 and "retention-cleared" in r.headers["location"]
        assert 'id="repo-policies"' not in ui.get(page).text


def test_org_admins_manage_retention_but_not_immutability(
    ui_lc: MoorageServer, org: str
) -> None:
    s = uuid.uuid4().hex[:6]
    boss, stranger = f"boss{s}", f"stranger{s}"
    for user in (boss, stranger):
        admin_cli(ui_lc, "create-user", user, "--password-stdin", stdin=PASSWORD + "\n")
    admin_cli(ui_lc, "grant", "admin", org, "--user", boss)
    page = f"/ui/lifecycle/{org}"
    with login_http(ui_lc, boss, PASSWORD) as ui:
        r = ui.get(page)
        assert r.status_code == 200
        assert 'id="retention-form"' in r.text and 'id="immutable-form"' not in r.text
        r = post(ui, page, page + "/retention", target=org, rules="keep-last=5")
        assert r.status_code == 303
        r = post(ui, page, page + "/immutable/add", target=org, pattern="v*")
        assert r.status_code == 403
    with login_http(ui_lc, stranger, PASSWORD) as ui:
        assert ui.get(page).status_code == 403
        token = csrf_from(ui.get("/ui/lifecycle").text)
        r = ui.post(page + "/retention", data={"csrf_token": token, "target": org, "rules": "keep-last=0"})
        assert r.status_code == 403


def test_immutability_rules_from_the_page(
    ui_lc: MoorageServer, org: str, registry: httpx.Client
) -> None:
    repo = f"{org}/app"
    page = f"/ui/lifecycle/{org}"
    with login_http(ui_lc) as ui:
        r = post(ui, page, page + "/immutable/add", target=org, pattern="release-*")
        assert r.status_code == 303 and "immutable-added" in r.headers["location"]
        assert post(ui, page, page + "/immutable/add", target=org, pattern="release-*").status_code == 409
        assert post(ui, page, page + "/immutable/add", target=org, pattern="a/b").status_code == 400
        shown = ui.get(page).text
        assert 'id="immutable-rules"' in shown and "release-*" in shown

        # The rule holds, and retention spares the tag.
        push(registry, repo, "release-1", "scratch")
        ok = post(ui, page, page + "/retention", target=org, rules="keep-last=0")
        assert ok.status_code == 303
        preview = post(ui, page, page + "/retention/preview", target=org)
        assert listed(preview.text) == [(repo, "scratch")]
        assert "1 spared as immutable" in preview.text

        r = post(ui, page, page + "/immutable/remove", target=org, pattern="release-*")
        assert r.status_code == 303 and "immutable-removed" in r.headers["location"]
        assert 'id="no-immutable"' in ui.get(page).text
        assert post(ui, page, page + "/immutable/remove", target=org, pattern="release-*").status_code == 404


def test_tag_history_and_restore(ui_lc: MoorageServer, org: str, registry: httpx.Client) -> None:
    repo = f"{org}/hist"
    first, second = image_manifest(registry, repo), image_manifest(registry, repo)
    assert put_manifest(registry, repo, "app", first).status_code == 201
    assert put_manifest(registry, repo, "app", second).status_code == 201
    s = uuid.uuid4().hex[:6]
    reader = f"reader{s}"
    admin_cli(ui_lc, "create-user", reader, "--password-stdin", stdin=PASSWORD + "\n")
    admin_cli(ui_lc, "grant", "read", repo, "--user", reader)
    hist = f"/ui/repositories/{repo}/-/history/app"
    with login_http(ui_lc) as ui:
        # The lifecycle page's form leads to the history page.
        r = ui.get(f"/ui/lifecycle/{org}/history", params={"repository": "hist", "tag": "app"})
        assert r.status_code == 303 and r.headers["location"] == hist
        page = ui.get(hist)
        assert page.status_code == 200, page.text
        text = page.text
        assert text.index(sha256(second)) < text.index(sha256(first))  # newest first
        assert "Restore" in text
        r = post(ui, hist, hist + "/restore", digest=sha256(first))
        assert r.status_code == 303 and "tag-restored" in r.headers["location"]
        assert registry.get(f"/v2/{repo}/manifests/app").content == first
        r = post(ui, hist, hist + "/restore", digest="sha256:" + "0" * 64)
        assert r.status_code == 404
        assert ui.get(f"/ui/repositories/{repo}/-/history/bad%20tag").status_code == 404
    with login_http(ui_lc, reader, PASSWORD) as ui:
        page = ui.get(hist)
        assert page.status_code == 200 and "Restore" not in page.text
        token = csrf_from(page.text) if 'name="csrf_token"' in page.text else csrf_from(
            ui.get("/ui/lifecycle").text
        )
        r = ui.post(hist + "/restore", data={"csrf_token": token, "digest": sha256(second)})
        assert r.status_code == 403
        assert registry.get(f"/v2/{repo}/manifests/app").content == first
    # The API answers the same way: history for readers, restore for pushers.
    api = f"/api/v1/repositories/{repo}/-/tags/app"
    with httpx.Client(base_url=ui_lc.url, auth=(reader, PASSWORD), timeout=60) as c:
        h = c.get(api + "/history")
        assert h.status_code == 200 and h.json()["items"][0]["digest"] == sha256(first)
        assert c.post(api + "/restore", json={"digest": sha256(second)}).status_code == 403
        assert c.get(f"/api/v1/repositories/{org}/nothing/-/tags/app/history").status_code == 404


def test_the_lifecycle_page_in_a_browser(ui_lc: MoorageServer, org: str, registry: httpx.Client) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    repo = f"{org}/web"
    push(registry, repo, "a", "b", "c")
    with sync_playwright() as p:
        browser: Any = launch_chromium(p)
        try:
            page = browser.new_page(base_url=ui_lc.url)
            page.on("dialog", lambda d: d.accept())
            page.goto("/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/login" not in url)
            page.goto("/ui/lifecycle")
            page.click(f"a[href='/ui/lifecycle/{org}']")
            page.fill("#retention-form input[name=rules]", "keep-last=1")
            page.click("#retention-form button[type=submit]")
            page.wait_for_url(lambda url: "done=retention-set" in url)
            page.click("button:has-text('Preview (dry run)')")
            page.wait_for_selector("#retention-removals")
            rows = page.locator("#retention-removals tbody tr").all_inner_texts()
            assert len(rows) == 2 and all(repo in r for r in rows)
            assert set(registry.get(f"/v2/{repo}/tags/list").json()["tags"]) == {"a", "b", "c"}
            page.click("button:has-text('Run now')")
            page.wait_for_selector("#retention-removals")
            assert set(registry.get(f"/v2/{repo}/tags/list").json()["tags"]) == {"c"}
        finally:
            browser.close()
