"""SQLAlchemy units on the SQLite writer thread (moorage/db/writers.py).

A manifest PUT is one transaction that also runs the content rules (immutability, quotas,
caches) and the push's subscribers (scan queue, webhooks outbox, replication triggers, GC
queues, trust discovery): about twenty statements, written against SQLAlchemy's
``AsyncConnection``. On the async engine each statement is a round trip to aiosqlite's thread
and back through the event loop, with SQLite's one write lock held across all of them; under 200
concurrent pushes the lock holder's every hop waits behind the loop's other work and tag PUTs
fell to ~50/s (from ~700/s when a manifest PUT was a plain SQL unit on the writer thread).

Here the same code runs as a unit of the writer thread's group commit (one ``BEGIN IMMEDIATE …
COMMIT`` for all queued units, a SAVEPOINT each), on a synchronous SQLAlchemy ``Connection`` over
the writer's own sqlite3 connection, behind an ``AsyncConnection`` face whose awaitables complete
without suspending (:class:`InlineConnection`). The SQL is the same SQLAlchemy compiles for the
async engine (same dialect, same type processing). The writer thread owns the transaction: the
sqlite3 connection is lent to SQLAlchemy through :class:`_Lent`, whose ``commit``/``rollback``/
``close`` do nothing.

What such a unit cannot do — await something that really suspends (another connection, a
lock, the network), or use a part of ``AsyncConnection`` not offered here — ends it with
:class:`NotInline`: its savepoint is rolled back and the caller runs it again on the async
engine. Code that can tell (a cache refresh) asks :func:`running_inline` and skips the
refresh instead.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

T = TypeVar("T")

_state = threading.local()


class NotInline(RuntimeError):  # noqa: N818 - a signal to the caller, not a failure
    """This unit cannot run on the writer thread; run it on the async engine instead."""


def running_inline() -> bool:
    """Whether the calling code runs as an inline unit (on the SQLite writer thread)."""
    return bool(getattr(_state, "active", False))


@contextlib.contextmanager
def inline_scope() -> Any:
    _state.active = True
    try:
        yield
    finally:
        _state.active = False


class _Lent:
    """The writer's sqlite3 connection as SQLAlchemy sees it: everything passes through except
    ending the transaction or the connection, which stay the writer thread's."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def sync_engine_for(conn: sqlite3.Connection) -> sa.Engine:
    """A synchronous engine whose one connection is *conn* (lent, see :class:`_Lent`)."""
    return sa.create_engine(
        "sqlite://", creator=lambda: cast(sqlite3.Connection, _Lent(conn)), poolclass=StaticPool
    )


class InlineConnection:
    """The parts of ``AsyncConnection`` that rules and subscribers use, on a synchronous
    ``Connection``; every coroutine here returns without suspending."""

    def __init__(self, sync: sa.Connection) -> None:
        self.sync_connection = sync

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync_connection.dialect

    @property
    def info(self) -> dict[Any, Any]:
        return self.sync_connection.info

    def in_transaction(self) -> bool:
        return True

    def get_execution_options(self) -> Any:
        return self.sync_connection.get_execution_options()

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.execute(statement, parameters, **kw)

    async def scalar(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kw)

    async def scalars(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.scalars(statement, parameters, **kw)

    async def exec_driver_sql(self, statement: str, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.exec_driver_sql(statement, parameters, **kw)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return fn(self.sync_connection, *args, **kw)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[Any]:
        with self.sync_connection.begin_nested() as nested:
            yield nested

    def __getattr__(self, name: str) -> Any:
        raise NotInline(f"AsyncConnection.{name} is not offered to inline units")

    def as_async(self) -> AsyncConnection:
        """Typed as what the callee expects (it only uses what is offered above)."""
        return cast(AsyncConnection, self)
