"""The issue's proof in a real browser: headless Debian Chromium (Playwright) against a real
``moorage serve``, with images pushed by real skopeo."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.clients.harness import Skopeo
from tests.conftest import ADMIN_PASSWORD, MoorageServer

from .conftest import browser_login, new_page, shot, skopeo_push

XSS_REPO = "<script>alert('repo-xss')</script>"
XSS_TEAM = "<img src=x onerror=alert('team-xss')>"


@pytest.fixture(scope="module")
def pushed(skopeo: Skopeo, ui_server: MoorageServer) -> dict[str, str]:
    """An organization with a two-platform image pushed by skopeo as admin."""
    import uuid

    org = f"acme{uuid.uuid4().hex[:6]}"
    from tests.conftest import admin_cli

    admin_cli(ui_server, "create-org", org)
    repo = f"{org}/webapp"
    skopeo_push(skopeo, ui_server, repo, "1.0", f"admin:{ADMIN_PASSWORD}")
    return {"org": org, "repo": repo, "tag": "1.0"}


def test_login_page_and_wrong_password(browser: Any, ui_server: MoorageServer) -> None:
    page = new_page(browser, ui_server)
    response = page.goto("/")
    assert response is not None
    assert page.url.endswith("/login")
    assert "default-src 'self'" in (response.headers.get("content-security-policy") or "")
    shot(page, "01-login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert page.locator(".flash.error").inner_text() == "Wrong username or password."
    page.context.close()


def test_find_the_pushed_repository_and_open_its_image(
    admin_page: Any, pushed: dict[str, str]
) -> None:
    page = admin_page
    shot(page, "02-dashboard")
    page.click("nav >> text=Repositories")
    page.fill("input[name=q]", "webapp")
    page.fill("input[name=namespace]", pushed["org"])
    page.click("form.filters button[type=submit]")
    link = page.locator("#repo-table a", has_text=pushed["repo"])
    expect(link).to_have_count(1)
    shot(page, "03-repositories")
    link.click()
    assert page.locator("h1").inner_text().startswith(pushed["repo"])
    row = page.locator("#tag-table tbody tr", has_text=pushed["tag"])
    assert "linux/amd64" in row.inner_text() and "linux/arm64/v8" in row.inner_text()
    pull = page.locator("#pull-cmd").inner_text()
    assert (
        pull == f"docker pull 127.0.0.1:{page.url.split(':')[2].split('/')[0]}/{pushed['repo']}:1.0"
    )
    shot(page, "04-repository")
    row.locator("a").first.click()
    # The index: its platforms, each linking to the child image.
    platforms = page.locator("#platform-table tbody tr")
    expect(platforms).to_have_count(2)
    assert "linux/arm64/v8" in page.locator("#platform-table").inner_text()
    shot(page, "05-index")
    page.locator("#platform-table a", has_text="linux/amd64").click()
    layers = page.locator("#layer-table tbody tr")
    expect(layers).to_have_count(2)
    assert re.search(r"\d+(\.\d)? (B|KiB)", layers.first.inner_text())
    assert "/bin/true" in page.locator("section.card", has_text="Command").inner_text()
    assert "moorage test layer 0" in page.locator("#history-table").inner_text()
    assert "multi-amd64" in page.inner_text("main")  # the label from the config
    shot(page, "06-image")


def test_team_grant_robot_push_and_audit(
    admin_page: Any, pushed: dict[str, str], skopeo: Skopeo, ui_server: MoorageServer
) -> None:
    page, org, repo = admin_page, pushed["org"], pushed["repo"]
    page.goto(f"/ui/organizations/{org}")
    page.fill("form[action$='/teams'] input[name=name]", "builders")
    page.fill("form[action$='/teams'] input[name=description]", XSS_TEAM)
    page.click("form[action$='/teams'] button[type=submit]")
    assert page.locator(".flash.ok").inner_text() == "Team created."
    shot(page, "07-organization")
    page.click("#team-table >> text=builders")
    # Grant the team write on the repository.
    page.fill("form[action$='/grant'] input[name=repository]", repo)
    page.select_option("form[action$='/grant'] select[name=role]", "write")
    page.click("form[action$='/grant'] button[type=submit]")
    assert page.locator(".flash.ok").inner_text() == "Permission granted."
    page.fill("form[action$='/members/add'] input[name=username]", "admin")
    page.click("form[action$='/members/add'] button[type=submit]")
    assert "admin" in page.locator("#member-table").inner_text()
    # The hostile description is text on the page, and no dialog fired.
    assert page.locator(".description").inner_text() == XSS_TEAM
    assert page.locator("main img").count() == 0
    # The team's roles: the repository grant, with its revoke button.
    role = page.locator("#role-table tr", has_text=repo)
    assert "write" in role.inner_text() and role.locator("button", has_text="Revoke").count() == 1
    shot(page, "08-team")
    # The repository page lists the team's grant in its permissions section.
    page.goto(f"/ui/repositories/{repo}")
    grant = page.locator("#perm-table tr", has_text=f"team: {org}/builders").inner_text()
    assert "write" in grant

    # A robot with push on the repository; its secret shown once.
    page.goto("/ui/robots")
    create = "form[method=post][action='/ui/robots']"  # administrators also get a filter form
    page.fill(f"{create} input[name=namespace]", org)
    page.fill(f"{create} input[name=name]", "ci")
    page.fill(f"{create} textarea[name=access]", f"{repo}=pull,push")
    page.click(f"{create} button[type=submit]")
    robot = page.locator("#secret-user").inner_text()
    secret = page.locator("#secret-value").inner_text()
    assert robot == f"{org}+ci" and len(secret) >= 20
    shot(page, "09-robot-secret")
    page.goto("/ui/robots")
    assert secret not in page.content()
    assert robot in page.locator("#robot-table").inner_text()
    shot(page, "10-robots")
    skopeo_push(skopeo, ui_server, repo, "robot-1", f"{robot}:{secret}", multiarch=False)

    # The push is in the audit log page, by the robot.
    # Records are written in batches off the request path: look again until the batch lands.
    query = urlencode({"actor": robot, "action": "manifest.push"})
    rows = page.locator("#audit-table tbody tr", has_text="robot-1")
    for _ in range(40):
        page.goto(f"/ui/audit?{query}")
        if rows.count():
            break
        page.wait_for_timeout(250)
    assert rows.count() == 1
    assert "manifest.push" in rows.inner_text() and repo in rows.inner_text()
    page.goto("/ui/audit")
    shot(page, "11-audit")
    export = page.locator("a", has_text="CSV").get_attribute("href")
    assert export is not None and export.startswith("/api/v1/audit/export")
    assert page.dialogs == []


def test_an_anonymous_visitor_reads_a_public_repository(
    browser: Any, pushed: dict[str, str], skopeo: Skopeo, ui_server: MoorageServer
) -> None:
    import httpx

    org = pushed["org"]
    repo = f"{org}/public-site"
    skopeo_push(skopeo, ui_server, repo, "2.1", f"admin:{ADMIN_PASSWORD}")
    with httpx.Client(base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD)) as api:
        body = {"visibility": "public", "description": "The public web site image."}
        assert api.patch(f"/api/v1/repositories/{repo}", json=body).status_code == 200
    page = new_page(browser, ui_server)
    try:
        page.goto(f"/ui/repositories?namespace={org}")
        names = page.locator("#repo-table tbody td:first-child").all_inner_texts()
        assert names == [repo]  # the private pushed["repo"] is not listed
        sign_in = page.locator(".topbar a", has_text="Sign in")
        assert sign_in.get_attribute("href") == f"/login?next=/ui/repositories%3Fnamespace%3D{org}"
        shot(page, "15-public-repositories")
        page.click(f"#repo-table >> text={repo}")
        assert page.locator("h1").inner_text().startswith(repo)
        assert page.locator("form[method=post]").count() == 0  # no management forms
        shot(page, "16-public-repository")
        page.click("#tag-table >> text=2.1")
        assert "linux/amd64" in page.locator("main").inner_text()
        shot(page, "17-public-image")
        page.goto(f"/ui/repositories/{pushed['repo']}")  # private: sign in first
        assert "/login?next=" in page.url
        page.goto("/")
        assert page.url.endswith("/login")
        assert page.dialogs == []
    finally:
        page.context.close()


def test_xss_in_a_repository_description_is_text(admin_page: Any, pushed: dict[str, str]) -> None:
    page, repo = admin_page, pushed["repo"]
    page.goto(f"/ui/repositories/{repo}")
    page.fill("textarea[name=description]", XSS_REPO)
    page.click("form[action$='/settings'] button[type=submit]")
    assert page.locator(".flash.ok").inner_text() == "Repository settings saved."
    assert page.locator("p.description").inner_text() == XSS_REPO
    page.goto("/ui/repositories")
    assert XSS_REPO in page.locator("#repo-table").inner_text()
    page.reload()
    assert page.dialogs == []


def test_pages_read_with_javascript_off(
    browser: Any, ui_server: MoorageServer, pushed: dict[str, str]
) -> None:
    page = new_page(browser, ui_server, javascript=False)
    browser_login(page)
    page.goto(f"/ui/repositories/{pushed['repo']}")
    assert page.locator("#tag-table").is_visible()
    assert page.locator("button.copy").first.is_hidden()  # copy buttons need JS
    page.locator("#tag-table a", has_text=pushed["tag"]).click()
    page.locator("#platform-table a").first.click()
    expect(page.locator("#layer-table tbody tr")).to_have_count(2)
    page.context.close()


def test_logout_invalidates_the_cookie(browser: Any, ui_server: MoorageServer) -> None:
    page = new_page(browser, ui_server)
    browser_login(page)
    cookie = next(c for c in page.context.cookies() if c["name"] == "moorage_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    other = new_page(page.context.browser, ui_server)
    other.context.add_cookies([{**cookie}])
    other.goto("/ui/organizations")  # a page for signed-in users only
    assert "/login" in other.url
    other.context.close()
    page.context.close()


def test_forms_with_a_missing_or_wrong_token_are_refused(admin_page: Any, unique: str) -> None:
    page = admin_page
    for tamper in (
        "f => f.querySelector('input[name=csrf_token]').remove()",
        "f => { f.querySelector('input[name=csrf_token]').value = 'forged' }",
    ):
        page.goto("/ui/organizations")
        form = page.locator("form[action='/ui/organizations']")
        form.locator("input[name=name]").fill(f"forged{unique}")
        form.evaluate(tamper)
        form.locator("button[type=submit]").click()
        assert page.locator("h1").inner_text() == "Form refused"
    page.goto("/ui/organizations")
    assert f"forged{unique}" not in page.inner_text("main")


def test_users_page(admin_page: Any, unique: str) -> None:
    page = admin_page
    page.click("nav >> text=Users")
    form = page.locator("form[action='/ui/users']")
    form.locator("input[name=username]").fill(f"dev{unique}")
    form.locator("input[name=email]").fill(f"dev{unique}@example.test")
    form.locator("input[name=password]").fill("dev-password-123")
    form.locator("button[type=submit]").click()
    assert page.locator(".flash.ok").inner_text() == "User created."
    row = page.locator("#user-table tbody tr", has_text=f"dev{unique}")
    row.locator("button", has_text="Make admin").click()
    row = page.locator("#user-table tbody tr", has_text=f"dev{unique}")
    assert "admin" in row.locator("td").nth(3).inner_text()
    page.click("nav >> text=Organizations")
    shot(page, "12-organizations")
    page.click("nav >> text=Users")
    shot(page, "13-users")
    page.click("a.who")
    assert page.locator("h1").inner_text() == "Your account"
    shot(page, "14-account")


def test_delete_a_tag_after_confirming_and_filter_tags(
    admin_page: Any, pushed: dict[str, str], skopeo: Skopeo, ui_server: MoorageServer
) -> None:
    page, repo = admin_page, pushed["repo"]
    skopeo_push(skopeo, ui_server, repo, "scratch", f"admin:{ADMIN_PASSWORD}", multiarch=False)
    page.goto(f"/ui/repositories/{repo}")
    rows = page.locator("#tag-table tbody tr")
    scratch = rows.filter(has_text="scratch")
    # Filter-as-you-type (JavaScript) hides the rows that do not match.
    page.fill("input[data-filter]", "scratch")
    assert scratch.is_visible() and rows.filter(has_text=pushed["tag"]).is_hidden()
    page.fill("input[data-filter]", "")
    assert rows.filter(has_text=pushed["tag"]).is_visible()
    scratch.locator("button", has_text="Delete").click()  # a confirm dialog, accepted
    assert page.locator(".flash.ok").inner_text() == "Tag deleted."
    assert "Delete tag scratch?" in page.dialogs
    expect(page.locator("#tag-table tbody tr", has_text="scratch")).to_have_count(0)
    expect(page.locator("#tag-table tbody tr", has_text=pushed["tag"])).to_have_count(1)
