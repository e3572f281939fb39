"""A real ``moorage serve`` for scan tests (access control on, a fast job queue), over SQLite
and PostgreSQL."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ADMIN_PASSWORD, MoorageServer, postgres_database

FAST = {
    "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MOORAGE_JOBS_POLL_SECONDS": "0.2",
    "MOORAGE_JOBS_RETRY_BASE_SECONDS": "0.5",
    "MOORAGE_JOBS_RETRY_MAX_SECONDS": "1",
    "MOORAGE_AUDIT_FLUSH_INTERVAL_MS": "50",
    "MOORAGE_LOG_ACCESS_LOG": "false",
    "MOORAGE_SCANNING_ATTACH_SBOM": "true",
}


@pytest.fixture(scope="module")
def scan_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-scan-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            srv = MoorageServer(Path(tmp) / "data", database_url=url, env=dict(FAST))
            srv.start(timeout=120)  # migrations from scratch on a busy machine
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture
def admin(scan_server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scan_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


def wait_report(client: httpx.Client, repo: str, ref: str, timeout: float = 60) -> dict[str, Any]:
    """The vulnerabilities report once the scan has finished (polling, no timing asserted)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/repositories/{repo}/-/manifests/{ref}/vulnerabilities")
        if r.status_code == 200:
            body = r.json()
            if body["status"] not in ("pending", "running"):
                return body
        else:
            assert r.status_code == 404, r.text
        time.sleep(0.2)
    raise AssertionError(f"scan of {repo}:{ref} did not finish: {body}")
