"""The push path's writes on the raw driver, batched: upload sessions, blob commits and tag pushes.

Why (measured, docs/benchmarks.md "Push path"): through SQLAlchemy's async layer and aiosqlite
every statement, BEGIN and COMMIT is a hop to aiosqlite's thread and back through the event loop.
A blob push (POST, PATCH, PUT) cost about a dozen such hops; worse, under concurrency SQLite's
one write lock (taken at BEGIN IMMEDIATE) stayed held across those hops, so 200 concurrent
uploads queued behind a lock held mostly by waiting. Here:

* **SQLite**: one writer thread per process owns a read-write ``sqlite3`` connection. A caller
  hands it a *unit* (one operation below) and awaits a future. The thread takes every unit
  queued at that moment, runs them in one ``BEGIN IMMEDIATE … COMMIT`` — each inside a
  ``SAVEPOINT``, so a unit that fails rolls back alone — and answers every caller only after the
  COMMIT: a group commit. The write lock is held only while statements execute, never across an
  event-loop hop, and many units share one commit.
* **PostgreSQL**: one transaction per unit on an asyncpg pool (the hot reads' pool), with
  prepared statements; PostgreSQL groups WAL flushes of concurrent commits by itself.

The executors live in moorage/db/writers.py; this module holds the operations. Each operation
is written once, as a coroutine over a small :class:`Tx` interface. On SQLite
the coroutine never suspends (its ``Tx`` calls are synchronous underneath), so the writer thread
drives it to completion with ``send(None)``; on PostgreSQL it is awaited on the event loop.

The upload invariants (docs/architecture.md) hold under batching: a unit that records a blob is
submitted only after the blob's bytes are durable at their content-addressed path, and a caller
learns of success only after the COMMIT that made its rows visible. A crash mid-batch rolls the
whole batch back: its blobs' bytes stay as unreferenced garbage, no row points at partial bytes.

The SQL mirrors db/queries.py (same tables, same semantics); the SQLAlchemy path stays for the
changes that capabilities hook into (content rules and event subscribers take an
``AsyncConnection``), and tests run both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from .hotpath import HotReadUnavailable
from .queries import UploadRow

log = logging.getLogger("moorage.db")

T = TypeVar("T")


class DatabaseUnavailable(HotReadUnavailable):
    """A write could not be done (locked too long, disk full, connection lost): a retryable 503."""


class SessionCapReached(Exception):
    """Opening one more upload session would pass a configured cap."""

    def __init__(self, scope: str, who: str, count: int, limit: int) -> None:
        super().__init__(f"{count} open upload sessions for {scope} {who}; the limit is {limit}")
        self.scope = scope
        self.who = who
        self.count = count
        self.limit = limit


class Tx(Protocol):
    """One transaction's statements. SQL uses ``$1``-style parameters."""

    # Row locks (PostgreSQL: SELECT ... FOR KEY SHARE); False where one writer at a time holds
    # the whole database (SQLite's BEGIN IMMEDIATE) and there is nothing to lock.
    row_locks: bool

    async def one(self, sql: str, *params: Any) -> Any: ...
    async def all(self, sql: str, *params: Any) -> list[Any]: ...
    async def run(self, sql: str, *params: Any) -> int: ...
    def ts(self, value: datetime) -> Any: ...
    def read_ts(self, value: Any) -> datetime | None: ...
    def any_of(self, first: int, values: Sequence[str]) -> tuple[str, list[Any]]: ...
    def inline(self) -> AsyncConnection:
        """The same transaction as a SQLAlchemy connection (SQLite's writer thread only:
        moorage/db/inline.py; elsewhere NotInline)."""
        ...


Unit = Callable[[Tx], Coroutine[Any, Any, T]]


def now() -> datetime:
    return datetime.now(UTC)


# --- the operations ---------------------------------------------------------------------------

_UPLOAD_COLS = (
    "u.id, u.repository_id, u.size, u.hash_algorithm, u.hash_state, u.storage_state,"
    " u.lease_token, u.lease_expires_at, u.created_at, u.lease_holder"
)


@dataclass(slots=True)
class LeasedUpload:
    row: UploadRow
    holder: str | None


def _upload(tx: Tx, r: Any) -> LeasedUpload:
    state = r[5]
    return LeasedUpload(
        UploadRow(
            r[0],
            int(r[1]),
            int(r[2]),
            r[3],
            bytes(r[4]) if r[4] is not None else None,
            json.loads(state) if isinstance(state, str) else state,
            r[6],
            tx.read_ts(r[7]),
            tx.read_ts(r[8]) or now(),
        ),
        r[9],
    )


async def ensure_repository(tx: Tx, name: str, namespace: str) -> int:
    row = await tx.one("SELECT id FROM repositories WHERE name = $1", name)
    if row is not None:
        return int(row[0])
    await tx.run(
        "INSERT INTO repositories (name, namespace, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO NOTHING",
        name,
        namespace,
        tx.ts(now()),
    )
    row = await tx.one("SELECT id FROM repositories WHERE name = $1", name)
    return int(row[0])


async def start_upload(
    tx: Tx,
    repo: str,
    namespace: str,
    upload_id: str,
    algorithm: str,
    storage_state: dict[str, Any],
    hash_state: bytes | None,
    owner: str | None,
    per_user: int,
    per_repository: int,
) -> None:
    """Open a session, unless a cap on open sessions (0: none) would be passed."""
    repo_id = await ensure_repository(tx, repo, namespace)
    if per_repository:
        n = (await tx.one("SELECT count(*) FROM uploads WHERE repository_id = $1", repo_id))[0]
        if n >= per_repository:
            raise SessionCapReached("repository", repo, int(n), per_repository)
    if per_user and owner:
        n = (await tx.one("SELECT count(*) FROM uploads WHERE owner = $1", owner))[0]
        if n >= per_user:
            raise SessionCapReached("user", owner, int(n), per_user)
    ts = tx.ts(now())
    await tx.run(
        "INSERT INTO uploads (id, repository_id, size, hash_algorithm, hash_state,"
        " storage_state, created_at, updated_at, owner) VALUES ($1, $2, 0, $3, $4, $5, $6, $6, $7)",
        upload_id,
        repo_id,
        algorithm,
        hash_state,
        json.dumps(storage_state),
        ts,
        owner,
    )


async def upload(tx: Tx, repo: str, upload_id: str) -> LeasedUpload | None:
    r = await tx.one(
        f"SELECT {_UPLOAD_COLS} FROM uploads u JOIN repositories r ON r.id = u.repository_id"
        " WHERE u.id = $1 AND r.name = $2",
        upload_id,
        repo,
    )
    return _upload(tx, r) if r is not None else None


async def upload_row_exists(tx: Tx, upload_id: str) -> bool:
    return await tx.one("SELECT 1 FROM uploads WHERE id = $1", upload_id) is not None


async def claim_upload(
    tx: Tx,
    repo: str,
    upload_id: str,
    token: str,
    holder: str,
    expires_at: datetime,
    dead_token: str | None = None,
) -> LeasedUpload | None:
    """Take the session for one request: when free, when its lease expired, or when it is
    held by *dead_token* (a lease whose holder is known to be dead). None: unknown or busy."""
    cols = _UPLOAD_COLS.replace("u.", "")
    r = await tx.one(
        "UPDATE uploads SET lease_token = $1, lease_expires_at = $2, lease_holder = $3"
        " WHERE id = $4 AND repository_id = (SELECT id FROM repositories WHERE name = $5)"
        " AND (lease_token IS NULL OR lease_expires_at < $6 OR lease_token = $7)"
        f" RETURNING {cols}",
        token,
        tx.ts(expires_at),
        holder,
        upload_id,
        repo,
        tx.ts(now()),
        dead_token or "",
    )
    return _upload(tx, r) if r is not None else None


async def renew_lease(tx: Tx, upload_id: str, token: str, expires_at: datetime) -> bool:
    return (
        await tx.run(
            "UPDATE uploads SET lease_expires_at = $1 WHERE id = $2 AND lease_token = $3",
            tx.ts(expires_at),
            upload_id,
            token,
        )
        > 0
    )


async def save_progress(
    tx: Tx,
    upload_id: str,
    token: str,
    size: int,
    hash_state: bytes | None,
    storage_state: dict[str, Any],
    release: bool,
) -> bool:
    lease = ", lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL" if release else ""
    return (
        await tx.run(
            f"UPDATE uploads SET size = $1, hash_state = $2, storage_state = $3, updated_at = $4"
            f"{lease} WHERE id = $5 AND lease_token = $6",
            size,
            hash_state,
            json.dumps(storage_state),
            tx.ts(now()),
            upload_id,
            token,
        )
        > 0
    )


async def release_lease(tx: Tx, upload_id: str, token: str) -> None:
    await tx.run(
        "UPDATE uploads SET lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL"
        " WHERE id = $1 AND lease_token = $2",
        upload_id,
        token,
    )


async def delete_upload(tx: Tx, upload_id: str) -> None:
    await tx.run("DELETE FROM uploads WHERE id = $1", upload_id)


async def session_counts(tx: Tx) -> dict[str, Any]:
    """Open upload sessions: in all, and the account and repository holding the most."""
    total = (await tx.one("SELECT count(*) FROM uploads"))[0]
    user = await tx.one(
        "SELECT owner, count(*) FROM uploads WHERE owner IS NOT NULL GROUP BY owner"
        " ORDER BY 2 DESC LIMIT 1"
    )
    repo = await tx.one(
        "SELECT r.name, count(*) FROM uploads u JOIN repositories r ON r.id = u.repository_id"
        " GROUP BY r.name ORDER BY 2 DESC LIMIT 1"
    )
    return {
        "open": int(total),
        "busiest_user": {"name": user[0], "open": int(user[1])} if user else None,
        "busiest_repository": {"name": repo[0], "open": int(repo[1])} if repo else None,
    }


async def free_leases(tx: Tx, node: str, incarnation: str) -> int:
    """Release every lease held by an earlier incarnation of *node* (holders are
    ``node#incarnation#pid``): that process is gone, and its requests with it."""
    mine, current = f"{node}#", f"{node}#{incarnation}#"
    return await tx.run(
        "UPDATE uploads SET lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL"
        " WHERE substr(lease_holder, 1, length($1)) = $1"
        " AND substr(lease_holder, 1, length($2)) <> $2",
        mine,
        current,
    )


class BytesMaybeCollected(Exception):
    """Garbage collection deleted this digest's bytes around the time the upload stored them:
    the caller checks the store before recording the blob (see commit_blob)."""


async def commit_blob(
    tx: Tx,
    digest: str,
    size: int,
    repo: str,
    namespace: str,
    repository_id: int | None,
    session_id: str | None,
    review_after: datetime | None = None,
    bytes_checked: bool = False,
) -> None:
    """The visibility point of an upload: the blob row, the link, and the end of the session.
    Called only after the bytes are durable at the blob's path.

    Garbage collection (moorage/lifecycle): the blob is queued for review at *review_after*
    (an upload never referenced is garbage), and a tombstone GC left for the digest is ended
    here. When GC had already deleted the tombstoned bytes, they may have been this upload's:
    raises BytesMaybeCollected (the unit rolls back) unless the caller has since checked that
    the bytes are there (*bytes_checked*). docs/gc.md explains the race."""
    ts = tx.ts(now())
    blob_id = await _blob_row(tx, digest, size, ts)
    tomb = await tx.one(
        "DELETE FROM gc_blob_tombstones WHERE digest = $1 RETURNING bytes_deleted_at", digest
    )
    if tomb is not None and tomb[0] is not None and not bytes_checked:
        raise BytesMaybeCollected(digest)
    if review_after is not None:
        await tx.run(
            "INSERT INTO gc_blob_review (digest, review_after, reason, created_at)"
            " VALUES ($1, $2, 'upload', $3)",
            digest,
            tx.ts(review_after),
            ts,
        )
    if session_id is not None:
        await tx.run("DELETE FROM uploads WHERE id = $1", session_id)
    if repository_id is None:
        repository_id = await ensure_repository(tx, repo, namespace)
    # An upload renews the link's age: GC's grace window counts from the latest upload.
    await tx.run(
        "INSERT INTO repository_blobs (repository_id, blob_id, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (repository_id, blob_id) DO UPDATE SET created_at = excluded.created_at",
        repository_id,
        blob_id,
        ts,
    )


async def _blob_row(tx: Tx, digest: str, size: int, ts: Any) -> int:
    """The id of *digest*'s blob row, inserted if there is none, and held until the commit
    so that garbage collection cannot delete it meanwhile.

    An existing row gets a key-share lock, not the exclusive lock an ``ON CONFLICT DO UPDATE``
    takes: a collector (``FOR UPDATE`` before it re-checks and deletes) still waits for this
    commit and then sees the link, or has committed first and this inserts a new row. A
    manifest push share-locks the blobs it names (lifecycle/subscribers.py ReferenceLocks),
    which a key-share lock does not conflict with, so concurrent pushes of one image no longer
    deadlock between a manifest PUT's share locks and a batch of blob commits' exclusive ones
    (tests/ha's twenty-client push, CI run 14). Each pass sees the rows committed before it: a
    row deleted between the two statements is inserted on the next pass."""
    lock = " FOR KEY SHARE" if tx.row_locks else ""
    for _ in range(8):
        row = await tx.one(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (digest) DO NOTHING RETURNING id",
            digest,
            size,
            ts,
        )
        if row is None:
            row = await tx.one(f"SELECT id FROM blobs WHERE digest = $1{lock}", digest)
        if row is not None:
            return int(row[0])
    raise RuntimeError(f"the blob row of {digest} was deleted eight times while it was committed")


@dataclass(frozen=True, slots=True)
class ManifestInsert:
    digest: str
    media_type: str
    artifact_type: str | None
    subject_digest: str | None
    config_digest: str | None
    annotations: dict[str, str] | None
    payload: bytes
    references: Sequence[tuple[str, str]]
    blobs: Sequence[str]  # must be linked into the repository
    children: Sequence[str]  # manifests that must be in the repository
    tags: Sequence[str]  # tags to point at it (none, one, or several with ?tag=)


async def put_manifest(
    tx: Tx,
    repo: str,
    namespace: str,
    m: ManifestInsert,
    validate: Callable[[dict[str, int], set[str]], None],
) -> list[tuple[str, str]]:
    """Store a manifest and point its tags at it (recording what each tag pointed to before).
    *validate* gets the linked blobs' sizes and the child manifests present, and raises to
    refuse (before anything is written). Returns (tag, previous digest) for each tag that
    moved."""
    repo_id = await ensure_repository(tx, repo, namespace)
    sizes: dict[str, int] = {}
    if m.blobs:
        frag, params = tx.any_of(2, list(dict.fromkeys(m.blobs)))
        for r in await tx.all(
            "SELECT b.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.id = rb.blob_id"
            f" WHERE rb.repository_id = $1 AND b.digest {frag}",
            repo_id,
            *params,
        ):
            sizes[r[0]] = int(r[1])
    present: set[str] = set()
    if m.children:
        frag, params = tx.any_of(2, list(dict.fromkeys(m.children)))
        for r in await tx.all(
            f"SELECT digest FROM manifests WHERE repository_id = $1 AND digest {frag}",
            repo_id,
            *params,
        ):
            present.add(r[0])
    validate(sizes, present)
    ts = tx.ts(now())
    await tx.run(
        "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject_digest,"
        " config_digest, annotations, size, payload, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (repository_id, digest) DO NOTHING",
        repo_id,
        m.digest,
        m.media_type,
        m.artifact_type,
        m.subject_digest,
        m.config_digest,
        json.dumps(m.annotations) if m.annotations is not None else None,
        len(m.payload),
        m.payload,
        ts,
    )
    manifest_id = (
        await tx.one(
            "SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2", repo_id, m.digest
        )
    )[0]
    for ref_digest, kind in dict.fromkeys(m.references):
        await tx.run(
            "INSERT INTO manifest_references (manifest_id, digest, kind) VALUES ($1, $2, $3)"
            " ON CONFLICT (manifest_id, digest, kind) DO NOTHING",
            manifest_id,
            ref_digest,
            kind,
        )
    replaced: list[tuple[str, str]] = []
    for tag in m.tags:
        prev = await tx.one(
            "SELECT t.id, m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id"
            " WHERE t.repository_id = $1 AND t.name = $2",
            repo_id,
            tag,
        )
        if prev is not None and prev[1] == m.digest:
            continue
        await tx.run(
            "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $4) ON CONFLICT (repository_id, name)"
            " DO UPDATE SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at",
            repo_id,
            tag,
            manifest_id,
            ts,
        )
        if prev is None:
            continue
        await tx.run(
            "INSERT INTO tag_history (repository_id, name, manifest_digest, replaced_at)"
            " VALUES ($1, $2, $3, $4)",
            repo_id,
            tag,
            prev[1],
            ts,
        )
        replaced.append((tag, str(prev[1])))
    return replaced
