"""Resource abuse: huge or deeply nested bodies, too many form fields, huge limits, forged
cursors — a 4xx each, never a 500."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.security.conftest import API, Tenants, login_form


def test_deeply_nested_json_is_a_400(tenants: Tenants, sysadmin: httpx.Client) -> None:
    for body in (
        b"[" * 200_000 + b"]" * 200_000,
        b'{"name":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        r = sysadmin.post(
            f"{API}/organizations", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["field"] == "body"
    # deep but within the parser: refused by validation, not by a crash
    body = b'{"description":' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}"
    r = sysadmin.patch(
        f"{API}/repositories/{tenants.org['x']}/app",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text


def test_huge_bodies_are_413(sysadmin: httpx.Client) -> None:
    body = b'{"name": "' + b"a" * (2 << 20) + b'"}'
    r = sysadmin.post(
        f"{API}/organizations", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_forms_with_too_many_fields_are_400(tenants: Tenants) -> None:
    form = "&".join(f"f{i}=v" for i in range(500))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=tenants.server.url, timeout=60) as c:
        r = c.post("/login", content=form, headers=headers)
        assert r.status_code == 400, r.status_code
        r = c.post("/login", content="a=" + "b" * (128 * 1024), headers=headers)
        assert r.status_code == 400
    with login_form(tenants.server, tenants.users["outsider"]) as c:
        r = c.post("/ui/account/tokens", content=form, headers=headers)
        assert r.status_code == 403  # no readable CSRF token: refused, not a server error


@pytest.mark.parametrize(
    "query",
    [
        "limit=1000000000000000000000",
        "limit=-1",
        "limit=0",
        "limit=201",
        "cursor=" + "A" * 5000,
        "cursor=%00",
        "cursor=!!!",
        "cursor=" + base64.urlsafe_b64encode(b"\xff\xfe' OR 1=1 --").decode().rstrip("="),
        "cursor=" + base64.urlsafe_b64encode(b"\x00" * 64).decode().rstrip("="),
    ],
)
def test_bad_pagination_is_a_400_or_an_empty_page(
    tenants: Tenants, sysadmin: httpx.Client, query: str
) -> None:
    x = tenants.org["x"]
    for path in (
        "/repositories",
        f"/repositories/{x}/app/-/tags",
        "/organizations",
        f"/organizations/{x}/teams",
        "/users",
        "/users/admin/tokens",
        f"/namespaces/{x}/robots",
        f"/repositories/{x}/app/-/permissions",
        f"/organizations/{x}/permissions",
        f"/repositories/{x}/app/-/referrers/{tenants.digest['x']}",
    ):
        r = sysadmin.get(f"{API}{path}?{query}")
        assert r.status_code in (200, 400), (path, query, r.status_code, r.text)
        if "limit" in query:
            assert r.status_code == 400 and r.json()["error"]["field"] == "limit"


@pytest.mark.parametrize(
    "query", ["limit=100000", "cursor=-1", "cursor=99999999999999999999", "since=yesterday"]
)
def test_bad_audit_queries_are_400(sysadmin: httpx.Client, query: str) -> None:
    r = sysadmin.get(f"{API}/audit?{query}")
    assert r.status_code == 400, r.text


def test_ui_pagination_with_forged_cursors(tenants: Tenants) -> None:
    with login_form(
        tenants.server, "admin", __import__("tests.conftest").conftest.ADMIN_PASSWORD
    ) as c:
        for path in (
            "/ui/repositories?after=" + "%FF" * 10,
            "/ui/repositories?after=" + "A" * 5000,
            f"/ui/repositories/{tenants.org['x']}/app?after=%00",
            "/ui/audit?cursor=99999999999999999999999",
            "/ui/audit?since=notatime&until=%00",
        ):
            r = c.get(path)
            assert r.status_code in (200, 400, 404), (path, r.status_code, r.text[:300])
