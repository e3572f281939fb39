"""Engine creation and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key that serializes migrations of nodes starting together ("moorage" in hex).
_MIGRATION_LOCK_KEY = 0x6D6F6F72616765
# pg_advisory_xact_lock key for first-start setup (initial administrator, signing key): nodes
# starting together would otherwise each see "none yet" and each create one ("mrgboot").
SETUP_LOCK_KEY = 0x6D7267626F6F74


def async_url(url: str) -> sa.URL:
    """Map a user-facing URL to the async driver we use for it."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {u.drivername!r} (sqlite or postgresql)")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let the "begin" listener issue BEGIN itself (pysqlite's implicit BEGIN is DEFERRED).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    # WAL is a property of the file, set once. Asking for it again on every new connection is
    # not free: the pragma wants a lock that a busy writer holds, and SQLite answers "database
    # is locked" without waiting (seen with two pools appending at once).
    # (`moorage db upgrade` and the start-up migration switch a new file to WAL first.)
    for attempt in range(50):
        cur.execute("PRAGMA journal_mode")
        if str(cur.fetchone()[0]).lower() == "wal":
            break
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.02)  # another connection is switching it right now
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """The SQLAlchemy engine. No reset (ROLLBACK) when a connection goes back to the pool: the
    Connection already ends any transaction it began when it closes (SQLAlchemy 2 skips the
    reset then); after a committed ``begin()`` block the reset was one more round trip — one
    more hop to aiosqlite's thread — per transaction, for nothing."""
    u = async_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            u, pool_size=pool_size, max_overflow=pool_size, pool_reset_on_return=None
        )
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # Take the write lock at BEGIN so that concurrent writers queue instead of failing
        # with SQLITE_BUSY on lock upgrade (aiosqlite's default deferred transactions).
        sa.event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_async_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_reset_on_return=None,
    )


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    write = conn.get_execution_options().get("moorage_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, marked so that SQLite transactions take the write lock at BEGIN."""
    return engine.execution_options(moorage_write=True)


async def serialize(conn: AsyncConnection, key: int) -> None:
    """Hold the PostgreSQL advisory lock *key* until this transaction ends, so that the same
    read-then-write on several nodes takes turns. (SQLite: a writer's BEGIN IMMEDIATE already
    serializes.)"""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


# Alembic announces each of its plugins at INFO when it is imported ("setup plugin ..."): noise
# burying the start-up lines. Set before any import of alembic; the migrations' own lines
# (alembic.runtime.migration) stay.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def alembic_config(url: str) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run_upgrade(sync_conn: sa.Connection, url: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config(url)
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations; nodes starting together take turns through an advisory lock."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            is_pg = conn.dialect.name == "postgresql"
            if is_pg:
                await conn.execute(
                    sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                )
                await conn.commit()
            try:
                await conn.run_sync(_run_upgrade, url, revision)
                await conn.commit()
                if not is_pg:
                    # WAL belongs to the file: set it once here, before any server connects.
                    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            finally:
                if is_pg:
                    await conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                    )
                    await conn.commit()
    finally:
        await engine.dispose()


def upgrade_sync(url: str, revision: str = "head") -> None:
    asyncio.run(upgrade(url, revision))


async def current_revision(conn: AsyncConnection) -> str | None:
    def get(sync_conn: sa.Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(get)


def ensure_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
