"""The registry's hottest reads (manifest by tag or digest, blob in repository) on the raw driver.

Manifest GET/HEAD and blob HEAD are most of a registry's traffic. Through SQLAlchemy's async layer
each costs a connection checkout, a thread hop (aiosqlite) and result processing; measured here
that caps a worker near 300 requests/s. These three indexed lookups run instead on:

* SQLite: one read-only sqlite3 connection per process, called directly on the event loop. In WAL
  mode readers never wait for writers, and an indexed lookup takes tens of microseconds — less
  than a thread hand-off would.
* PostgreSQL: an asyncpg pool with prepared statements.

The SQL here mirrors db.queries (same tables, same joins); tests run both paths.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any, Protocol

from sqlalchemy.engine import make_url

from .queries import BlobRow, ManifestRow

MANIFEST_BY_TAG = (
    "SELECT m.id, m.digest, m.media_type, m.payload FROM repositories r"
    " JOIN tags t ON t.repository_id = r.id JOIN manifests m ON m.id = t.manifest_id"
    " WHERE r.name = $1 AND t.name = $2"
)
MANIFEST_BY_DIGEST = (
    "SELECT m.id, m.digest, m.media_type, m.payload FROM repositories r"
    " JOIN manifests m ON m.repository_id = r.id WHERE r.name = $1 AND m.digest = $2"
)
BLOB_EXISTS = "SELECT 1 FROM blobs WHERE digest = $1"
BLOB_IN_REPOSITORY = (
    "SELECT b.id, b.digest, b.size FROM repositories r"
    " JOIN repository_blobs rb ON rb.repository_id = r.id JOIN blobs b ON b.id = rb.blob_id"
    " WHERE r.name = $1 AND b.digest = $2"
)


class HotReadUnavailable(Exception):
    """The database could not answer (unreachable, restarting, shutting down): the request gets
    a retryable 503 like any other database fault, never a 500."""


def _qmark(sql: str) -> str:
    return sql.replace("$1", "?").replace("$2", "?")


class HotReads(Protocol):
    async def manifest_by_tag(self, repo: str, tag: str) -> ManifestRow | None: ...
    async def manifest_by_digest(self, repo: str, digest: str) -> ManifestRow | None: ...
    async def blob_in_repository(self, repo: str, digest: str) -> BlobRow | None: ...
    async def blob_exists(self, digest: str) -> bool: ...
    async def close(self) -> None: ...


class SQLiteHotReads:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
            conn.execute("PRAGMA busy_timeout=2000")
            conn.execute("PRAGMA query_only=ON")
            self._conn = conn
        return self._conn

    def _one(self, sql: str, *params: str) -> Any:
        try:
            return self._connection().execute(sql, params).fetchone()
        except sqlite3.Error:
            # A broken connection (file replaced, I/O error): reopen once.
            self._drop()
        try:
            return self._connection().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            self._drop()
            raise HotReadUnavailable(f"sqlite: {exc}") from exc

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    async def manifest_by_tag(self, repo: str, tag: str) -> ManifestRow | None:
        r = self._one(_SQLITE_BY_TAG, repo, tag)
        return ManifestRow(r[0], r[1], r[2], bytes(r[3])) if r else None

    async def manifest_by_digest(self, repo: str, digest: str) -> ManifestRow | None:
        r = self._one(_SQLITE_BY_DIGEST, repo, digest)
        return ManifestRow(r[0], r[1], r[2], bytes(r[3])) if r else None

    async def blob_in_repository(self, repo: str, digest: str) -> BlobRow | None:
        r = self._one(_SQLITE_BLOB, repo, digest)
        return BlobRow(r[0], r[1], r[2]) if r else None

    async def blob_exists(self, digest: str) -> bool:
        return self._one(_SQLITE_BLOB_EXISTS, digest) is not None

    async def close(self) -> None:
        self._drop()


_SQLITE_BY_TAG = _qmark(MANIFEST_BY_TAG)
_SQLITE_BY_DIGEST = _qmark(MANIFEST_BY_DIGEST)
_SQLITE_BLOB = _qmark(BLOB_IN_REPOSITORY)
_SQLITE_BLOB_EXISTS = _qmark(BLOB_EXISTS)


class PostgresHotReads:
    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.size, command_timeout=30
                    )
        return self._pool

    async def _one(self, sql: str, *params: str) -> Any:
        import asyncpg

        # Connection-level faults: the server restarted (every pooled connection is dead; the
        # pool replaces one when it fails), is shutting down or starting up, or is unreachable.
        # A read is safe to try once more on a fresh connection; then the client gets a 503.
        faults = (
            OSError,
            asyncio.TimeoutError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # e.g. the server closed the connection mid-query
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,
        )
        try:
            pool = await self._get_pool()
            try:
                return await pool.fetchrow(sql, *params)
            except faults:
                return await pool.fetchrow(sql, *params)
        except faults as exc:
            raise HotReadUnavailable(f"postgresql: {type(exc).__name__}: {exc}") from exc

    async def manifest_by_tag(self, repo: str, tag: str) -> ManifestRow | None:
        r = await self._one(MANIFEST_BY_TAG, repo, tag)
        return ManifestRow(r[0], r[1], r[2], bytes(r[3])) if r else None

    async def manifest_by_digest(self, repo: str, digest: str) -> ManifestRow | None:
        r = await self._one(MANIFEST_BY_DIGEST, repo, digest)
        return ManifestRow(r[0], r[1], r[2], bytes(r[3])) if r else None

    async def blob_in_repository(self, repo: str, digest: str) -> BlobRow | None:
        r = await self._one(BLOB_IN_REPOSITORY, repo, digest)
        return BlobRow(r[0], r[1], r[2]) if r else None

    async def blob_exists(self, digest: str) -> bool:
        return await self._one(BLOB_EXISTS, digest) is not None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def hot_reads_for(url: str, pool_size: int) -> HotReads:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            raise ValueError("the SQLite database must be a file")
        return SQLiteHotReads(u.database)
    dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresHotReads(dsn, pool_size)
