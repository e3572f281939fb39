"""Process-local state read into gauges by sampling: database pool occupancy, audit queue
depth.

Sampling (every few seconds, and right before a scrape the process serves) costs nothing on the
request path, where counting each pool checkout would. Each worker process samples its own
state; with several workers the exposition sums them (``livesum``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .definitions import METRICS, MoorageMetrics

log = logging.getLogger("moorage.metrics")


class _Queue(Protocol):
    """What AuditLog offers: ``pending`` (a property) and ``dropped``."""

    @property
    def pending(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class ProcessSampler:
    def __init__(self, metrics: MoorageMetrics = METRICS) -> None:
        self.metrics = metrics
        self._probes: list[Callable[[], None]] = []

    def add(self, probe: Callable[[], None]) -> None:
        """Run *probe* (which sets some gauges) at every sample."""
        self._probes.append(probe)

    def watch_pool(self, name: str, engine: Any) -> None:
        """Sample a SQLAlchemy (async) engine's connection pool as pool *name*. Pools without
        counters (SQLite's NullPool, StaticPool) report nothing."""
        pool = getattr(engine, "sync_engine", engine).pool
        if not all(hasattr(pool, a) for a in ("size", "checkedout", "checkedin", "overflow")):
            return
        m = self.metrics
        size = m.db_pool_size.labels(name)
        in_use = m.db_pool_connections.labels(name, "in_use")
        idle = m.db_pool_connections.labels(name, "idle")
        overflow = m.db_pool_connections.labels(name, "overflow")

        def probe() -> None:
            size.set(pool.size())
            in_use.set(pool.checkedout())
            idle.set(pool.checkedin())
            overflow.set(max(0, pool.overflow()))

        self.add(probe)

    def watch_audit(self, audit: _Queue) -> None:
        """Sample an AuditLog (``pending``, ``dropped``)."""
        m = self.metrics

        def probe() -> None:
            m.audit_queue_depth.set(audit.pending)
            m.audit_events_dropped.set(audit.dropped)

        self.add(probe)

    def sample(self) -> None:
        for probe in self._probes:
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - a broken probe must not break a scrape
                log.warning("metrics: a sampler probe failed: %s", exc)

    async def run(self, interval: float = 5.0) -> None:
        """Sample forever (cancel the task to stop)."""
        while True:
            self.sample()
            await asyncio.sleep(interval)
