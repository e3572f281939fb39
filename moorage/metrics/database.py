"""Figures that live in the shared database (storage used, repositories, jobs by kind and
state), read cheaply: at most once per ``ttl`` seconds per process, one statement each, never on
the request path of anything but a scrape, and a scrape that finds them fresh reads nothing.

Every node reports the same values (they describe the cluster, not the node); dashboards take
``max`` over instances. A failed read keeps the last values and sets
``moorage_metrics_database_refresh_ok`` to 0 rather than failing the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db.schema import blobs, jobs, repositories
from .definitions import JOB_STATES, METRICS, MoorageMetrics

log = logging.getLogger("moorage.metrics")
MAX_KINDS = 200  # job kinds are code-defined; a bound against a polluted table all the same


@dataclass(frozen=True, slots=True)
class Snapshot:
    storage_used: int
    blobs: int
    repositories: int
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_due: dict[str, float] = field(default_factory=dict)  # kind → age in seconds


async def read_snapshot(conn: AsyncConnection, now: datetime | None = None) -> Snapshot:
    """The database-derived figures, in four aggregate statements (SQL kept here, beside the
    only code that uses it)."""
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


class DatabaseGauges:
    """Keeps the database-derived gauges of *metrics* at most *ttl* seconds old.

    ``await refresh()`` before rendering a scrape (a no-op when fresh; concurrent scrapes share
    one read). With several worker processes, ``run()`` as a background task in each keeps the
    values fresh for a scrape served by another process (the metrics port, for one)."""

    def __init__(
        self, engine: AsyncEngine, metrics: MoorageMetrics = METRICS, ttl: float = 15.0
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.ttl = ttl
        self.snapshot: Snapshot | None = None
        self.read_at = float("-inf")  # time.monotonic() of the last read (successful or not)
        self._lock = asyncio.Lock()
        self._job_series: set[tuple[str, str]] = set()
        self._age_series: set[str] = set()

    def fresh(self) -> bool:
        return time.monotonic() - self.read_at < self.ttl

    async def refresh(self, force: bool = False) -> Snapshot | None:
        if not force and self.fresh():
            return self.snapshot
        async with self._lock:
            if not force and self.fresh():
                return self.snapshot  # another scrape read it while we waited
            try:
                async with self.engine.connect() as conn:
                    snap = await read_snapshot(conn)
            except Exception as exc:  # noqa: BLE001 - reported as a metric, never raised
                log.warning("metrics: cannot read figures from the database: %s", exc)
                self.metrics.database_refresh_ok.set(0)
                self.read_at = time.monotonic()
                return self.snapshot
            self.read_at = time.monotonic()
            self.snapshot = snap
            self._publish(snap)
            return snap

    def _publish(self, snap: Snapshot) -> None:
        m = self.metrics
        m.storage_used.set(snap.storage_used)
        m.storage_blobs.set(snap.blobs)
        m.repositories.set(snap.repositories)
        # Every (kind, state) ever seen stays a series: a count falling to zero must read 0,
        # not vanish (a vanished series looks like "no data" to an alert).
        kinds = {k for k, _s in snap.jobs} | {k for k, _s in self._job_series}
        for kind in sorted(kinds)[:MAX_KINDS]:
            for state in JOB_STATES:
                m.jobs.labels(kind, state).set(snap.jobs.get((kind, state), 0))
                self._job_series.add((kind, state))
        for kind in sorted(kinds | self._age_series)[:MAX_KINDS]:
            m.jobs_oldest_due_age.labels(kind).set(snap.oldest_due.get(kind, 0.0))
            self._age_series.add(kind)
        m.database_refresh_ok.set(1)

    async def run(self, interval: float | None = None) -> None:
        """Refresh forever (cancel the task to stop)."""
        while True:
            await self.refresh(force=True)
            await asyncio.sleep(interval or self.ttl)
