"""The executors of the push path's writes (moorage/db/writepath.py holds the operations and
says why): on SQLite one writer thread per process that runs every queued unit in one
``BEGIN IMMEDIATE … COMMIT`` (a group commit, each unit in its own SAVEPOINT); on PostgreSQL a
transaction per unit on the hot reads' asyncpg pool. ``write_path_for`` picks one by URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from ..aio import cancel_and_wait
from .engine import writer_queue_for
from .hotpath import HotReads, PostgresHotReads
from .inline import InlineConnection, NotInline, inline_scope, sync_engine_for
from .writepath import DatabaseUnavailable, Tx, Unit

log = logging.getLogger("moorage.db")

T = TypeVar("T")
# Units one SQLite transaction takes at most (a bound on how long the write lock is held).
MAX_BATCH = 256


class WritePath(Protocol):
    batches: int  # transactions committed
    units: int  # operations in them
    inline_units: bool  # units may use tx.inline() (SQLAlchemy on the writer's transaction)

    async def run(self, unit: Unit[T]) -> T: ...
    async def close(self) -> None: ...


def _qmark(sql: str) -> str:
    # $1 → ?1: SQLite's numbered parameters (a parameter may be used twice).
    return sql.replace("$", "?")


_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # what SQLAlchemy's DateTime stores in SQLite (naive UTC)


class _SQLiteValues:
    """How the write path's statements take locks, times and lists on SQLite."""

    row_locks = False  # BEGIN IMMEDIATE: one writer holds the database

    def ts(self, value: datetime) -> Any:
        return value.astimezone(UTC).replace(tzinfo=None).strftime(_SQLITE_TS)

    def read_ts(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)

    def any_of(self, first: int, values: Sequence[str]) -> tuple[str, list[Any]]:
        marks = ", ".join(f"${first + i}" for i in range(len(values)))
        return f"IN ({marks})", list(values)


class _PgValues:
    """How the write path's statements take locks, times and lists on PostgreSQL."""

    row_locks = True

    def ts(self, value: datetime) -> Any:
        return value

    def read_ts(self, value: Any) -> datetime | None:
        return value  # type: ignore[no-any-return]

    def any_of(self, first: int, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"= ANY(${first}::text[])", [list(values)]


class _SQLiteTx(_SQLiteValues):
    def __init__(self, conn: sqlite3.Connection, engine: Any = None) -> None:
        self.conn = conn
        self._engine = engine  # the synchronous SQLAlchemy engine over *conn* (inline units)
        self._sa: Any = None

    def inline(self) -> AsyncConnection:
        """This unit's statements through SQLAlchemy (moorage/db/inline.py)."""
        if self._engine is None:
            raise NotInline("no SQLAlchemy engine on this writer")
        if self._sa is None:
            self._sa = self._engine.connect()
        return InlineConnection(self._sa).as_async()

    def end_unit(self) -> None:
        if self._sa is not None:
            self._sa.close()  # ends SQLAlchemy's view of the transaction only (inline._Lent)
            self._sa = None

    async def one(self, sql: str, *params: Any) -> Any:
        return self.conn.execute(_qmark(sql), params).fetchone()

    async def all(self, sql: str, *params: Any) -> list[Any]:
        return self.conn.execute(_qmark(sql), params).fetchall()

    async def run(self, sql: str, *params: Any) -> int:
        return self.conn.execute(_qmark(sql), params).rowcount


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its awaits are synchronous underneath). One that
    does is closed and ends with NotInline: its caller runs it on the async engine."""
    with inline_scope():
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        coro.close()
    raise NotInline("a write unit suspended on the SQLite writer thread")


@dataclass(slots=True)
class _Job:
    unit: Unit[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class SQLiteWritePath:
    """The writer thread (started on first use, stopped by :meth:`close`)."""

    inline_units = True

    def __init__(self, path: str, busy_timeout_ms: int = 10000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Counters for benchmarks and tests (transactions, units).
        self.batches = 0
        self.units = 0
        self._engine: Any = None  # SQLAlchemy over the writer's connection (inline units)
        self._engine_of: sqlite3.Connection | None = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="moorage-sqlite-writer", daemon=True
                )
                self._thread.start()

    async def run(self, unit: Unit[T]) -> T:
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(unit, loop, future))
        return await future

    async def close(self) -> None:
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join, 30)
            self._thread = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            try:
                if conn is None:
                    conn = self._connect()
                outcomes = self._batch(conn, jobs)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch is told
                # BEGIN or COMMIT failed (locked too long, disk full, I/O error), or a unit
                # failed in a way that ended the transaction: nothing of this batch is written.
                log.warning("database write failed (%d operations not written): %s", len(jobs), exc)
                err = _wrap(exc)
                outcomes = [(False, err)] * len(jobs)
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
                    conn = None
            for job, (ok, value) in zip(jobs, outcomes, strict=True):
                try:
                    job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
                except RuntimeError:
                    pass  # the caller's event loop is closed (shutting down)
        if conn is not None:
            conn.close()

    def _batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        """One transaction for *jobs*, a savepoint each. A sqlite3 error that escapes (BEGIN,
        COMMIT, or one that ended the whole transaction) fails every job of the batch."""
        if self._engine is None or self._engine_of is not conn:
            self._engine, self._engine_of = sync_engine_for(conn), conn
        tx = _SQLiteTx(conn, self._engine)
        outcomes: list[tuple[bool, Any]] = []
        with self._turn(jobs[0].loop):
            self._transaction(conn, tx, jobs, outcomes)
        self.batches += 1
        self.units += len(jobs)
        return outcomes

    @contextlib.contextmanager
    def _turn(self, loop: asyncio.AbstractEventLoop) -> Any:
        """This batch's turn among the process's other SQLite writers (the engine's
        _WriterQueue, FIFO): back-to-back batches would otherwise keep the write lock from
        the pool's writers (audit, jobs, the API), whose busy handler retries only now and
        then and can miss every gap between two batches for longer than busy_timeout."""
        queue = writer_queue_for(self.path)
        lock = None
        if queue is not None and not loop.is_closed():
            turn = asyncio.run_coroutine_threadsafe(queue.acquire(), loop)
            try:
                lock = turn.result(queue.WAIT_SECONDS + 5)
            except Exception:  # noqa: BLE001 - no turn: SQLite's busy handler decides
                lock = None
                # A turn granted after this thread stopped waiting (a loop too busy to run
                # the acquire in time) must be handed on, or every writer would wait for it.
                turn.cancel()
                turn.add_done_callback(lambda f: _hand_on_late_turn(f, loop))
        try:
            yield
        finally:
            if lock is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(lock.release)

    def _transaction(
        self,
        conn: sqlite3.Connection,
        tx: _SQLiteTx,
        jobs: list[_Job],
        outcomes: list[tuple[bool, Any]],
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job in jobs:
                if job.future.cancelled():
                    outcomes.append((False, asyncio.CancelledError()))
                    continue
                conn.execute("SAVEPOINT unit")
                try:
                    try:
                        value = _drive(job.unit(tx))
                    finally:
                        tx.end_unit()
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (disk full, I/O error):
                        # the units before this one are undone too.
                        raise
                    conn.execute("ROLLBACK TO unit")
                    conn.execute("RELEASE unit")
                    outcomes.append((False, _wrap(exc)))
                    continue
                conn.execute("RELEASE unit")
                outcomes.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise


def _hand_on_late_turn(turn: Any, loop: asyncio.AbstractEventLoop) -> None:
    if turn.cancelled() or turn.exception() is not None:
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(turn.result().release)


def _wrap(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return DatabaseUnavailable(f"sqlite: {exc}")
    return exc


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _ConnectionStatements:
    """The write path's statements (db/writepath.py) inside a transaction the caller began on
    SQLAlchemy's async engine: for a unit whose event subscribers need that transaction's
    AsyncConnection (an upload with BlobCommitted subscribers), so that it runs the very
    statements of the raw path — garbage collection's tombstone and review queue included —
    and not a second copy of them. Use :func:`connection_tx`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def inline(self) -> AsyncConnection:
        return self.conn

    def _sql(self, sql: str) -> str:
        return sql  # asyncpg's own $n

    async def one(self, sql: str, *params: Any) -> Any:
        return (await self.conn.exec_driver_sql(self._sql(sql), params)).first()

    async def all(self, sql: str, *params: Any) -> list[Any]:
        return list((await self.conn.exec_driver_sql(self._sql(sql), params)).all())

    async def run(self, sql: str, *params: Any) -> int:
        result = await self.conn.exec_driver_sql(self._sql(sql), params)
        if " RETURNING " in sql:
            return len(result.all())
        return int(result.rowcount or 0)


class _SQLiteConnectionTx(_ConnectionStatements, _SQLiteValues):
    def _sql(self, sql: str) -> str:
        return _qmark(sql)


class _PgConnectionTx(_ConnectionStatements, _PgValues):
    pass


def connection_tx(conn: AsyncConnection) -> Tx:
    """The write path's Tx over *conn*, a transaction begun on SQLAlchemy's async engine."""
    if conn.dialect.name == "sqlite":
        return _SQLiteConnectionTx(conn)
    return _PgConnectionTx(conn)


class _PgTx(_PgValues):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def inline(self) -> AsyncConnection:
        raise NotInline("PostgreSQL units run on asyncpg, not SQLAlchemy")

    async def one(self, sql: str, *params: Any) -> Any:
        return await self.conn.fetchrow(sql, *params)

    async def all(self, sql: str, *params: Any) -> list[Any]:
        return list(await self.conn.fetch(sql, *params))

    async def run(self, sql: str, *params: Any) -> int:
        if " RETURNING " in sql:
            return len(await self.conn.fetch(sql, *params))
        status = await self.conn.execute(sql, *params)
        try:
            return int(str(status).rsplit(" ", 1)[-1])
        except ValueError:
            return 0


def _pg_faults() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (
        OSError,
        asyncio.TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.InsufficientResourcesError,
    )


class PostgresWritePath:
    """Group commit on the hot reads' asyncpg pool: ``lanes`` tasks each take every operation
    queued at that moment and run them in one transaction, a savepoint each (one WAL flush for
    the batch instead of one per operation). A batch that fails as a whole (a deadlock with
    another lane's batch, a lost connection) is retried one operation per transaction, so no
    operation fails for its neighbours' sake."""

    inline_units = False

    def __init__(self, hot: PostgresHotReads, lanes: int = 3) -> None:
        self.hot = hot
        self.lanes = lanes
        self.batches = 0
        self.units = 0
        self._queue: asyncio.Queue[tuple[Unit[Any], asyncio.Future[Any]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, unit: Unit[T]) -> T:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._tasks = [asyncio.create_task(self._lane(self._queue)) for _ in range(self.lanes)]
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((unit, future))
        return await future

    async def _lane(self, q: asyncio.Queue[tuple[Unit[Any], asyncio.Future[Any]]]) -> None:
        faults = _pg_faults()
        while True:
            jobs = [await q.get()]
            while len(jobs) < MAX_BATCH and not q.empty():
                jobs.append(q.get_nowait())
            jobs = [(u, f) for u, f in jobs if not f.cancelled()]
            if not jobs:
                continue
            try:
                outcomes = await self._batch(jobs)
            except asyncio.CancelledError:
                for _, future in jobs:
                    _settle(future, False, DatabaseUnavailable("shutting down"))
                raise
            except faults as exc:
                if len(jobs) == 1:
                    outcomes = [(False, _pg_unavailable(exc))]
                else:
                    outcomes = []
                    for job in jobs:  # alone, so that one conflict fails no other
                        try:
                            outcomes += await self._batch([job])
                        except faults as one:
                            outcomes.append((False, _pg_unavailable(one)))
            except Exception as exc:  # noqa: BLE001 - e.g. no pool: every caller is told
                outcomes = [(False, exc)] * len(jobs)
            for (_, future), (ok, value) in zip(jobs, outcomes, strict=True):
                _settle(future, ok, value)

    async def _batch(
        self, jobs: list[tuple[Unit[Any], asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        faults = _pg_faults()
        outcomes: list[tuple[bool, Any]] = []
        pool = await self.hot._get_pool()
        if len(jobs) == 1:  # alone: no savepoint (two round trips fewer)
            unit = jobs[0][0]
            try:
                async with pool.acquire() as conn, conn.transaction():
                    value = await unit(_PgTx(conn))
            except faults:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to its caller
                return [(False, exc)]
            self.batches += 1
            self.units += 1
            return [(True, value)]
        async with pool.acquire() as conn, conn.transaction():
            tx = _PgTx(conn)
            for unit, _ in jobs:
                try:
                    async with conn.transaction():  # a savepoint
                        value = await unit(tx)
                except faults:
                    raise  # the batch's transaction is gone
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    outcomes.append((False, exc))
                    continue
                outcomes.append((True, value))
        self.batches += 1
        self.units += len(jobs)
        return outcomes

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        self._queue = None  # the pool belongs to the hot reads


def _pg_unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"postgresql: {type(exc).__name__}: {exc}")


def write_path_for(url: str, hot: HotReads) -> WritePath:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            raise ValueError("the SQLite database must be a file")
        return SQLiteWritePath(u.database)
    assert isinstance(hot, PostgresHotReads)
    return PostgresWritePath(hot)
