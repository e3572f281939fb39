"""SQL for the background job table shared by every node.

Claiming is one statement: on PostgreSQL ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
LOCKED) RETURNING``, so nodes polling together never wait on each other and never take the same
row; on SQLite the writer engine's ``BEGIN IMMEDIATE`` serializes writers, which gives the same
guarantee for the processes of one machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .queries import _aware, now
from .schema import jobs

ACTIVE = ("queued", "running")


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    kind: str
    dedupe_key: str | None
    payload: dict[str, Any]
    state: str
    run_after: datetime
    attempts: int
    max_attempts: int
    claimed_by: str | None
    heartbeat_at: datetime | None
    last_error: str | None
    result: Any
    created_at: datetime
    finished_at: datetime | None
    progress: dict[str, Any] | None = None


def _job(r: Any) -> JobRow:
    return JobRow(
        id=int(r.id),
        kind=r.kind,
        dedupe_key=r.dedupe_key,
        payload=dict(r.payload or {}),
        state=r.state,
        run_after=_aware(r.run_after) or now(),
        attempts=int(r.attempts),
        max_attempts=int(r.max_attempts),
        claimed_by=r.claimed_by,
        heartbeat_at=_aware(r.heartbeat_at),
        last_error=r.last_error,
        result=r.result,
        created_at=_aware(r.created_at) or now(),
        finished_at=_aware(r.finished_at),
        progress=dict(r.progress) if r.progress else None,
    )


async def enqueue(
    conn: AsyncConnection,
    kind: str,
    payload: dict[str, Any],
    *,
    run_after: datetime | None = None,
    dedupe_key: str | None = None,
    dedupe_any_state: bool = False,
    max_attempts: int = 5,
) -> int | None:
    """Insert a job; with *dedupe_key*, only when no job of the same kind and key is queued or
    running (or exists at all, with *dedupe_any_state* — how a schedule makes one job per slot).
    Returns the new id, or None when an equal job was already there."""
    if dedupe_key is not None:
        if conn.dialect.name == "postgresql":
            # Two nodes enqueueing the same key at once: the second waits for the first's commit.
            lock = zlib.crc32(f"{kind}\0{dedupe_key}".encode())
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
        same = _SAME_KEY_ANY_STATE if dedupe_any_state else _SAME_KEY_ACTIVE
        if await conn.scalar(same, {"kind": kind, "key": dedupe_key}) is not None:
            return None
    ts = now()
    values = {
        "kind": kind,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "state": "queued",
        "run_after": run_after or ts,
        "attempts": 0,
        "max_attempts": max_attempts,
        "created_at": ts,
    }
    return int((await conn.execute(_INSERT_JOB, values)).scalar_one())


# Built once, values bound at execution (enqueue runs in every push's transaction).
_SAME_KEY_ANY_STATE = (
    sa.select(jobs.c.id)
    .where(jobs.c.kind == sa.bindparam("kind"), jobs.c.dedupe_key == sa.bindparam("key"))
    .limit(1)
)
_SAME_KEY_ACTIVE = _SAME_KEY_ANY_STATE.where(jobs.c.state.in_(ACTIVE))
_INSERT_JOB = sa.insert(jobs).returning(jobs.c.id)


async def claim(
    conn: AsyncConnection, worker: str, kinds: list[str], limit: int = 1
) -> list[JobRow]:
    """Take up to *limit* due jobs of *kinds* for *worker* (state running, attempts + 1)."""
    return await claim_pools(conn, worker, [(kinds, limit)])


async def claim_pools(
    conn: AsyncConnection, worker: str, pools: list[tuple[list[str], int]]
) -> list[JobRow]:
    """Take, in one statement, up to *limit* due jobs of each pool's *kinds* for *worker*
    (state running, owner, heartbeat, attempts + 1): a runner's poll looks into every pool of
    slots it has (most usually find nothing), and one UPDATE costs less than one per pool."""
    pools = [(kinds, limit) for kinds, limit in pools if kinds and limit > 0]
    if not pools:
        return []
    key = (conn.dialect.name, tuple((tuple(kinds), limit) for kinds, limit in pools))
    stmt = _CLAIMS.get(key)
    if stmt is None:
        if len(_CLAIMS) >= 256:
            _CLAIMS.clear()
        stmt = _CLAIMS[key] = _claim_statement(conn.dialect.name, pools)
    result = await conn.execute(stmt, {"ts": now(), "worker": worker})
    return sorted((_job(r) for r in result), key=lambda j: (j.run_after, j.id))


# Claim statements by (dialect, pools), time and worker bound at execution: a runner polls
# after every finished job, and building the statement cost as much as running it.
_CLAIMS: dict[tuple[str, tuple[tuple[tuple[str, ...], int], ...]], Any] = {}


def _claim_statement(dialect: str, pools: list[tuple[list[str], int]]) -> Any:
    ts = sa.bindparam("ts", type_=jobs.c.run_after.type)
    dues = [
        sa.select(jobs.c.id)
        .where(jobs.c.state == "queued", jobs.c.run_after <= ts, jobs.c.kind.in_(kinds))
        .order_by(jobs.c.run_after, jobs.c.id)
        .limit(limit)
        for kinds, limit in pools
    ]
    values = {
        "state": "running",
        "claimed_by": sa.bindparam("worker", type_=jobs.c.claimed_by.type),
        "heartbeat_at": ts,
        "attempts": jobs.c.attempts + 1,
    }
    picked: list[sa.Subquery | sa.CTE]
    if dialect == "postgresql":
        # Materialized CTEs: with "id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)" the planner
        # may re-run the subquery per row and claim every due job, not n (measured: 12 of 12).
        picked = [
            due.with_for_update(skip_locked=True).cte(f"due{i}").prefix_with("MATERIALIZED")
            for i, due in enumerate(dues)
        ]
    else:
        # SQLite: a LIMIT inside a compound SELECT needs a subquery of its own.
        picked = [due.subquery(f"due{i}") for i, due in enumerate(dues)]
    ids: Any = (
        sa.select(picked[0].c.id)
        if len(picked) == 1
        else sa.union_all(*(sa.select(p.c.id) for p in picked))
    )
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.state == "queued")
        .values(**values)
        .returning(*jobs.c)
    )


async def set_progress(
    conn: AsyncConnection, worker: str, job_id: int, progress: dict[str, Any]
) -> bool:
    """Record a running job's progress (only while *worker* still holds it); also a
    heartbeat."""
    result = await conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.claimed_by == worker, jobs.c.state == "running")
        .values(progress=progress, heartbeat_at=now())
    )
    return bool(result.rowcount)


async def heartbeat(conn: AsyncConnection, worker: str, ids: list[int]) -> None:
    if ids:
        await conn.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(ids), jobs.c.claimed_by == worker, jobs.c.state == "running")
            .values(heartbeat_at=now())
        )


async def finish(conn: AsyncConnection, worker: str, job_id: int, result: Any) -> bool:
    """Mark a job succeeded. False when the job is no longer ours (it went stale and another
    node took it over): the caller's result is then dropped, the new owner's counts."""
    res = await conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.claimed_by == worker, jobs.c.state == "running")
        .values(state="succeeded", result=result, finished_at=now(), last_error=None)
    )
    return bool(res.rowcount)


async def fail(
    conn: AsyncConnection, worker: str, job: JobRow, error: str, retry_in: timedelta
) -> str | None:
    """Record a failure: queued again after *retry_in* while attempts remain, else failed.
    Returns the new state, or None when the job is no longer ours."""
    final = job.attempts >= job.max_attempts
    ts = now()
    values: dict[str, Any] = {"last_error": error[:4000], "claimed_by": None}
    if final:
        values.update(state="failed", finished_at=ts)
    else:
        values.update(state="queued", run_after=ts + retry_in)
    res = await conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job.id, jobs.c.claimed_by == worker, jobs.c.state == "running")
        .values(**values)
    )
    return str(values["state"]) if res.rowcount else None


async def requeue_stale(
    conn: AsyncConnection, stale_before: datetime, alive: Collection[int] = ()
) -> int:
    """Running jobs whose node stopped heart-beating: queued again (or failed once their
    attempts are used up). Any node may do this; the statement is idempotent.

    *alive*: the jobs the calling node is running itself. A node whose event loop was starved
    (a loaded machine, a long synchronous step) may find its own heartbeat late; it knows those
    jobs are alive, and re-queueing them would only run them twice."""
    stale = sa.and_(jobs.c.state == "running", jobs.c.heartbeat_at < stale_before)
    if alive:
        stale = sa.and_(stale, jobs.c.id.not_in(list(alive)))
    res_failed = await conn.execute(
        sa.update(jobs)
        .where(stale, jobs.c.attempts >= jobs.c.max_attempts)
        .values(
            state="failed",
            finished_at=now(),
            last_error="the node running it stopped; no attempts left",
        )
    )
    res = await conn.execute(
        sa.update(jobs)
        .where(stale)
        .values(
            state="queued",
            claimed_by=None,
            last_error="the node running it stopped responding; run again",
        )
    )
    return int(res.rowcount or 0) + int(res_failed.rowcount or 0)


async def prune_finished(conn: AsyncConnection, older_than: datetime) -> int:
    res = await conn.execute(
        sa.delete(jobs).where(
            jobs.c.state.in_(("succeeded", "failed")), jobs.c.finished_at < older_than
        )
    )
    return int(res.rowcount or 0)


async def list_jobs(
    conn: AsyncConnection,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[JobRow]:
    q = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if state:
        q = q.where(jobs.c.state == state)
    if kind:
        q = q.where(jobs.c.kind == kind)
    if before_id is not None:
        q = q.where(jobs.c.id < before_id)
    return [_job(r) for r in await conn.execute(q)]


async def get_job(conn: AsyncConnection, job_id: int) -> JobRow | None:
    r = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
    return _job(r) if r else None
