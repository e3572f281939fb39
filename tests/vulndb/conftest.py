"""Fixtures of the vulnerability-data tests: a migrated database per backend (SQLite file or a
fresh PostgreSQL database) and helpers to run the importer and matcher on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from moorage.db.engine import create_engine, upgrade
from tests.conftest import BACKENDS, postgres_database

T = TypeVar("T")
DATA = Path(__file__).parent.parent / "data" / "vulndb"
OSV = DATA / "osv"
RECORDS = DATA / "records"


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'vulndb.db'}"
    else:
        with postgres_database() as url:
            yield url


def run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """*work(engine)* on a fresh engine for *url*."""

    async def go() -> T:
        engine = create_engine(url, 2)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def unmask_apitester_records(dest: Path) -> Path:
    """osv.dev's apitester snapshots mask ``modified`` (a placeholder text) and replace
    ``versions`` by a count; ranges are intact. Copy them with ``modified`` set to
    ``published`` (the one test-side change) so that they import as OSV."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((OSV / "osvdev-apitester-records").glob("*.json")):
        doc = json.loads(f.read_text())
        doc["modified"] = doc.get("published") or "2026-01-01T00:00:00Z"
        (dest / f.name).write_text(json.dumps(doc))
    return dest


@pytest.fixture(scope="module", params=BACKENDS)
def vulndb_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database holding every advisory of tests/data/vulndb (Go vulndb, PyPA,
    osv.dev's apitester records, the distribution records)."""
    from moorage.scan.vulndb.importer import import_source

    tmp = tmp_path_factory.mktemp("vulndb")
    with database(request.param, tmp) as url:
        asyncio.run(upgrade(url))
        apitester = unmask_apitester_records(tmp / "apitester")

        async def load(engine: Any) -> None:
            for src in (
                OSV / "go-vulndb" / "osv",
                OSV / "pypa-advisory-db" / "json",
                apitester,
                RECORDS,
            ):
                await import_source(engine, str(src))

        run(url, load)
        yield url
    shutil.rmtree(tmp, ignore_errors=True)


class ZipServer:
    """A loopback HTTP server of one file with an ETag (answers 304 to a matching
    If-None-Match), standing in for osv.dev's bucket; counts full downloads."""

    def __init__(self, path: Path) -> None:
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.path = path
        self.downloads = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
                if self.path != "/all.zip":
                    self.send_error(404)
                    return
                data = outer.path.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                outer.downloads += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/all.zip"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_zip(dest: Path, docs: dict[str, Any]) -> Path:
    """An all.zip as osv.dev lays it out: one ``<id>.json`` per record at the top."""
    import zipfile

    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, doc in docs.items():
            zf.writestr(f"{name}.json", json.dumps(doc))
    return dest


@contextlib.contextmanager
def auth_server(**env: str) -> Iterator[Any]:
    """conftest's ``own_auth_server`` with a longer start-up allowance: on a 2-core machine under
    other suites' load a first start (every migration on a new SQLite file) passed 30 s."""
    import tempfile

    from tests.conftest import ADMIN_PASSWORD, MoorageServer

    with tempfile.TemporaryDirectory(prefix="moorage-vulndb-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
        ).start(timeout=180)
        try:
            yield srv
        finally:
            srv.stop()
