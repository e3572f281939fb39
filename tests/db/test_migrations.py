"""Migrations and db/schema.py describe the same database: what Alembic builds is what the code
queries, on both backends, and the newest migration downgrades and upgrades again cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from moorage.capabilities import all_metadata
from moorage.db import engine as db_engine
from tests.conftest import postgres_database

STRUCTURAL = ("add_table", "remove_table", "add_column", "remove_column")


@contextlib.contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        with postgres_database() as url:
            yield url


def _run(url: str, fn: Any) -> Any:
    async def go() -> Any:
        engine = create_async_engine(db_engine.async_url(url))
        try:
            async with engine.connect() as conn:
                result = await conn.run_sync(fn)
                await conn.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _structural_diff(url: str) -> list[Any]:
    def compare(conn: sa.Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn)
        return [
            d
            for d in compare_metadata(ctx, all_metadata())
            if isinstance(d, tuple) and d[0] in STRUCTURAL
        ]

    return list(_run(url, compare))


def _downgrade(url: str, revision: str) -> None:
    def go(conn: sa.Connection) -> None:
        cfg = db_engine.alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    _run(url, go)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_the_schema_the_code_uses(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        db_engine.upgrade_sync(url)
        assert _structural_diff(url) == []
        _downgrade(url, "-1")
        assert _structural_diff(url) != []
        db_engine.upgrade_sync(url)
        assert _structural_diff(url) == []
