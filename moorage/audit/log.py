"""The audit log service: cheap ``record()``, a background flusher, forwarding, retention.

``record()`` only appends to an in-memory queue (no I/O: safe on every request path, pulls
included). A flusher task writes what is queued every ``flush_interval_ms`` (sooner once
``batch_size`` events wait), each batch in one transaction chained onto the global log (see
store.py), then hands the stored records to the forwarders. ``record_now()`` / ``flush()`` are
for callers that must know a record is durable before they answer (logins, permission changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from . import store
from .config import AuditConfig
from .events import (
    PULL_ACTIONS,
    Action,
    AuditEvent,
    AuditRecord,
    VerifyResult,
    format_time,
)
from .store import AuditFilter, AuditPage, Order, Sink

if TYPE_CHECKING:
    from .forward import Forwarder

log = logging.getLogger("moorage.audit")

_WARN_EVERY = 30.0
_MAX_CLIENTS = 10
# Most records one append transaction writes (a larger backlog takes several).
_WRITE_CHUNK = 2000

_AggKey = tuple[str, str, str, str, str | None, str | None, str | None]
# action, actor, actor_type, repository, status, attempted actor, via
_RefusalKey = tuple[str, str, str, str | None, object, object, object]


@dataclass
class _Aggregate:
    first: AuditEvent
    started: float  # loop time
    count: int = 0
    last: datetime | None = None
    clients: list[str] = field(default_factory=list)

    def add(self, event: AuditEvent) -> None:
        if self.count == 0:
            self.first = event
        self.count += 1
        self.last = event.time
        if event.client_addr and event.client_addr not in self.clients:
            if len(self.clients) < _MAX_CLIENTS:
                self.clients.append(event.client_addr)

    def event(self) -> AuditEvent:
        details: dict[str, Any] = dict(self.first.details)
        details.update(
            aggregated=True,
            count=self.count,
            first=format_time(self.first.time),
            last=format_time(self.last or self.first.time),
            clients=self.clients,
        )
        return replace(self.first, details=details)


def forwarders_from_config(config: AuditConfig) -> list[Forwarder]:
    out: list[Forwarder] = []
    if not (config.syslog.address or config.http.url):
        return out
    # Imported when configured: the HTTP forwarder brings httpx (~0.2 s), which a `moorage admin`
    # command recording one event should not pay.
    from .forward import HTTPForwarder, SyslogForwarder

    if config.syslog.address:
        out.append(SyslogForwarder(config.syslog, config.forward_queue_size, config.batch_size))
    if config.http.url:
        out.append(HTTPForwarder(config.http, config.forward_queue_size, config.batch_size))
    return out


class AuditLog:
    """One per process. ``await start()`` at startup, ``await stop()`` at shutdown (it flushes)."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: AuditConfig | None = None,
        *,
        forwarders: Sequence[Forwarder] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or AuditConfig()
        self.forwarders: list[Forwarder] = (
            list(forwarders) if forwarders is not None else forwarders_from_config(self.config)
        )
        self.dropped = 0  # pulls lost: queue and aggregate table both full (since start)
        self.overflowed = 0  # pulls aggregated because the queue was full (since start)
        self.written = 0
        self._unreported_drops = 0
        self._buffer: deque[AuditEvent] = deque()
        self._in_flight = 0
        self._aggregates: dict[_AggKey, _Aggregate] = {}
        self._refusals: dict[_RefusalKey, _Aggregate] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_warning = 0.0
        self._random = random.Random()
        self.sinks: list[Sink] = []

    def add_sink(self, sink: Sink) -> None:
        """Hand every written batch to *sink* inside its transaction (store.append): how work
        that follows from pulls (webhooks) is written without a write on the pull's path."""
        self.sinks.append(sink)

    # --- recording ---------------------------------------------------------------------------

    async def record(self, event: AuditEvent) -> None:
        """Queue *event* (no I/O). Written within ``flush_interval_ms``; see ``record_now``."""
        self.record_nowait(event)

    def record_nowait(self, event: AuditEvent) -> None:
        """``record`` for synchronous code running on the event loop's thread.

        The queue is bounded (``queue_size``) for pulls only: once it is full, successful pulls
        are folded into one record per actor x repository x tag x digest per
        ``pull_aggregate_seconds`` with a count, instead of memory growing (issue 9). Pushes,
        deletes, logins, refusals — every other event — are never aggregated or dropped."""
        if not self.config.enabled:
            return
        if event.action in PULL_ACTIONS and event.result == "success":
            mode = self.config.pull_events
            if mode == "sample":
                if self._random.random() >= self.config.pull_sample_rate:
                    return
            elif mode == "aggregate":
                self._aggregate(event)
                return
            if len(self._buffer) >= self.config.queue_size:
                self.overflowed += 1
                self._aggregate(event)
                self._wake.set()
                self._warn_throttled(
                    "audit queue full (%d events): pull records are being aggregated "
                    "(%d so far); is the database slow or unreachable?",
                    len(self._buffer),
                    self.overflowed,
                )
                return
        self._buffer.append(event)
        if len(self._buffer) >= self.config.batch_size:
            self._wake.set()

    def record_refusal(self, event: AuditEvent) -> None:
        """Count a refused request (moorage/audit/refusals.py) per actor, repository, action
        and status: the first of a ``refusal_aggregate_seconds`` window is recorded at once
        (``count: 1``), the others of the window as one record with their ``count`` when it
        ends. Never sampled or dropped: past ``queue_size`` open windows a refusal is queued
        on its own."""
        if not self.config.enabled:
            return
        d = event.details
        key: _RefusalKey = (
            event.action,
            event.actor,
            event.actor_type,
            event.repository,
            d.get("status"),
            d.get("attempted_actor"),
            d.get("via"),
        )
        agg = self._refusals.get(key)
        if agg is None:
            # The first of a window is written at once (an alert must not wait a minute);
            # the rest of the window becomes one record with their count.
            self._buffer.append(replace(event, details={**event.details, "count": 1}))
            if len(self._buffer) >= self.config.batch_size:
                self._wake.set()
            if len(self._refusals) < self.config.queue_size:
                self._refusals[key] = _Aggregate(event, time.monotonic())
            return
        agg.add(event)

    async def record_now(self, event: AuditEvent) -> None:
        """Append *event* (after everything queued before it) and return once it is durable.
        Never sampled, aggregated or dropped; raises when the database cannot be written."""
        if not self.config.enabled:
            return
        self._buffer.append(event)
        await self.flush()

    async def flush(self, aggregates: bool = False) -> None:
        """Write everything queued so far (and, with *aggregates*, open pull aggregates).
        Returns once it is committed; raises if the database write fails (events stay queued)."""
        if aggregates:
            self._emit_aggregates(force=True)
        await self._write_pending()

    def _aggregate(self, event: AuditEvent) -> None:
        key: _AggKey = (
            event.action,
            event.actor,
            event.actor_type,
            event.result,
            event.repository,
            event.tag,
            event.digest,
        )
        agg = self._aggregates.get(key)
        if agg is None:
            if len(self._aggregates) >= self.config.queue_size:
                self.dropped += 1
                self._unreported_drops += 1
                return
            agg = self._aggregates[key] = _Aggregate(event, time.monotonic())
        agg.add(event)

    def _emit_aggregates(self, force: bool) -> None:
        now = time.monotonic()
        if self._refusals:
            horizon = now - self.config.refusal_aggregate_seconds
            for rkey in [k for k, a in self._refusals.items() if force or a.started <= horizon]:
                agg = self._refusals.pop(rkey)
                if agg.count:
                    self._buffer.append(agg.event())
        if not self._aggregates:
            return
        horizon = now - self.config.pull_aggregate_seconds
        for key in [k for k, a in self._aggregates.items() if force or a.started <= horizon]:
            self._buffer.append(self._aggregates.pop(key).event())

    # --- writing -----------------------------------------------------------------------------

    async def _write_pending(self) -> None:
        async with self._lock:
            if self._unreported_drops:
                n, self._unreported_drops = self._unreported_drops, 0
                self._buffer.append(
                    AuditEvent(
                        Action.AUDIT_OVERFLOW,
                        actor="moorage",
                        actor_type="system",
                        result="failure",
                        request_id=None,
                        details={"dropped": n},
                    )
                )
            while self._buffer:
                # A backlog is written in large transactions: the chain lock, the head update
                # and the activity counters cost the same for 20 records as for 2,000.
                size = min(len(self._buffer), max(self.config.batch_size, _WRITE_CHUNK))
                batch = [self._buffer.popleft() for _ in range(size)]
                self._in_flight = len(batch)
                try:
                    records = await store.append(self.engine, batch, self.sinks)
                except BaseException:
                    self._buffer.extendleft(reversed(batch))
                    raise
                finally:
                    self._in_flight = 0
                self.written += len(records)
                for fwd in self.forwarders:
                    fwd.submit(records)

    async def _run(self) -> None:
        interval = self.config.flush_interval_ms / 1000
        failures = 0
        while not self._stopping:
            delay = interval if not failures else min(10.0, interval * 2**failures)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            self._emit_aggregates(force=False)
            try:
                await self._write_pending()
            except Exception as exc:  # noqa: BLE001 - retried; never reaches a request
                failures += 1
                self._warn_throttled(
                    "audit log write failed (%s: %s); %d event(s) queued, retrying",
                    type(exc).__name__,
                    exc,
                    len(self._buffer),
                )
            else:
                if failures:
                    log.info("audit log writes recovered")
                failures = 0

    def _warn_throttled(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning(msg, *args)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        for fwd in self.forwarders:
            fwd.start()
        self._task = asyncio.create_task(self._run(), name="audit-flusher")

    async def stop(self, forward_grace: float = 5.0) -> None:
        """Stop the flusher, write everything still queued (pull aggregates included), give the
        forwarders up to *forward_grace* seconds to deliver, and close them."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        if task is not None:
            await task
        try:
            await self.flush(aggregates=True)
        except Exception as exc:  # noqa: BLE001
            log.error(
                "audit log: %d event(s) could not be written at shutdown: %s",
                len(self._buffer),
                exc,
            )
        for fwd in self.forwarders:
            await fwd.close(forward_grace)

    @property
    def pending(self) -> int:
        """Events not yet durable: queued, or in a batch being written right now."""
        return len(self._buffer) + self._in_flight

    # --- reading and maintenance -------------------------------------------------------------

    async def query(
        self,
        filters: AuditFilter | None = None,
        *,
        cursor: int | None = None,
        limit: int = 100,
        order: Order = "desc",
    ) -> AuditPage:
        return await store.query(self.engine, filters, cursor=cursor, limit=limit, order=order)

    async def verify(self) -> VerifyResult:
        return await store.verify(self.engine)

    async def prune(self, now: datetime | None = None) -> int:
        """Apply ``retention`` (max_age_days / max_events); returns the records deleted."""
        retention = self.config.retention
        deleted = await store.prune(
            self.engine,
            max_age_days=retention.max_age_days,
            max_events=retention.max_events,
            now=now,
        )
        if deleted:
            log.info("audit log: pruned %d record(s)", deleted)
        return deleted


__all__ = ["AuditLog", "AuditRecord", "forwarders_from_config"]
