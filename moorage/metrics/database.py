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

from sqlalchemy.ext.asyncio import AsyncEngine

from ..aio import cancelling
from ..db.metrics_queries import MAX_KINDS, Snapshot, read_snapshot
from .definitions import JOB_STATES, METRICS, MoorageMetrics

log = logging.getLogger("moorage.metrics")

__all__ = ["DatabaseGauges", "Snapshot", "read_snapshot"]


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
                if cancelling():  # a cancelled read, turned into another error on cleanup
                    raise asyncio.CancelledError from exc
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
