"""Servers for lifecycle tests: GC with a zero grace window (and no untagged delay,
time-machine window or pull-by-digest pin), over SQLite and PostgreSQL; ``moorage`` commands against them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import ADMIN_PASSWORD, MoorageServer, postgres_database, run_cli

ZERO = {
    "MOORAGE_GC_GRACE_SECONDS": "0",
    "MOORAGE_GC_UNTAGGED_SECONDS": "0",
    "MOORAGE_GC_HISTORY_DAYS": "0",
    "MOORAGE_GC_PIN_PULLED_WITHIN_SECONDS": "0",  # tests pull by digest to check
    "MOORAGE_LOG_ACCESS_LOG": "false",
    "MOORAGE_JOBS_POLL_SECONDS": "0.2",
}


@contextlib.contextmanager
def gc_server(backend: tuple[str, str | None], **env: str) -> Iterator[MoorageServer]:
    """An open registry (``--no-auth``) with a database of its own."""
    with tempfile.TemporaryDirectory(prefix="moorage-gc-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            srv = MoorageServer(
                Path(tmp) / "data", database_url=url, extra_args=["--no-auth"], env={**ZERO, **env}
            ).start(timeout=120)  # a busy shared machine starts slowly
            try:
                yield srv
            finally:
                srv.stop()
                keep = os.environ.get("MOORAGE_TEST_KEEP_LOG")
                if keep and srv.log_path is not None:
                    shutil.copy(srv.log_path, keep)


@pytest.fixture(scope="module")
def quiet_gc(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """GC only when a test runs ``moorage gc run`` (no scheduled pass)."""
    with gc_server(backend, MOORAGE_GC_ENABLED="false") as srv:
        yield srv


@pytest.fixture
def gc_client(quiet_gc: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=quiet_gc.url, timeout=60) as c:
        yield c


def cli(server: MoorageServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``moorage ARGS --data-dir DIR`` with the server's environment (database, storage, gc)."""
    env = dict(os.environ)
    env.update(server.env)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    return run_cli([*args, "--data-dir", str(server.data_dir)], env)


def stored_blobs(server: MoorageServer) -> set[str]:
    """Digests whose bytes are in the filesystem store."""
    root = server.data_dir / "storage" / "blobs"
    out: set[str] = set()
    if root.is_dir():
        for alg in root.iterdir():
            for path in alg.rglob("*"):
                if path.is_file():
                    out.add(f"{alg.name}:{path.name}")
    return out


@contextlib.contextmanager
def admin_gc_server(backend: tuple[str, str | None], **env: str) -> Iterator[MoorageServer]:
    """Access control on (admin password ADMIN_PASSWORD), GC only when asked."""
    with tempfile.TemporaryDirectory(prefix="moorage-lc-auth-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            srv = MoorageServer(
                Path(tmp) / "data",
                database_url=url,
                env={
                    **ZERO,
                    "MOORAGE_GC_ENABLED": "false",
                    "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    **env,
                },
            ).start(timeout=120)
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture(scope="module")
def auth_gc(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with admin_gc_server(backend) as srv:
        yield srv
