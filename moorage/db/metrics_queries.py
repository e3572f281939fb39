"""SQL of the database-derived metrics (moorage/metrics/database.py): storage used, blobs,
repositories, jobs by kind and state, and the age of the oldest due job per kind — four
aggregate statements, read at most once per TTL per process, never on a request's path."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .schema import blobs, jobs, repositories

MAX_KINDS = 200  # job kinds are code-defined; a bound against a polluted table all the same
JOB_STATES = ("queued", "running", "succeeded", "failed")


@dataclass(frozen=True, slots=True)
class Snapshot:
    storage_used: int
    blobs: int
    repositories: int
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_due: dict[str, float] = field(default_factory=dict)  # kind → age in seconds


async def read_snapshot(conn: AsyncConnection, now: datetime | None = None) -> Snapshot:
    """The database-derived figures, in four aggregate statements."""
    now = now or datetime.now(UTC)
    size, count = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0), sa.func.count())
        )
    ).one()
    repos = (await conn.execute(sa.select(sa.func.count()).select_from(repositories))).scalar_one()
    by_state = await conn.execute(
        sa.select(jobs.c.kind, jobs.c.state, sa.func.count())
        .group_by(jobs.c.kind, jobs.c.state)
        .limit(MAX_KINDS * len(JOB_STATES))
    )
    oldest = await conn.execute(
        sa.select(jobs.c.kind, sa.func.min(jobs.c.run_after))
        .where(jobs.c.state == "queued", jobs.c.run_after <= now)
        .group_by(jobs.c.kind)
        .limit(MAX_KINDS)
    )
    ages: dict[str, float] = {}
    for kind, run_after in oldest:
        if run_after.tzinfo is None:  # SQLite hands back naive UTC
            run_after = run_after.replace(tzinfo=UTC)
        ages[str(kind)] = max(0.0, (now - run_after).total_seconds())
    return Snapshot(
        storage_used=int(size),
        blobs=int(count),
        repositories=int(repos),
        jobs={(str(k), str(s)): int(n) for k, s, n in by_state if s in JOB_STATES},
        oldest_due=ages,
    )
