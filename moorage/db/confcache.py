"""Configuration read on every push, cached per process, exact across nodes.

A manifest PUT asks four capabilities' configuration (webhook subscriptions, replication
policies, scan-on-push settings, immutability rules): four SQLAlchemy statements per PUT, about
a fifth of the SQLite writer thread's time under load, for tables that change a few times a day.

Each such table has a row in ``config_generations`` whose ``generation`` a database trigger
bumps in the transaction of any INSERT, UPDATE or DELETE of the table (migration
confgen_0001). Triggers, not the code that changes the table, so that every writer bumps it:
this release's API and commands, the previous release's nodes during a rolling upgrade,
`moorage admin` in another process, an operator's SQL.

:class:`ConfigCache` keeps what a loader returned, labelled with the table's generation read
*before* the load. A lookup reads the generations (one statement, all tables at once, once per
transaction: memoized on the transaction object) and uses an entry only when its label is the
current generation. Hence no staleness at all: a change committed on any node is seen by the
next transaction that starts after it, exactly as when the tables were read directly. On
SQLite the PUT's transaction holds the write lock, so generation and contents are one state; on
PostgreSQL (READ COMMITTED) the generation is read before the contents, so an entry's contents
are at least as new as its label, and a change committed between the two reads shows as a newer
generation on the next lookup, which reloads.

Limits: a transaction that changes one of these tables and then reads it through the cache
sees the generation it memoized before the change (no code does that: the tables are changed by
management transactions, read by push transactions). A table missing its row (or a database
without the table) is never cached. On SQLite, a later migration that rebuilds one of these
tables (``batch_alter_table`` with a recreate) drops its triggers and must create them again
(as confgen_0001 does); tests/db checks that they exist.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)

# The tables whose changes bump a generation (and the migration that installed the triggers).
WATCHED = ("webhooks", "replication_policies", "scan_settings", "immutable_tag_rules")

_GENERATIONS = "SELECT name, generation FROM config_generations"
_memo: weakref.WeakKeyDictionary[Any, Mapping[str, int]] = weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()


async def generations(conn: AsyncConnection) -> Mapping[str, int]:
    """Each watched table's generation as this transaction sees it (read once per
    transaction)."""
    sync = conn.sync_connection
    tx = sync.get_transaction() if sync is not None else None
    if tx is not None:
        seen = _memo.get(tx)
        if seen is not None:
            return seen
    rows: list[Any] = list((await conn.exec_driver_sql(_GENERATIONS)).all())
    current = {str(row[0]): int(row[1]) for row in rows}
    if tx is not None:
        with _memo_lock:
            _memo[tx] = current
    return current


class ConfigCache(Generic[K, V]):
    """``loader(conn, key)`` results for *table*, valid while its generation stays the same.

    Shared by the process's threads (the event loop's and the SQLite writer's): an entry is one
    tuple, replaced whole. At most *max_entries* keys; past that the cache starts over."""

    def __init__(
        self,
        table: str,
        loader: Callable[[AsyncConnection, K], Awaitable[V]],
        max_entries: int = 4096,
    ) -> None:
        if table not in WATCHED:
            raise ValueError(f"{table} has no generation trigger (confcache.WATCHED)")
        self.table = table
        self.loader = loader
        self.max_entries = max_entries
        self._entries: dict[K, tuple[int, V]] = {}
        self.hits = 0
        self.loads = 0

    async def get(self, conn: AsyncConnection, key: K) -> V:
        generation = (await generations(conn)).get(self.table)
        entry = self._entries.get(key)
        if entry is not None and generation is not None and entry[0] == generation:
            self.hits += 1
            return entry[1]
        value = await self.loader(conn, key)
        self.loads += 1
        if generation is not None:
            if len(self._entries) >= self.max_entries:
                self._entries = {}
            self._entries[key] = (generation, value)
        return value

    def clear(self) -> None:
        self._entries = {}
