"""The web UI's vulnerability-policy pages, at the HTTP level as a browser drives them (login
form, session cookie, CSRF tokens): an organization's admin finds the policy on the
organization page, sets the block severity, fixable-only, block-unscanned and allow-list
entries with expiry and reason, removes an entry, sees a malformed date refused with the form
again, and removes the policy; a forged form and a writer of the organization are refused."""

from __future__ import annotations

import html
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, image_manifest, put_manifest
from tests.ui.conftest import csrf_from, login_http

from .conftest import auth_server

pytest.importorskip("moorage.scan.wiring", reason="the scan capability is not in this tree yet")


@pytest.fixture(scope="module")
def srv() -> Iterator[MoorageServer]:
    with auth_server(MOORAGE_JOBS_POLL_SECONDS="0.2") as s:
        yield s


def make_user(admin: httpx.Client) -> tuple[str, str]:
    name, password = f"u{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    assert (
        admin.post("/api/v1/users", json={"username": name, "password": password}).status_code
        == 201
    )
    return name, password


def test_org_admin_edits_the_policy_in_the_ui(srv: MoorageServer) -> None:
    admin = httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD), timeout=30)
    org = f"ui{uuid.uuid4().hex[:6]}"
    assert admin.post("/api/v1/organizations", json={"name": org}).status_code == 201
    repo = f"{org}/app"
    assert put_manifest(admin, repo, "1", image_manifest(admin, repo)).status_code == 201
    boss, writer = make_user(admin), make_user(admin)
    perms = f"/api/v1/organizations/{org}/permissions/users"
    assert admin.put(f"{perms}/{boss[0]}", json={"role": "admin"}).status_code == 204
    assert admin.put(f"{perms}/{writer[0]}", json={"role": "write"}).status_code == 204
    page_url = f"/ui/vulnerability-policies/{org}"

    with login_http(srv, *boss) as ui:
        org_page = ui.get(f"/ui/organizations/{org}")
        assert org_page.status_code == 200
        assert 'id="vuln-policy-panel"' in org_page.text and f'href="{page_url}"' in org_page.text
        assert "Set the policy of" in org_page.text
        assert 'id="scanner-panel"' in org_page.text and "built-in scanner" in org_page.text

        page = ui.get(page_url)
        assert page.status_code == 200 and "No policy yet" in page.text
        token = csrf_from(page.text)
        form = {
            "block_severity": "high",
            "fixable_only": "1",
            "allow_id_0": "CVE-2024-1111",
            "allow_expires_0": "2030-01-31",
            "allow_reason_0": "not reachable in our build",
            "allow_id_1": "",
        }
        # without the form's token: refused, nothing saved
        r = ui.post(page_url, data={**form, "csrf_token": "forged"})
        assert r.status_code == 403 and "Form refused" in r.text
        assert admin.get(f"/api/v1/vulnerability-policies/{org}").status_code == 404

        r = ui.post(page_url, data={**form, "csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == page_url + "?done=policy-saved"
        saved = admin.get(f"/api/v1/vulnerability-policies/{org}").json()
        assert saved == {
            "scope": "namespace",
            "target": org,
            "block_severity": "high",
            "fixable_only": True,
            "block_unscanned": False,
            "allow": [
                {
                    "id": "CVE-2024-1111",
                    "expires": "2030-01-31",
                    "reason": "not reachable in our build",
                }
            ],
        }

        # the page shows the entry with a "keep" box; untick it and add another, block unscanned
        page = ui.get(page_url + "?done=policy-saved")
        assert "Vulnerability policy saved" in page.text
        assert 'name="allow_id_0" value="CVE-2024-1111"' in page.text
        assert 'name="allow_keep_0" value="1" checked' in page.text
        r = ui.post(
            page_url,
            data={
                "csrf_token": csrf_from(page.text),
                "block_severity": "critical",
                "block_unscanned": "1",
                "allow_existing_0": "1",
                "allow_id_0": "CVE-2024-1111",
                "allow_expires_0": "2030-01-31",
                "allow_reason_0": "x",
                "allow_id_1": "GHSA-abcd-efgh-ijkl",
                "allow_reason_1": "false positive",
            },
        )
        assert r.status_code == 303, r.text
        saved = admin.get(f"/api/v1/vulnerability-policies/{org}").json()
        assert (saved["block_severity"], saved["fixable_only"], saved["block_unscanned"]) == (
            "critical",
            False,
            True,
        )
        assert saved["allow"] == [
            {"id": "GHSA-abcd-efgh-ijkl", "expires": None, "reason": "false positive"}
        ]

        # a malformed expiry: the form again with the message, nothing changed
        page = ui.get(page_url)
        r = ui.post(
            page_url,
            data={
                "csrf_token": csrf_from(page.text),
                "block_severity": "low",
                "allow_id_0": "CVE-2024-2222",
                "allow_expires_0": "2030-13-01",
            },
        )
        assert r.status_code == 400 and "is not a date" in html.unescape(r.text)
        assert 'value="CVE-2024-2222"' in r.text  # as sent
        assert admin.get(f"/api/v1/vulnerability-policies/{org}").json() == saved

        # the repository's findings page links to the policy that applies
        deadline = time.monotonic() + 60
        while (
            "policy-link" not in (f := ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/1")).text
        ):
            assert time.monotonic() < deadline, f.text
            time.sleep(0.3)
        assert f"the vulnerability policy of {org}</a>" in f.text
        listing = ui.get("/ui/vulndb")
        assert f'href="/ui/vulnerability-policies/{org}"' in listing.text

        # a repository's own policy, opened from the vulnerability-data page
        r = ui.post(
            "/ui/vulnerability-policies",
            data={"csrf_token": csrf_from(listing.text), "target": repo},
        )
        assert (
            r.status_code == 303 and r.headers["location"] == f"/ui/vulnerability-policies/{repo}"
        )

        # removing it
        page = ui.get(page_url)
        r = ui.post(page_url + "/delete", data={"csrf_token": csrf_from(page.text)})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=policy-removed")
        assert admin.get(f"/api/v1/vulnerability-policies/{org}").status_code == 404

    with login_http(srv, *writer) as ui:
        assert 'id="vuln-policy-panel"' not in ui.get(f"/ui/organizations/{org}").text
        assert ui.get(page_url).status_code == 403
        token = csrf_from(ui.get("/ui/vulndb").text)
        r = ui.post(page_url, data={"csrf_token": token, "block_severity": "low"})
        assert r.status_code == 403
        assert admin.get(f"/api/v1/vulnerability-policies/{org}").status_code == 404
    # anonymous: sent to sign in
    r = httpx.get(srv.url + page_url)
    assert r.status_code == 303 and "/login" in r.headers["location"]
