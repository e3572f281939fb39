"""Background work, coordinated across nodes through the ``jobs`` table.

Every node runs a :class:`JobRunner`. It polls for due jobs of the kinds it knows, claims them
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL — exactly one node gets each job), runs them while
heart-beating, and records the outcome. A node that dies stops heart-beating; after
``jobs.stale_seconds`` any other node re-queues its jobs. Failures are retried with exponential
backoff up to the job's ``max_attempts``.

A kind registered with its own ``concurrency`` (many small network-bound jobs, such as one
replication job per tag) has slots of its own beside the shared ``jobs.concurrency``, so it
neither starves nor is starved by the other kinds. A finished job wakes the runner at once: the
next due job starts without waiting for the next poll.

Periodic work is a :class:`Schedule`: each node, each poll, offers to enqueue the job for the
current time slot with ``dedupe_key=<slot>``; the database lets exactly one such row exist, so a
schedule runs once per period however many nodes there are, and still runs when nodes die.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..aio import cancel_and_wait
from ..db import job_queries as q
from ..metrics.definitions import METRICS
from .config import JobsConfig

log = logging.getLogger("moorage.jobs")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
# Run in the claim's own transaction with the jobs of one kind just claimed (state running):
# what a kind shows as "started" (a scan's result row) commits with the claim, not after it.
ClaimHook = Callable[[AsyncConnection, list[q.JobRow]], Awaitable[None]]
# A handler's final rows, written in the transaction that records the job's success.
SuccessWrite = Callable[[AsyncConnection], Awaitable[None]]
PROGRESS_INTERVAL = 1.0  # seconds between progress writes of one job


@dataclass(slots=True)
class _Current:
    runner: JobRunner
    job: q.JobRow
    written_at: float = 0.0
    on_success: list[SuccessWrite] = field(default_factory=list)


_current: contextvars.ContextVar[_Current | None] = contextvars.ContextVar(
    "moorage_job", default=None
)


def checkpoint() -> Any:
    """In a job handler: the checkpoint the previous attempt of this job reported (it died or
    failed part-way), or None on a first run — where a resumable job starts again."""
    cur = _current.get()
    if cur is None or not cur.job.progress:
        return None
    return cur.job.progress.get("checkpoint")


def current_attempt() -> tuple[int, int] | None:
    """In a job handler: (this attempt's number, the job's max_attempts), so that a handler
    can record a final outcome itself on its last attempt; None outside a job."""
    cur = _current.get()
    if cur is None:
        return None
    return cur.job.attempts, cur.job.max_attempts


def on_success(write: SuccessWrite) -> bool:
    """In a job handler: run *write* in the transaction that marks this job succeeded, so the
    job's own result rows and its finished state commit together — one transaction instead of
    two — and only while this node still holds the job (a node whose job went stale and was
    taken over writes nothing; the new owner's run counts). If *write* raises, the success is
    rolled back with it and the job is retried like any failure. Returns False outside a job
    (the caller then writes by itself)."""
    cur = _current.get()
    if cur is None:
        return False
    cur.on_success.append(write)
    return True


async def report_progress(
    done: int, total: int | None = None, message: str = "", checkpoint: Any = None
) -> None:
    """In a job handler: record how far it got (shown by the API, the UI and ``moorage jobs``)
    and, with *checkpoint* (JSON), where a re-run after a crash resumes. Written at most once
    a second per job, and whenever *done* reaches *total*; outside a job it does nothing."""
    cur = _current.get()
    if cur is None:
        return
    loop = asyncio.get_running_loop()
    if loop.time() - cur.written_at < PROGRESS_INTERVAL and (total is None or done < total):
        return
    cur.written_at = loop.time()
    progress: dict[str, Any] = {"done": done, "total": total, "message": message[:500]}
    if checkpoint is not None:
        progress["checkpoint"] = checkpoint

    async def write() -> None:
        async with cur.runner.engine.begin() as conn:
            await q.set_progress(conn, cur.runner.worker, cur.job.id, progress)

    # Shielded: a caller cancelled mid-write (a job stopped at shutdown, a reporter task) must
    # not cut the transaction in half; the write finishes, the caller gets its CancelledError.
    await asyncio.shield(write())


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str
    every: timedelta
    payload: dict[str, Any] | None = None
    at_start: bool = False  # also offered once when each process starts

    def slot(self, at: datetime) -> str:
        seconds = max(1, int(self.every.total_seconds()))
        return str(int(at.timestamp()) // seconds)


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        config: JobsConfig,
        *,
        worker: str | None = None,
    ) -> None:
        self.engine = engine  # the writer engine (BEGIN IMMEDIATE on SQLite)
        self.config = config
        self.worker = worker or node_name()
        self.handlers: dict[str, Handler] = {}
        self._claim_hooks: dict[str, ClaimHook] = {}
        self.schedules: list[Schedule] = []
        self._own_slots: dict[str, int] = {}  # kind -> slots of its own (else shared)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._running_kind: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._offered: dict[str, str] = {}  # schedule kind -> last slot offered
        self._requeued_at = float("-inf")

    # --- registration -------------------------------------------------------------------

    def register(
        self,
        kind: str,
        handler: Handler,
        *,
        concurrency: int | None = None,
        on_claim: ClaimHook | None = None,
    ) -> None:
        """*concurrency*: slots of the kind's own on each node (its jobs then do not count
        against ``jobs.concurrency``); None shares the node's common slots. *on_claim*: runs in
        the claim's transaction with the kind's jobs just claimed (it must not fail on a job's
        payload: an error there undoes the whole claim)."""
        self.handlers[kind] = handler
        if on_claim is not None:
            self._claim_hooks[kind] = on_claim
        if concurrency is not None:
            self._own_slots[kind] = max(1, concurrency)

    def wake(self) -> None:
        """Poll now (e.g. after a handler enqueued jobs in its own transaction)."""
        self._wake.set()

    def schedule(
        self,
        kind: str,
        every: timedelta,
        payload: dict[str, Any] | None = None,
        *,
        at_start: bool = False,
    ) -> None:
        """Run *kind* once per *every* across all nodes; with *at_start*, also once when this
        process starts (a restarted node applies a changed retention at once, not at the next
        slot)."""
        if kind not in self.handlers:
            raise ValueError(f"no handler for scheduled job kind {kind!r}")
        self.schedules.append(Schedule(kind, every, payload, at_start))

    # --- the queue ----------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        delay: timedelta = timedelta(0),
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
    ) -> int | None:
        async with self.engine.begin() as conn:
            job_id = await q.enqueue(
                conn,
                kind,
                payload or {},
                run_after=datetime.now(UTC) + delay,
                dedupe_key=dedupe_key,
                max_attempts=max_attempts or self.config.max_attempts,
            )
        self._wake.set()
        return job_id

    async def _offer_schedules(self) -> None:
        """Offer each schedule's job for the current slot, once per slot per process: after one
        successful offer (whether this node inserted the row or another had), the slot's row
        exists and asking again until the slot changes would be a wasted write transaction."""
        ts = datetime.now(UTC)
        for sched in self.schedules:
            slot = sched.slot(ts)
            if self._offered.get(sched.kind) == slot:
                continue
            first = sched.kind not in self._offered
            key = f"start:{self.worker}" if first and sched.at_start else f"schedule:{slot}"
            async with self.engine.begin() as conn:
                await q.enqueue(
                    conn,
                    sched.kind,
                    sched.payload or {},
                    run_after=ts,
                    dedupe_key=key,
                    dedupe_any_state=True,
                    max_attempts=1,  # the next slot is the retry
                )
            self._offered[sched.kind] = slot

    async def run_once(self) -> int:
        """One poll: re-queue stale jobs, offer schedules, claim and start due jobs.
        Returns how many jobs were started."""
        loop = asyncio.get_running_loop()
        # Looking for dead nodes' jobs is a write transaction: once per poll period, not on
        # every wake (a wake comes with every finished job).
        if loop.time() - self._requeued_at >= min(self.config.poll_seconds, 1.0):
            self._requeued_at = loop.time()
            stale_before = datetime.now(UTC) - timedelta(seconds=self.config.stale_seconds)
            async with self.engine.begin() as conn:
                requeued = await q.requeue_stale(conn, stale_before, alive=list(self._running))
            if requeued:
                log.warning("re-queued %d job(s) whose node stopped heart-beating", requeued)
        await self._offer_schedules()
        busy: dict[str, int] = {}
        for kind in self._running_kind.values():
            pool = kind if kind in self._own_slots else ""
            busy[pool] = busy.get(pool, 0) + 1
        shared = [k for k in self.handlers if k not in self._own_slots]
        pools = [("", self.config.concurrency, shared)]
        pools += [(k, n, [k]) for k, n in self._own_slots.items()]
        wanted = [
            (kinds, slots - busy.get(pool, 0))
            for pool, slots, kinds in pools
            if kinds and slots - busy.get(pool, 0) > 0
        ]
        if not wanted:
            return 0
        # Every pool's claim in one statement and one write transaction: a wake (every finished
        # job) costs one BEGIN IMMEDIATE / UPDATE / commit, not one per pool — most pools
        # usually find nothing.
        async with self.engine.begin() as conn:
            claimed = await q.claim_pools(conn, self.worker, wanted)
            for kind, hook in self._claim_hooks.items():
                of_kind = [job for job in claimed if job.kind == kind]
                if of_kind:
                    await hook(conn, of_kind)
        for job in claimed:
            self._running_kind[job.id] = job.kind
            self._running[job.id] = asyncio.create_task(self._run(job))
        return len(claimed)

    async def _run(self, job: q.JobRow) -> None:
        handler = self.handlers[job.kind]
        cur = _Current(self, job)
        _current.set(cur)  # this task's own context
        started = time.perf_counter()
        try:
            try:
                result = await handler(job.payload)
                # The outcome and the handler's own final rows (on_success) in one transaction.
                async with self.engine.begin() as conn:
                    mine = await q.finish(conn, self.worker, job.id, _jsonable(result))
                    if mine:
                        for write in cur.on_success:
                            await write(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded on the job and retried
                _observe(job.kind, "failure", started)
                await self._record_failure(job, exc)
                return
            _observe(job.kind, "success", started)
            if not mine:
                log.warning("job %d (%s) finished after another node took it", job.id, job.kind)
        finally:
            self._running.pop(job.id, None)
            self._running_kind.pop(job.id, None)
            self._wake.set()  # a slot is free: look for the next due job now

    async def _record_failure(self, job: q.JobRow, exc: Exception) -> None:
        backoff = min(
            self.config.retry_max_seconds,
            self.config.retry_base_seconds * 2 ** max(0, job.attempts - 1),
        )
        backoff *= 1 + random.random() * 0.2  # noqa: S311 - jitter, not security
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        async with self.engine.begin() as conn:
            state = await q.fail(conn, self.worker, job, error, timedelta(seconds=backoff))
        log.warning(
            "job %d (%s) attempt %d failed: %s%s",
            job.id,
            job.kind,
            job.attempts,
            error,
            "; giving up" if state == "failed" else f"; retry in {backoff:.0f}s",
        )

    async def _heartbeat(self) -> None:
        ids = list(self._running)
        if ids:
            async with self.engine.begin() as conn:
                await q.heartbeat(conn, self.worker, ids)

    # --- lifecycle ----------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        while not self._stopping:
            # Cleared before the poll, so that a job finishing meanwhile wakes the next one.
            self._wake.clear()
            try:
                await self.run_once()
                if loop.time() - last_beat >= self.config.heartbeat_seconds:
                    await self._heartbeat()
                    last_beat = loop.time()
            except Exception as exc:  # noqa: BLE001 - database away: try again next poll
                log.warning("job runner poll failed: %s", exc)
            wait = min(self.config.poll_seconds, self.config.heartbeat_seconds)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait * (0.8 + random.random() * 0.4)):  # noqa: S311
                    await self._wake.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="moorage-jobs")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop polling; give running jobs *grace* seconds, then cancel them (they are re-queued
        by another node once their heartbeat goes stale)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            with contextlib.suppress(Exception):
                await cancel_and_wait(*pending)

    @property
    def running(self) -> int:
        return len(self._running)


def _observe(kind: str, outcome: str, started: float) -> None:
    """Job figures of this node (moorage_jobs_finished_total, moorage_job_duration_seconds);
    kinds are code-defined, so the label set stays small."""
    METRICS.jobs_finished.labels(kind, outcome).inc()
    METRICS.job_duration.labels(kind).observe(time.perf_counter() - started)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)
