"""Every SQL statement of the audit log: append (one global chain), query, verify, prune.

One global order, even with several processes or nodes appending: every append transaction first
serializes on the chain -- PostgreSQL: ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)``, held until
commit; SQLite: the write transaction itself (BEGIN IMMEDIATE through ``writer(engine)``) -- and
only then reads the head (last id and hash) from ``audit_anchor``, assigns ids ``head_id + 1 ...``,
inserts the batch and moves the head, all in that one transaction.

Reads that must see one state of the log (verify, export) run in one transaction: a snapshot on
SQLite (WAL) and REPEATABLE READ on PostgreSQL, so appends and prunes running meanwhile neither
block them nor make them see a torn chain.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db.audit_schema import audit_anchor, audit_events
from ..db.catalog_queries import bump_counters
from ..db.engine import reader, serialize, writer
from .events import (
    GENESIS_HASH,
    Action,
    AuditEvent,
    AuditRecord,
    ChainVerifier,
    VerifyResult,
    as_utc,
    seal,
    utcnow,
)

# pg_advisory_xact_lock key serializing audit appends and prunes ("mrgaudit").
AUDIT_LOCK_KEY = 0x6D72676175646974
ANCHOR_ID = 1
MAX_PAGE = 1000
_READ_PAGE = 1000
# Prune in slices so that appends (which share the chain lock) never wait long.
_PRUNE_SLICE = 5000

Order = Literal["asc", "desc"]

log = logging.getLogger("moorage.audit")


@dataclass(frozen=True, slots=True)
class Anchor:
    head_id: int
    head_hash: str
    pruned_through_id: int
    pruned_hash: str
    pruned_count: int


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Query filters. ``action`` is exact, or a prefix when it ends with ``.`` or ``.*``
    (``manifest.`` / ``team.*``); ``since`` is inclusive, ``until`` exclusive."""

    actor: str | None = None
    action: str | None = None
    repository: str | None = None
    result: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        c = audit_events.c
        out: list[sa.ColumnElement[bool]] = []
        if self.actor is not None:
            out.append(c.actor == self.actor)
        if self.action:
            prefix = action_prefix(self.action)
            if prefix is None:
                out.append(c.action == self.action)
            else:
                escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                out.append(c.action.like(escaped + "%", escape="\\"))
        if self.repository is not None:
            out.append(c.repository == self.repository)
        if self.result is not None:
            out.append(c.result == self.result)
        if self.since is not None:
            out.append(c.occurred_at >= as_utc(self.since))
        if self.until is not None:
            out.append(c.occurred_at < as_utc(self.until))
        return out


def action_prefix(action: str) -> str | None:
    if action.endswith(".*"):
        return action[:-1]
    if action.endswith(".") or action == "*":
        return action.rstrip("*")
    return None


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditRecord]
    # Pass as ``cursor`` for the next page; None on the last page.
    next_cursor: int | None


def _row_to_record(row: sa.Row[Any]) -> AuditRecord:
    return AuditRecord(
        id=int(row.id),
        time=as_utc(row.occurred_at),
        actor=row.actor,
        actor_type=row.actor_type,
        client_addr=row.client_addr,
        user_agent=row.user_agent,
        action=row.action,
        repository=row.repository,
        tag=row.tag,
        digest=row.digest,
        result=row.result,
        request_id=row.request_id,
        details_json=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _record_to_row(rec: AuditRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "occurred_at": rec.time,
        "actor": rec.actor,
        "actor_type": rec.actor_type,
        "client_addr": rec.client_addr,
        "user_agent": rec.user_agent,
        "action": rec.action,
        "repository": rec.repository,
        "tag": rec.tag,
        "digest": rec.digest,
        "result": rec.result,
        "request_id": rec.request_id,
        "details": rec.details_json,
        "prev_hash": rec.prev_hash,
        "hash": rec.hash,
    }


_COLUMNS = (
    "id",
    "occurred_at",
    "actor",
    "actor_type",
    "client_addr",
    "user_agent",
    "action",
    "repository",
    "tag",
    "digest",
    "result",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)


def _insert_sql(paramstyle: str) -> str:
    if paramstyle == "qmark":
        marks = ["?"] * len(_COLUMNS)
    elif paramstyle in ("numeric_dollar", "numeric"):
        sign = "$" if paramstyle == "numeric_dollar" else ":"
        marks = [f"{sign}{i + 1}" for i in range(len(_COLUMNS))]
    elif paramstyle == "format":
        marks = ["%s"] * len(_COLUMNS)
    else:
        raise ValueError(f"unsupported paramstyle {paramstyle}")
    return f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES ({', '.join(marks)})"


async def _insert(conn: AsyncConnection, records: Sequence[AuditRecord]) -> None:
    """One executemany on the driver for the whole batch: SQLAlchemy's per-row parameter
    compilation cost more than the insert itself (issue 9: the writer must keep up with
    ≥20,000 records/s). The time goes through the column type's own bind processor, so a
    row is stored exactly as ``sa.insert`` would store it (SQLite: its text form)."""
    dialect = conn.dialect
    if dialect.paramstyle not in ("qmark", "numeric_dollar", "numeric", "format"):
        await conn.execute(sa.insert(audit_events), [_record_to_row(r) for r in records])
        return
    to_db = audit_events.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect)
    rows = [
        (
            r.id,
            to_db(r.time) if to_db is not None else r.time,
            r.actor,
            r.actor_type,
            r.client_addr,
            r.user_agent,
            r.action,
            r.repository,
            r.tag,
            r.digest,
            r.result,
            r.request_id,
            r.details_json,
            r.prev_hash,
            r.hash,
        )
        for r in records
    ]
    await conn.exec_driver_sql(_insert_sql(dialect.paramstyle), rows)


# --- the chain lock and the anchor ---------------------------------------------------------


async def _lock_chain(conn: AsyncConnection) -> None:
    """Serialize with every other appender/pruner (SQLite: BEGIN IMMEDIATE already did)."""
    await serialize(conn, AUDIT_LOCK_KEY)


async def read_anchor(conn: AsyncConnection) -> Anchor | None:
    a = audit_anchor.c
    row = (
        await conn.execute(
            sa.select(
                a.head_id, a.head_hash, a.pruned_through_id, a.pruned_hash, a.pruned_count
            ).where(a.id == ANCHOR_ID)
        )
    ).first()
    if row is None:
        return None
    return Anchor(
        int(row.head_id),
        row.head_hash,
        int(row.pruned_through_id),
        row.pruned_hash,
        int(row.pruned_count),
    )


async def _locked_anchor(conn: AsyncConnection) -> Anchor:
    """The anchor, created on first use (the migration creates it; this is a safety net)."""
    anchor = await read_anchor(conn)
    if anchor is not None:
        return anchor
    await conn.execute(
        sa.insert(audit_anchor).values(
            id=ANCHOR_ID,
            head_id=0,
            head_hash=GENESIS_HASH,
            pruned_through_id=0,
            pruned_hash=GENESIS_HASH,
            pruned_count=0,
            updated_at=utcnow(),
        )
    )
    return Anchor(0, GENESIS_HASH, 0, GENESIS_HASH, 0)


# --- append --------------------------------------------------------------------------------


async def append_in(conn: AsyncConnection, events: Sequence[AuditEvent]) -> list[AuditRecord]:
    """Chain and insert *events* inside the caller's transaction, e.g. to commit an audit
    record atomically with the change it describes. On SQLite the transaction must come from
    ``writer(engine)`` (BEGIN IMMEDIATE). The chain lock is then held until that transaction
    ends: keep it short."""
    if not events:
        return []
    await _lock_chain(conn)
    anchor = await _locked_anchor(conn)
    records: list[AuditRecord] = []
    prev, next_id = anchor.head_hash, anchor.head_id
    for event in events:
        next_id += 1
        rec = seal(event, next_id, prev)
        records.append(rec)
        prev = rec.hash
    await _insert(conn, records)
    await conn.execute(
        sa.update(audit_anchor)
        .where(audit_anchor.c.id == ANCHOR_ID)
        .values(head_id=next_id, head_hash=prev, updated_at=utcnow())
    )
    return records


Sink = Callable[[AsyncConnection, Sequence[AuditEvent]], Awaitable[None]]


async def append(
    engine: AsyncEngine, events: Sequence[AuditEvent], sinks: Sequence[Sink] = ()
) -> list[AuditRecord]:
    """Append *events* in one transaction; returns the records as stored. The same transaction
    adds the batch's successful manifest pulls and pushes to the repositories' activity
    counters, so that counting costs no write on the request path, and hands the batch to each
    *sink* (work that follows from what was recorded — pull webhooks — written with it). A sink
    runs in a savepoint: one that fails is rolled back and logged, never the audit batch."""
    if not events:
        return []
    async with writer(engine).begin() as conn:
        records = await append_in(conn, events)
        pulls, pushes = activity(events)
        if pulls or pushes:
            await bump_counters(conn, pulls, pushes)
        for sink in sinks:
            try:
                async with conn.begin_nested():
                    await sink(conn, events)
            except Exception as exc:  # noqa: BLE001 - the audit record must not depend on it
                log.warning("audit sink %s failed: %s", getattr(sink, "__name__", sink), exc)
        return records


Counts = dict[str, tuple[int, datetime]]


def activity(events: Sequence[AuditEvent]) -> tuple[Counts, Counts]:
    """Successful manifest pulls and pushes per repository: (count, latest time). An aggregated
    pull record carries its count (audit.pull_events=aggregate); with sampling, only the
    recorded share is counted."""
    pulls: Counts = {}
    pushes: Counts = {}
    for e in events:
        if e.result != "success" or not e.repository:
            continue
        if e.action == Action.MANIFEST_PULL:
            target, n = pulls, e.details.get("count", 1)
        elif e.action == Action.MANIFEST_PUSH:
            target, n = pushes, 1
        else:
            continue
        n = n if isinstance(n, int) and n > 0 else 1
        count, at = target.get(e.repository, (0, e.time))
        target[e.repository] = (count + n, max(at, e.time))
    return pulls, pushes


# --- reads ---------------------------------------------------------------------------------


async def _snapshot(conn: AsyncConnection) -> AsyncConnection:
    if conn.dialect.name == "postgresql":
        return await conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


async def query(
    engine: AsyncEngine,
    filters: AuditFilter | None = None,
    *,
    cursor: int | None = None,
    limit: int = 100,
    order: Order = "desc",
) -> AuditPage:
    """One page of records matching *filters*: newest first by default (``order="asc"``:
    oldest first). ``cursor`` is the ``next_cursor`` of the previous page (the last id seen)."""
    limit = max(1, min(int(limit), MAX_PAGE))
    async with reader(engine).connect() as conn:
        rows = await _page(conn, filters or AuditFilter(), cursor, limit + 1, order)
    more = len(rows) > limit
    events = rows[:limit]
    return AuditPage(events, events[-1].id if more and events else None)


async def query_events(
    engine: AsyncEngine,
    *,
    actor: str | None = None,
    action: str | None = None,
    repository: str | None = None,
    result: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: int | None = None,
    limit: int = 100,
    order: Order = "desc",
) -> AuditPage:
    """``query`` with the filters as keywords (what the REST layer maps its parameters to)."""
    filters = AuditFilter(actor, action, repository, result, since, until)
    return await query(engine, filters, cursor=cursor, limit=limit, order=order)


async def _page(
    conn: AsyncConnection,
    filters: AuditFilter,
    cursor: int | None,
    limit: int,
    order: Order,
    upto: int | None = None,
) -> list[AuditRecord]:
    c = audit_events.c
    q = sa.select(audit_events).where(*filters.clauses())
    if cursor is not None:
        q = q.where(c.id > cursor if order == "asc" else c.id < cursor)
    if upto is not None:
        q = q.where(c.id <= upto)
    q = q.order_by(c.id.asc() if order == "asc" else c.id.desc()).limit(limit)
    return [_row_to_record(r) for r in await conn.execute(q)]


async def iter_records(
    engine: AsyncEngine,
    filters: AuditFilter | None = None,
    *,
    order: Order = "asc",
    page_size: int = _READ_PAGE,
) -> AsyncGenerator[AuditRecord, None]:
    """Every matching record, page by page inside one snapshot (constant memory)."""
    filters = filters or AuditFilter()
    async with reader(engine).connect() as conn:
        conn = await _snapshot(conn)
        async with conn.begin():
            cursor: int | None = None
            while True:
                page = await _page(conn, filters, cursor, page_size, order)
                for rec in page:
                    yield rec
                if len(page) < page_size:
                    return
                cursor = page[-1].id


async def count(engine: AsyncEngine) -> int:
    async with reader(engine).connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(audit_events))).scalar_one()
        )


# --- verify --------------------------------------------------------------------------------


async def verify(engine: AsyncEngine) -> VerifyResult:
    """Walk the whole chain in id order, in one snapshot; report the first bad record."""
    async with reader(engine).connect() as conn:
        conn = await _snapshot(conn)
        async with conn.begin():
            anchor = await read_anchor(conn)
            if anchor is None:
                return VerifyResult(False, 0, None, "the audit anchor row is missing")
            checker = ChainVerifier(anchor.pruned_through_id, anchor.pruned_hash)
            cursor: int | None = None
            while True:
                page = await _page(conn, AuditFilter(), cursor, _READ_PAGE, "asc")
                for rec in page:
                    if not checker.feed(rec):
                        return checker.finish()
                if len(page) < _READ_PAGE:
                    break
                cursor = page[-1].id
            return checker.finish(anchor.head_id, anchor.head_hash)


# --- retention -----------------------------------------------------------------------------


async def prune(
    engine: AsyncEngine,
    *,
    max_age_days: float = 0,
    max_events: int = 0,
    now: datetime | None = None,
) -> int:
    """Delete the oldest records beyond the retention limits; returns how many were deleted.

    Only a prefix of the chain is ever deleted (every record up to an id), so what remains is
    one unbroken chain; the anchor keeps the last pruned id and hash, which verify accepts as the
    first remaining record's ``prev_hash``. Age pruning stops at the first record that is young
    enough (clocks of different nodes may disagree slightly: nothing younger is deleted). Each
    pruning appends an ``audit.prune`` record to the chain.
    """
    if max_age_days <= 0 and max_events <= 0:
        return 0
    now = as_utc(now or utcnow())
    c = audit_events.c
    total = 0
    done = False
    while not done:
        async with writer(engine).begin() as conn:
            await _lock_chain(conn)
            anchor = await _locked_anchor(conn)
            goal = anchor.pruned_through_id
            if max_events > 0:
                goal = max(goal, anchor.head_id - max_events)
            if max_age_days > 0:
                limit = now - timedelta(days=max_age_days)
                young = (
                    await conn.execute(sa.select(sa.func.min(c.id)).where(c.occurred_at >= limit))
                ).scalar()
                goal = max(goal, anchor.head_id if young is None else int(young) - 1)
            goal = min(goal, anchor.head_id)
            if goal <= anchor.pruned_through_id:
                break
            target = min(goal, anchor.pruned_through_id + _PRUNE_SLICE)
            last_hash = (await conn.execute(sa.select(c.hash).where(c.id == target))).scalar()
            if last_hash is None:  # a hole: verify will report it; do not paper over it
                raise RuntimeError(f"audit record {target} is missing; run `moorage audit verify`")
            deleted = (await conn.execute(sa.delete(audit_events).where(c.id <= target))).rowcount
            await conn.execute(
                sa.update(audit_anchor)
                .where(audit_anchor.c.id == ANCHOR_ID)
                .values(
                    pruned_through_id=target,
                    pruned_hash=last_hash,
                    pruned_count=audit_anchor.c.pruned_count + deleted,
                    updated_at=utcnow(),
                )
            )
            total += int(deleted or 0)
            done = target == goal
            if done:  # the record of this pruning commits with its last slice
                prune_event = AuditEvent(
                    Action.AUDIT_PRUNE,
                    actor="moorage",
                    actor_type="system",
                    request_id=None,
                    details={
                        "deleted": total,
                        "through_id": target,
                        "max_age_days": max_age_days,
                        "max_events": max_events,
                    },
                )
                await append_in(conn, [prune_event])
    return total
