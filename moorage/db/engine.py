"""Engine creation and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool
from sqlalchemy.util import await_only

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
        engine = _SQLiteEngine(
            create_async_engine(
                u, pool_size=pool_size, max_overflow=pool_size, pool_reset_on_return=None
            ).sync_engine
        )
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # Take the write lock at BEGIN so that concurrent writers queue instead of failing
        # with SQLITE_BUSY on lock upgrade (aiosqlite's default deferred transactions).
        # Writers of this process queue in arrival order first (_WriterQueue).
        queue = _WriterQueue()
        queue.listen(engine)
        if u.database and u.database != ":memory:":
            _QUEUES_BY_FILE[os.path.realpath(u.database)] = queue
        return engine
    return create_async_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_reset_on_return=None,
    )


class _WriterQueue:
    """One process's SQLite writers, in arrival order.

    Every write transaction takes SQLite's one write lock at BEGIN IMMEDIATE. When many wait
    for it at once (200 concurrent manifest PUTs, each with the capabilities' subscribers in its
    transaction), SQLite's busy handler is no queue: each waiter sleeps and retries on its own
    (1, 2, 5 … 100 ms), the lock goes to whoever happens to retry at the right moment, and an
    unlucky one gives up after busy_timeout with "database is locked" — a 503 for a request
    that only had to wait its turn. So a process's writers first queue here (FIFO, asyncio),
    and only the head of the queue asks SQLite; busy_timeout is left to arbitrate between
    processes (workers, CLI commands, the group-commit writer thread), a handful of contenders.

    A connection of the write engine (``writer(engine).connect()`` or ``.begin()``) takes its
    turn *before* it is checked out of the pool (_TurnFirstConnection) and gives it back when
    it is checked in or invalidated: waiters holding pooled connections would otherwise starve
    the turn's holder of the connection it needs, until the pool's timeout. A connection marked
    for writing after its checkout (``conn.execution_options(moorage_write=True)``) takes its
    turn at BEGIN and gives it back when the transaction ends (the commit or rollback event,
    just before SQLite's COMMIT: the next writer's BEGIN IMMEDIATE then waits those few
    milliseconds in the busy handler), or when the connection is checked in or invalidated
    without either."""

    WAIT_SECONDS = 60.0  # then the error SQLite would give, answered 503 "retry"
    KEY = "moorage_writer_turn"  # taken at BEGIN, given back at the commit/rollback event
    SCOPED = "moorage_writer_turn_scoped"  # taken before checkout, given back at checkin

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        entry = self._locks.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, asyncio.Lock())
            self._locks = {k: v for k, v in self._locks.items() if not v[0].is_closed()}
            self._locks[id(loop)] = entry
        return entry[1]

    async def acquire(self) -> asyncio.Lock:
        lock = self._lock()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the inner result
            # when the lock is granted just as the caller is cancelled, swallowing the cancel.
            # A progress reporter cancelled that way wrote on forever and its job never ended
            # (a replication execution waited 300 s in CI; tests/jobs/test_runner.py).
            async with asyncio.timeout(self.WAIT_SECONDS):
                await lock.acquire()
        except TimeoutError:
            raise sa.exc.OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
            ) from None
        return lock

    def begin(self, conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("moorage_write", False)
        if not write:
            conn.exec_driver_sql("BEGIN")
            return
        if self.KEY not in conn.info and self.SCOPED not in conn.info:
            conn.info[self.KEY] = await_only(self.acquire())
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self.release(conn)
            raise

    @classmethod
    def release(cls, conn: Any, *_: Any, keys: tuple[str, ...] = (KEY,)) -> None:
        info = getattr(conn, "info", None)
        if info is None:
            return
        for key in keys:
            lock = info.pop(key, None)
            if lock is not None and lock.locked():
                lock.release()

    def listen(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine
        sa.event.listen(sync, "begin", self.begin)
        sa.event.listen(sync, "commit", self.release)
        sa.event.listen(sync, "rollback", self.release)
        # A connection that goes back to the pool or is dropped without a commit or rollback
        # event (an error in the driver) must not keep the turn.
        sa.event.listen(sync.pool, "checkin", self._release_record)
        sa.event.listen(sync.pool, "invalidate", self._release_record)
        _QUEUES[sync.pool] = self

    @classmethod
    def _release_record(cls, _dbapi_conn: Any, record: Any, *_: Any) -> None:
        if record is not None:
            cls.release(record, keys=(cls.KEY, cls.SCOPED))


_QUEUES: weakref.WeakKeyDictionary[Pool, _WriterQueue] = weakref.WeakKeyDictionary()
# The same queues by database file, for the push path's writer thread (db/writers.py), which
# takes its turn among them for each batch.
_QUEUES_BY_FILE: weakref.WeakValueDictionary[str, _WriterQueue] = weakref.WeakValueDictionary()


def writer_queue_for(path: str) -> _WriterQueue | None:
    """This process's queue of writers to the SQLite file *path*, if an engine opened it."""
    return _QUEUES_BY_FILE.get(os.path.realpath(path))


class _TurnFirstConnection(AsyncConnection):
    """A connection of a SQLite engine. On the write engine it is checked out of the pool only
    once this task has its turn (_WriterQueue), and keeps the turn until it goes back to the
    pool (the pool's checkin event gives it back), across any COMMIT in between."""

    async def start(self, is_ctxmanager: bool = False) -> AsyncConnection:
        queue = _QUEUES.get(self.sync_engine.pool)
        if queue is None or not self.sync_engine.get_execution_options().get("moorage_write"):
            return await super().start(is_ctxmanager)
        lock = await queue.acquire()
        try:
            await super().start(is_ctxmanager)
            (await self.get_raw_connection()).info[_WriterQueue.SCOPED] = lock
        except BaseException:
            if lock.locked():
                lock.release()
            raise
        return self


class _SQLiteEngine(AsyncEngine):
    """An AsyncEngine whose write connections queue for their turn before they are checked out
    (_TurnFirstConnection; ``begin()`` is ``connect()`` then BEGIN). ``execution_options()``
    keeps the class, so ``writer(engine)`` is one too.

    The turn always comes before the connection. The write engine shares the read engine's
    pool; a write ``connect()`` that checked a connection out and only then waited for the turn
    (at BEGIN) held a pooled connection while it waited. Enough of them — 32 parallel logins
    reading their throttle counters — held the whole pool while the turn's holder waited for a
    connection, until the pool's timeout answered 503. Reads belong on ``reader(engine)``,
    which never waits for the turn."""

    _connection_cls = _TurnFirstConnection

    def execution_options(self, **opt: Any) -> AsyncEngine:
        return _SQLiteEngine(self.sync_engine.execution_options(**opt))


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, never taking SQLite's write lock, even when handed ``writer(engine)``."""
    return engine.execution_options(moorage_write=False)


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


def script_heads() -> frozenset[str] | None:
    """The head revisions of the migration scripts, read from their ``revision`` and
    ``down_revision`` assignments without importing Alembic (about 11 MiB resident that a
    server would keep for nothing); None when a script is not in that simple form (branch labels,
    dependencies, computed values), and Alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        values: dict[str, Any] = {}
        target: ast.expr
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in (
                "revision",
                "down_revision",
                "branch_labels",
                "depends_on",
            ):
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    return None
        revision, down = values.get("revision"), values.get("down_revision")
        if not isinstance(revision, str) or values.get("branch_labels") or values.get("depends_on"):
            return None
        revisions.add(revision)
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
            parents.update(down)
        elif down is not None:
            return None
    return frozenset(revisions - parents) if revisions else None


async def _at_heads(conn: AsyncConnection) -> bool:
    """Whether the database's ``alembic_version`` holds exactly the scripts' heads (nothing to
    migrate), read without Alembic; False when unsure."""
    heads = script_heads()
    if heads is None:
        return False

    def stamped(sync_conn: sa.Connection) -> frozenset[str] | None:
        if not sa.inspect(sync_conn).has_table("alembic_version"):
            return None
        rows = sync_conn.execute(sa.text("SELECT version_num FROM alembic_version"))
        return frozenset(str(r[0]) for r in rows)

    current = await conn.run_sync(stamped)
    await conn.rollback()
    return current == heads


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations; nodes starting together take turns through an advisory lock. A
    database already at the scripts' head is left as it is without importing Alembic."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            is_pg = conn.dialect.name == "postgresql"
            if revision == "head" and await _at_heads(conn):
                if not is_pg:
                    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                return
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
