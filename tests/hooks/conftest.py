"""A real ``moorage serve`` for webhook tests (access control on, receivers on 127.0.0.1
allowed, a fast job queue), over SQLite and PostgreSQL, and a real receiver per test."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ADMIN_PASSWORD, MoorageServer, postgres_database
from .receiver import WebhookReceiver

KEY_SECRET = "webhook-test-key-encryption-secret"
FAST = {
    "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MOORAGE_WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.1/32",
    "MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": KEY_SECRET,
    "MOORAGE_JOBS_POLL_SECONDS": "0.2",
    "MOORAGE_JOBS_RETRY_BASE_SECONDS": "0.5",
    "MOORAGE_JOBS_RETRY_MAX_SECONDS": "1",
    "MOORAGE_AUDIT_FLUSH_INTERVAL_MS": "50",
    "MOORAGE_LOG_ACCESS_LOG": "false",
}


@pytest.fixture(scope="module")
def hook_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-hooks-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            srv = MoorageServer(Path(tmp) / "data", database_url=url, env=dict(FAST)).start()
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
def admin(hook_server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hook_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


@pytest.fixture
def org() -> str:
    return f"hk{uuid.uuid4().hex[:8]}"


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until *check* returns something truthy (the deadline bounds a broken run only)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def events_of(body: bytes) -> list[dict[str, Any]]:
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("events"), list), doc
    return list(doc["events"])


def cli(
    server: MoorageServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``moorage ARGS --data-dir <the server's>`` with the server's own settings (as an
    operator runs it with the same configuration while the server runs)."""
    env = {**os.environ, **server.env}
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    return subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args, "--data-dir", str(server.data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
