"""Fixtures of the pull-through cache tests: Distribution 2.8.2 as the upstream (behind a fault
proxy where a test needs 429s or an outage), one Moorage without access control per module, and
helpers to create cache organizations through the contract's command and to wait for a fill."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import MoorageServer, moorage_cli, postgres_database
from tests.replication.faultproxy import FaultProxy
from tests.replication.peers import Distribution, distribution


@pytest.fixture(scope="module")
def upstream() -> Iterator[Distribution]:
    with distribution() as peer:
        yield peer


@pytest.fixture(scope="module")
def proxy(upstream: Distribution) -> Iterator[FaultProxy]:
    p = FaultProxy(upstream.port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def mirror(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-mirror-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", database_url=backend[1], extra_args=["--no-auth"]
        ).start(timeout=180)  # migrations on a loaded machine
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


def create_cache(server: MoorageServer, name: str, url: str, *extra: str) -> None:
    r = moorage_cli(server, "admin", "create-org", name, "--mirror-of", url, *extra)
    assert r.returncode == 0, r.stderr
    assert "pull-through cache" in r.stdout
    wait_seen(server, name)


def wait_seen(server: MoorageServer, name: str) -> None:
    """Nodes refresh their view of the cache organizations every few seconds: until this one
    sees the new cache, an upload into it is accepted; then it is refused."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.post(f"{server.url}/v2/{name}/probe/blobs/uploads/", timeout=10)
        if r.status_code == 403:
            return
        if r.status_code == 202:
            httpx.delete(f"{server.url}{r.headers['location']}", timeout=10)
        time.sleep(0.2)
    raise AssertionError(f"the server never saw cache {name}")


def wait_cached(server: MoorageServer, repo: str, tag: str, timeout: float = 60) -> None:
    """Until the fill job stored *tag* (tags/list answers what is held here, never upstream)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.url}/v2/{repo}/tags/list", timeout=10)
        if r.status_code == 200 and tag in (r.json().get("tags") or []):
            return
        time.sleep(0.2)
    raise AssertionError(f"{repo}:{tag} was not cached within {timeout}s:\n{server.log()}")


SECRET = "mirror-tests-key-encryption-secret-0123456789"


@pytest.fixture(scope="module")
def mirror_with_secret(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """A mirror whose nodes can seal and open upstream credentials (on PostgreSQL a database
    of its own: its nodes seal the signing keys too, which the others could not open)."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="moorage-mirror-s-"))
        url = stack.enter_context(postgres_database()) if backend[0] == "postgresql" else None
        srv = MoorageServer(
            Path(tmp) / "data",
            database_url=url,
            extra_args=["--no-auth"],
            env={"MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": SECRET},
        ).start(timeout=180)  # migrations on a loaded machine
        try:
            yield srv
        finally:
            srv.stop()


def sql(server: MoorageServer, statement: str, **params: object) -> list[tuple[Any, ...]]:
    """Run one SQL statement on the server's database (SQLite or PostgreSQL), as a test
    inspects or ages rows; a datetime parameter is given as an aware UTC datetime."""
    url = server.database_url or f"sqlite:///{server.data_dir / 'moorage.db'}"
    is_sqlite = url.startswith("sqlite")
    url = url.replace("postgresql://", "postgresql+asyncpg://", 1).replace(
        "sqlite:///", "sqlite+aiosqlite:///", 1
    )
    if is_sqlite:  # stored as SQLAlchemy stores them there: naive UTC text
        params = {
            k: v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
            for k, v in params.items()
        }

    async def go() -> list[tuple[Any, ...]]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(statement), params)
                return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(go())
