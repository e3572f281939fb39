"""The OpenAPI document (valid, complete, from the route table), the offline docs page, system
endpoints, and a property-based run (schemathesis) against a live server."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import API, World, err, ok
from tests.browser import launch_chromium
from tests.conftest import ADMIN_PASSWORD, MoorageServer


def test_document_validates_and_covers_the_route_table(world: World) -> None:
    from openapi_spec_validator import validate

    from moorage.api.app import ManagementAPI

    doc = ok(httpx.get(f"{world.server.url}{API}/openapi.json"))
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"basic", "bearer", "session"}
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    # the handlers' own table, as the server builds it (no hand-kept copy to drift)
    served = {(op.method, op.path) for op in ManagementAPI._ops(_Unbound())}  # type: ignore[arg-type]
    served |= {(op.method, op.path) for op in _capability_ops()}
    assert documented == served
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }, (method, path)


def _capability_ops() -> list[Any]:
    """The installed capabilities' operations, built on a stand-in runtime."""
    from collections import defaultdict

    from moorage.capabilities import installed

    class Services(defaultdict[str, _Unbound]):
        def get(self, key: str, default: object = None) -> _Unbound:  # type: ignore[override]
            return self[key]  # every capability's services "present", as on a real node

    class Stub:
        services = Services(_Unbound)

    return [op for cap in installed() if cap.api_ops for op in cap.api_ops(Stub())]  # type: ignore[arg-type]


class _Unbound:
    """Attribute access yields a placeholder handler named after the attribute (itself
    unbound, so a service's sub-service resolves too): enough to list the route table."""

    def __init__(self, name: str = "unbound") -> None:
        self.__name__ = name

    async def __call__(self, call: object) -> None:
        return None

    def __getattr__(self, name: str) -> _Unbound:
        return _Unbound(name)


def test_docs_page_works_offline_under_a_strict_csp(world: World) -> None:
    with httpx.Client(base_url=world.server.url) as c:
        r = c.get(f"{API}/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), "no inline script"
        assert "http://" not in r.text and "https://" not in r.text  # no CDN
        for src in re.findall(r'(?:src|href)="([^"]+)"', r.text):
            asset = c.get(src)
            assert asset.status_code == 200 and asset.content, src
        assert b"SwaggerUIBundle" in c.get(f"{API}/static/swagger-ui-bundle.js").content
        assert "Apache License" in c.get(f"{API}/static/swagger-ui-LICENSE").text
        err(c.get(f"{API}/static/..%2Fapp.py"), 404)
        err(c.get(f"{API}/static/nothing.js"), 404)


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="Debian's chromium not installed"
)
def test_docs_page_renders_in_a_browser_without_csp_violations(world: World) -> None:
    from playwright.sync_api import expect, sync_playwright

    doc = ok(httpx.get(f"{world.server.url}{API}/openapi.json"))
    n_ops = sum(len(item) for item in doc["paths"].values())
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            # Tall enough for every operation to be on screen: past ~130 operations Swagger UI
            # renders only what is in view (with 133 and a 720-pixel window it stopped at 8).
            page = browser.new_page(viewport={"width": 1280, "height": 40000})
            messages: list[str] = []
            page.on("console", lambda m: messages.append(m.text))
            page.goto(f"{world.server.url}{API}/docs")
            # Swagger UI renders the operations in steps: wait for all of them (on a busy
            # machine the first tags can appear well before the last operation).
            expect(page.locator(".opblock")).to_have_count(n_ops, timeout=60000)
        finally:
            browser.close()
    assert not [m for m in messages if "Content Security Policy" in m], messages


def test_system_endpoints(world: World, admin: httpx.Client) -> None:
    assert ok(httpx.get(f"{world.server.url}{API}/health"))["status"] == "ok"
    info = ok(admin.get(f"{API}/system/info"))
    assert info["counts"]["repositories"] >= 2 and info["counts"]["users"] >= 7
    assert info["storage_used"] >= sum(len(x) for x in world.layers)
    with world.client("reader") as c:
        err(c.get(f"{API}/system/info"), 403)
        dash = ok(c.get(f"{API}/dashboard"))
        assert len(dash["activity"]) == 30
        assert {r["name"] for r in dash["largest_repositories"]} <= {world.app, world.pub} | {
            r["name"] for r in ok(c.get(f"{API}/repositories", params={"limit": 200}))["items"]
        }
    with world.client("outsider") as c:  # sees the public repository's namespace only
        dash = ok(c.get(f"{API}/dashboard"))
        assert [
            r["name"] for r in dash["largest_repositories"] if r["name"].startswith(world.org)
        ] == [world.pub]
    dash = ok(admin.get(f"{API}/dashboard"))
    assert sum(d["pushes"] for d in dash["activity"]) >= 4
    assert any(n["namespace"] == world.org and n["size"] > 0 for n in dash["storage_per_namespace"])
    err(admin.get(f"{API}/nowhere"), 404)
    err(admin.get(f"{API}/audit", params={"since": "yesterday"}), 400, "since")
    err(admin.get(f"{API}/audit", params={"until": "0.5"}), 400, "until")
    err(admin.get(f"{API}/audit/export", params={"format": "xml"}), 400, "format")
    with world.client("reader") as c:
        err(c.get(f"{API}/audit"), 403)
        err(c.get(f"{API}/audit/export"), 403)
    r = admin.get(f"{API}/audit/export", params={"format": "csv", "action": "organization.create"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[MoorageServer]:
    """A server of its own for the property-based run (it creates and deletes at random), with
    lockout limits out of the way (the run also sends wrong credentials on purpose)."""
    with tempfile.TemporaryDirectory(prefix="moorage-fuzz-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data",
            env={
                "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MOORAGE_AUTH_LOCKOUT_ACCOUNT_LIMIT": "1000000",
                "MOORAGE_AUTH_LOCKOUT_ADDRESS_LIMIT": "1000000",
            },
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


def test_schemathesis_finds_no_server_error_or_schema_violation(fuzz_server: MoorageServer) -> None:
    """Coverage, fuzzing and stateful phases over the whole document, as the administrator.
    Checks: no 5xx, documented status codes, content types and headers, bodies matching their
    schemas, invalid input refused, auth enforced. Not checked: positive_data_acceptance, which
    flags requests the schema allows but the rules refuse (a wrong old password, a robot's
    access outside its namespace, a forged cursor)."""
    exe = shutil.which("schemathesis") or shutil.which("st")
    assert exe, "schemathesis is a test dependency (pyproject.toml)"
    out = subprocess.run(
        [
            exe,
            "run",
            f"{fuzz_server.url}{API}/openapi.json",
            "--auth",
            f"admin:{ADMIN_PASSWORD}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--suppress-health-check",
            "too_slow,filter_too_much",
            "--phases",
            "coverage,fuzzing,stateful",
            "--max-examples",
            "12",
            "--seed",
            "20261128",
            # One worker: schemathesis's threads call ast.parse concurrently, which CPython
            # 3.11.7 gets wrong ("AST constructor recursion depth mismatch", gh-106905) and
            # the run ends in a tool error that says nothing about the server.
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    # The failures first (the tail is warnings and the summary), then the summary.
    head = out.stdout.find("FAILURES")
    if head < 0:
        head = out.stdout.find("ERRORS")
    summary = (out.stdout[head : head + 6000] if head >= 0 else "") + out.stdout[-2500:]
    assert out.returncode == 0, summary
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
    assert "Traceback" not in fuzz_server.log()


def test_two_routes_cannot_share_an_operation_id() -> None:
    """operationId is the method name in generated clients: a capability whose handler repeats
    another's name must fail the build with a message naming both routes, not a document that
    validators refuse (trust's and replication's ``get_policy`` once did)."""
    from moorage.api.openapi import build_openapi
    from moorage.api.routing import Op

    async def get_policy(_c: Any) -> None:
        return None

    async def get_policy_too(_c: Any) -> None:
        return None

    get_policy_too.__name__ = "get_policy"
    ops = [
        Op("GET", "/trust/policies/{target}", get_policy, "a", "trust"),
        Op("GET", "/replication/policies/{policy}", get_policy_too, "b", "replication"),
    ]
    with pytest.raises(ValueError, match=r"get_get_policy.*/replication/policies.*/trust/policies"):
        build_openapi(ops, "/api/v1", "1", [])
