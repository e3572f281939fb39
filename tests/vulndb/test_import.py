"""``moorage vulndb import|status``, incremental imports from a zip, a directory and a URL,
the scheduled refresh of configured sources on a running server, and GET /api/v1/vulndb."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from moorage.db.engine import upgrade
from moorage.scan.model import Inventory, Package
from moorage.scan.vulndb.importer import ImportResult, import_source
from moorage.scan.vulndb.matcher import Matcher
from tests.conftest import ADMIN_PASSWORD, moorage_cli
from tests.ui.conftest import login_http

from .conftest import OSV, ZipServer, auth_server, run, write_zip


def _go_docs() -> dict[str, Any]:
    docs = {}
    for f in sorted((OSV / "go-vulndb" / "osv").glob("*.json"))[:40]:
        doc = json.loads(f.read_text())
        doc["modified"] = "2026-08-21T00:00:00Z"  # the repo copy has a placeholder date
        docs[doc["id"]] = doc
    return docs


def _import(url: str, spec: str) -> ImportResult:
    async def go(engine: Any) -> ImportResult:
        return await import_source(engine, spec)

    return run(url, go)


def _ids(url: str, pkg: Package) -> list[str]:
    async def go(engine: Any) -> list[str]:
        return [f.id for f in await Matcher(engine).match(Inventory(None, (pkg,), ()))]

    return run(url, go)


def test_zip_incremental_and_withdrawal(tmp_path: Path) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'm.db'}"
    asyncio.run(upgrade(url))
    docs = _go_docs()
    z = write_zip(tmp_path / "all.zip", docs)
    first = _import(url, str(z))
    assert (first.kind, first.added, first.updated, first.unchanged, first.invalid) == (
        "zip",
        40,
        0,
        0,
        0,
    )
    again = _import(url, str(z))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 40)

    # one record changes upstream (later `modified`): only it is rewritten
    some = next(d for d in docs.values() if d["affected"][0]["package"]["name"] == "stdlib")
    pkg = Package("golang", "stdlib", "go1.10.0")
    assert some["id"] in _ids(url, pkg)
    some["modified"] = "2026-09-01T00:00:00Z"
    some["withdrawn"] = "2026-09-01T00:00:00Z"
    docs["BROKEN"] = {"id": "BROKEN"}  # no `modified`: skipped and counted, not fatal
    write_zip(z, docs)
    third = _import(url, str(z))
    assert (third.added, third.updated, third.unchanged, third.withdrawn, third.invalid) == (
        0,
        1,
        39,
        1,
        1,
    )
    assert some["id"] not in _ids(url, pkg)


def test_url_validators_and_changes(tmp_path: Path) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'm.db'}"
    asyncio.run(upgrade(url))
    docs = _go_docs()
    z = write_zip(tmp_path / "all.zip", dict(list(docs.items())[:10]))
    srv = ZipServer(z)
    try:
        first = _import(url, srv.url)
        assert (first.kind, first.added, srv.downloads) == ("url", 10, 1)
        second = _import(url, srv.url)  # If-None-Match → 304: nothing downloaded or read
        assert second.not_modified and srv.downloads == 1 and second.added == 0
        write_zip(z, docs)
        third = _import(url, srv.url)
        assert (third.added, third.unchanged, srv.downloads) == (30, 10, 2)
    finally:
        srv.close()


def test_cli_and_scheduled_refresh_on_a_running_server(tmp_path: Path) -> None:
    docs = _go_docs()
    z = write_zip(tmp_path / "all.zip", dict(list(docs.items())[:25]))
    feed = ZipServer(z)
    try:
        with auth_server(MOORAGE_VULNDB_SOURCES=feed.url) as srv:
            admin = ("admin", ADMIN_PASSWORD)
            # the configured source is refreshed by a job on the shared queue. Records are
            # committed batch by batch and the source's result after the last batch: wait for
            # the import to finish (updated_at), not only for the records.
            deadline = time.monotonic() + 60
            while True:
                st = httpx.get(f"{srv.url}/api/v1/vulndb", auth=admin, timeout=10).json()
                if (st["records"] == 25 and st["updated_at"]) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert st["records"] == 25 and st["ecosystems"] == {"Go": 25}, (st, srv.log())
            assert st["configured_sources"] == [feed.url] and st["updated_at"]
            [source] = st["sources"]
            assert (source["name"], source["kind"], source["records"]) == (feed.url, "url", 25)
            assert source["last_result"]["added"] == 25

            # an operator imports a directory while the server runs
            r = moorage_cli(
                srv, "vulndb", "import", str(OSV / "pypa-advisory-db" / "json"), "--json"
            )
            assert r.returncode == 0, r.stderr
            result = json.loads(r.stdout)
            assert (result["kind"], result["added"], result["invalid"]) == ("directory", 54, 0)
            r = moorage_cli(srv, "vulndb", "status", "--json")
            assert r.returncode == 0, r.stderr
            st = json.loads(r.stdout)
            assert st["records"] == 79 and st["ecosystems"] == {"Go": 25, "PyPI": 54}
            r = moorage_cli(srv, "vulndb", "status")
            assert "records: 79 (0 withdrawn)" in r.stdout and "PyPI\t54" in r.stdout
            # the UI page shows the same
            with login_http(srv) as ui:
                page = ui.get("/ui/vulndb")
                assert page.status_code == 200 and 'href="/ui/vulndb"' in page.text
                assert 'id="vulndb-sources"' in page.text and feed.url in page.text
                assert '<td class="mono">PyPI</td><td>54</td>' in page.text
            r = moorage_cli(srv, "vulndb", "import", str(tmp_path / "missing"))
            assert r.returncode == 1 and "no such file or directory" in r.stderr

            # a refresh on demand: administrators only; the unchanged feed is not downloaded
            assert httpx.post(f"{srv.url}/api/v1/vulndb/refresh", timeout=10).status_code == 401
            r = httpx.post(f"{srv.url}/api/v1/vulndb/refresh", auth=admin, timeout=10)
            assert r.status_code == 202, r.text
            job = r.json()["job_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                j = httpx.get(f"{srv.url}/api/v1/jobs/{job}", auth=admin, timeout=10).json()
                if j["state"] in ("succeeded", "failed"):
                    break
                time.sleep(0.3)
            assert j["state"] == "succeeded", j
            assert j["result"][feed.url]["not_modified"] is True
            assert feed.downloads == 1
    finally:
        feed.close()
