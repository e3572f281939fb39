"""Audit log tests: shared fixtures (imported by each module), on SQLite and PostgreSQL.

Every test gets a database of its own, migrated with moorage.db.engine.upgrade: a SQLite file in
a temporary directory, or a PostgreSQL database on 127.0.0.1:5432 created and dropped around the
test (tests.conftest.postgres_database).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import AuditEvent
from moorage.audit.events import AuditRecord
from moorage.audit.store import iter_records
from moorage.db.engine import create_engine, upgrade
from tests.conftest import BACKENDS, postgres_database

# Tests and fixtures share the session loop (asyncio_default_fixture_loop_scope = "session").
ASYNC = pytest.mark.asyncio(loop_scope="session")


# Test modules import these (tests/audit has no conftest.py): ``from tests.audit import
# db_url_fixture, engine_fixture``; the fixtures are named ``db_url`` and ``engine``.


@pytest.fixture(name="db_url", params=BACKENDS)
async def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgresql":
        with postgres_database() as url:
            await upgrade(url)
            yield url
    else:
        url = f"sqlite:///{tmp_path / 'data' / 'moorage.db'}"
        (tmp_path / "data").mkdir()
        await upgrade(url)
        yield url


@pytest.fixture(name="engine")
async def engine_fixture(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


async def all_records(engine: AsyncEngine) -> list[AuditRecord]:
    return [rec async for rec in iter_records(engine)]


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    """Tamper with the database behind the audit log's back."""
    async with engine.begin() as conn:
        await conn.execute(sa.text(sql), params)


def event(i: int = 0, **kw: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "action": "manifest.push",
        "actor": f"user{i % 3}",
        "actor_type": "user",
        "repository": f"team/app{i % 2}",
        "tag": f"v{i}",
        "digest": "sha256:" + f"{i:064x}",
        "client_addr": "127.0.0.1",
        "user_agent": "docker/27.0",
        "request_id": f"req{i}",
        "details": {"i": i},
    }
    values.update(kw)
    return AuditEvent(**values)
