"""Executions as jobs on the shared queue: ``replication.plan`` lists and filters the source
and queues one ``replication.tag`` job per tag; each tag job copies (or deletes) one tag and
records its outcome. Exactly one node runs each job; a node that dies mid-tag stops
heart-beating and another node runs the job again, resuming a half-sent layer from the upload
session its checkpoint names (the destination's acknowledged offset).

Failures are per tag: a transient one (peer away, 5xx, 429) is retried with the queue's backoff
up to ``TASK_ATTEMPTS``, then recorded; a refusal or bad content is recorded at once. The
other tags go on. The tag that completes an execution closes it, in the same transaction, with
an audit record and the "replication finished" hooks (hooks.py).

Jobs of one execution on one node share a copy engine (pool below): its connections, its
bandwidth limiter, the blobs in flight and where it put each blob (later repositories mount it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..audit import AuditEvent, AuditLog
from ..db import job_queries
from ..db.queries import now
from ..db.schema import jobs as jobs_table
from ..jobs.runner import JobRunner, checkpoint, current_attempt, report_progress
from ..oci import mediatypes as mt
from ..oci.manifest import ManifestError, parse_manifest
from ..services.rules import Requester
from . import filters
from . import queries as q
from .copy import (
    CopyEngine,
    CopyOptions,
    ProgressEvent,
    TagResult,
    describe_failure,
    transient_failure,
)
from .errors import NotFound, RegistryError, ReplicationError
from .hooks import REPOSITORIES_MAX, ExecutionFinished
from .local import LocalRegistry
from .peer import Registry
from .ratelimit import BandwidthLimiter
from .service import PLAN_JOB, TAG_JOB, ReplicationService

log = logging.getLogger("moorage.replication")

TASK_ATTEMPTS = 4  # per tag, transient failures included
TAG_JOB_ATTEMPTS = TASK_ATTEMPTS + 3  # room for re-runs after node deaths
TAG_CONCURRENCY = 8  # tag jobs one node runs at once (their own slots on the queue)
ENGINE_IDLE = 15.0  # seconds an execution's engine stays open after its last job
_LIST_CONCURRENCY = 8
_IMAGE_CONFIGS = frozenset({mt.OCI_CONFIG, mt.DOCKER_CONFIG})


class TaskRetry(Exception):
    """A transient failure of one tag: the job queue retries it with backoff."""


def replication_requester(policy: str) -> Requester:
    """Who writes into this registry for a pull policy: the origin marker of what replication
    stored (event triggers do not send it on unless the policy says so)."""
    return Requester.system(f"replication:{policy}")


@dataclass
class _Entry:
    engine: CopyEngine
    src: Registry
    dst: Registry
    closers: list[Any]
    users: int = 0
    listeners: dict[tuple[str, str], Any] = field(default_factory=dict)
    idle: asyncio.TimerHandle | None = None


class EnginePool:
    """One copy engine per execution per node, shared by that execution's jobs here."""

    def __init__(self, service: ReplicationService) -> None:
        self.service = service
        self._entries: dict[int, _Entry] = {}
        self._lock = asyncio.Lock()

    def _open(self, policy: q.PolicyRow, remote: q.RemoteRow) -> _Entry:
        limiter = BandwidthLimiter(policy.bandwidth_limit) if policy.bandwidth_limit else None
        client = self.service.client(remote, limiter)
        local = LocalRegistry(self.service.ctx, replication_requester(policy.name))
        src: Registry
        dst: Registry
        if policy.direction == "push":
            src, dst = local, client
        else:
            src, dst = client, local
        options = CopyOptions(platforms=policy.platforms, referrers=policy.referrers)
        entry = _Entry(CopyEngine(src, dst, options), src, dst, [client])
        entry.engine.progress = lambda ev: _route(entry, ev)
        return entry

    @contextlib.asynccontextmanager
    async def engine(
        self, execution_id: int, policy: q.PolicyRow, remote: q.RemoteRow
    ) -> AsyncIterator[_Entry]:
        async with self._lock:
            entry = self._entries.get(execution_id)
            if entry is None:
                entry = self._entries[execution_id] = self._open(policy, remote)
            if entry.idle is not None:
                entry.idle.cancel()
                entry.idle = None
            entry.users += 1
        try:
            yield entry
        finally:
            entry.users -= 1
            if entry.users == 0:
                loop = asyncio.get_running_loop()
                entry.idle = loop.call_later(
                    ENGINE_IDLE, lambda: asyncio.ensure_future(self._close(execution_id, entry))
                )

    async def _close(self, execution_id: int, entry: _Entry) -> None:
        async with self._lock:
            if entry.users or self._entries.get(execution_id) is not entry:
                return
            del self._entries[execution_id]
        for closer in entry.closers:
            with contextlib.suppress(Exception):
                await closer.aclose()

    async def close(self) -> None:
        for execution_id, entry in list(self._entries.items()):
            if entry.idle is not None:
                entry.idle.cancel()
            entry.users = 0
            await self._close(execution_id, entry)


def _route(entry: _Entry, ev: ProgressEvent) -> None:
    listener = entry.listeners.get((ev.src_repo, ev.ref))
    if listener is not None:
        listener(ev)


@dataclass
class _Progress:
    """What a running tag job reports: bytes sent, blobs done, and the upload sessions open
    (the checkpoint a re-run on another node resumes from)."""

    sent: int = 0
    blobs: int = 0
    uploads: dict[str, str] = field(default_factory=dict)

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.kind == "bytes":
            self.sent += ev.bytes
        elif ev.kind == "blob":
            self.blobs += 1
            if ev.digest:
                self.uploads.pop(ev.digest, None)
        elif ev.kind == "upload" and ev.digest and ev.location:
            self.uploads[ev.digest] = ev.location


class Executor:
    def __init__(self, service: ReplicationService, runner: JobRunner, audit: AuditLog) -> None:
        self.service = service
        self.ctx = service.ctx
        self.runner = runner
        self.audit = audit
        self.pool = EnginePool(service)
        self.finished = service.finished

    def register(self) -> None:
        self.runner.register(PLAN_JOB, self.plan)
        self.runner.register(TAG_JOB, self.tag, concurrency=TAG_CONCURRENCY)

    # --- planning -------------------------------------------------------------------------

    async def plan(self, payload: dict[str, Any]) -> dict[str, Any]:
        execution_id = int(payload["execution"])
        async with self.ctx.engine.connect() as conn:
            e = await q.execution(conn, execution_id)
            if e is None or e.state != "planning":
                return {"skipped": "not planning"}
            policy = await q.policy_by_id(conn, e.policy_id)
            remote = await q.remote_by_id(conn, policy.remote_id) if policy else None
        if policy is None or remote is None:
            return {"skipped": "policy gone"}
        try:
            selected = await self._select(policy, remote)
        except (ReplicationError, filters.PatternError) as exc:
            transient = bool(getattr(exc, "transient", False))
            attempt = current_attempt()
            if transient and attempt is not None and attempt[0] < attempt[1]:
                raise
            await self._fail_planning(e, f"listing the source failed: {exc}")
            return {"failed": str(exc)}
        deletes: list[q.TaskRow] = []
        if e.trigger == "catch-up":
            deletes = await self._failed_deletes(policy, execution_id)
        async with self.service._tx() as conn:
            for src_repo, dst_repo, ref in selected:
                await self._add_task(conn, execution_id, "copy", src_repo, dst_repo, ref)
            for t in deletes:
                await self._add_task(
                    conn, execution_id, "delete", t.src_repo, t.dst_repo, t.ref, t.expect_digest
                )
            total = len(selected) + len(deletes)
            await q.planned(conn, execution_id, total, None)
            if total == 0:
                closed = await q.execution(conn, execution_id)
                if closed is not None:
                    await self._publish(conn, closed)
        if total == 0 and closed is not None:
            await self._audit(closed)
        self.runner.wake()
        return {"tasks": total}

    async def _add_task(
        self,
        conn: Any,
        execution_id: int,
        operation: str,
        src_repo: str,
        dst_repo: str,
        ref: str,
        expect: str | None = None,
    ) -> int:
        task_id = await q.insert_task(conn, execution_id, operation, src_repo, dst_repo, ref, expect)
        job_id = await job_queries.enqueue(
            conn, TAG_JOB, {"task": task_id}, max_attempts=TAG_JOB_ATTEMPTS
        )
        await q.set_task_job(conn, task_id, job_id)
        return task_id

    async def _failed_deletes(self, policy: q.PolicyRow, execution_id: int) -> list[q.TaskRow]:
        async with self.ctx.engine.connect() as conn:
            previous = [
                x
                for x in await q.executions(conn, policy.id, limit=20)
                if x.trigger == "catch-up" and x.id != execution_id
            ]
            since = previous[0].created_at if previous else None
            failed = await q.failed_transient_tasks(conn, policy.id, since)
        seen: set[tuple[str, str]] = set()
        out = []
        for t in failed:
            if t.operation == "delete" and (t.src_repo, t.ref) not in seen:
                seen.add((t.src_repo, t.ref))
                out.append(t)
        return out

    async def _fail_planning(self, e: q.ExecutionRow, message: str) -> None:
        async with self.service._tx() as conn:
            if not await q.fail_execution(conn, e.id, message):
                return
            closed = await q.execution(conn, e.id)
            if closed is not None:
                await self._publish(conn, closed)
        if closed is not None:
            await self._audit(closed)

    async def _select(
        self, policy: q.PolicyRow, remote: q.RemoteRow
    ) -> list[tuple[str, str, str]]:
        """(source repository, destination repository, tag) the policy selects now."""
        local = LocalRegistry(self.ctx, replication_requester(policy.name))
        async with self.service.client(remote) as client:
            src: Any = local if policy.direction == "push" else client
            if filters.is_literal(policy.source):
                repos = [policy.source]
            elif policy.direction == "push":
                repos = await local.catalog()
            else:
                repos = await client.catalog()
            repos = [
                r
                for r in repos
                if filters.matches(policy.source, r)
                and not filters.excluded_repository(policy.exclude, r)
            ]
            slots = asyncio.Semaphore(_LIST_CONCURRENCY)

            async def tags_of(repo: str) -> list[str]:
                async with slots:
                    try:
                        return list(await src.tags(repo))
                    except NotFound:
                        return []

            listed = await asyncio.gather(*(tags_of(r) for r in repos))
        out: list[tuple[str, str, str]] = []
        for repo, tags in zip(repos, listed, strict=True):
            dst = filters.destination(repo, policy.dest_namespace)
            for tag in sorted(tags):
                if policy.referrers and filters.attached_tag(tag):
                    continue  # travels with its subject
                if not filters.matches(policy.tags, tag) or filters.excluded_tag(
                    policy.exclude, tag
                ):
                    continue
                out.append((repo, dst, tag))
        return out

    # --- one tag --------------------------------------------------------------------------

    async def tag(self, payload: dict[str, Any]) -> dict[str, Any]:
        task_id = int(payload["task"])
        async with self.ctx.engine.connect() as conn:
            t = await q.task(conn, task_id)
            if t is None or t.state in q.FINAL:
                return {"skipped": "already recorded"}
            e = await q.execution(conn, t.execution_id)
            policy = await q.policy_by_id(conn, e.policy_id) if e else None
            remote = await q.remote_by_id(conn, policy.remote_id) if policy else None
        if e is None or policy is None or remote is None:
            return {"skipped": "policy gone"}
        attempt = current_attempt()
        run = q.TaskRun(attempt[0] if attempt else t.attempts + 1, self.runner.worker, now())
        started = time.monotonic()
        progress = _Progress()
        saved = checkpoint() or {}
        resume = {
            str(k): str(v) for k, v in (saved.get("uploads") or {}).items() if isinstance(v, str)
        }
        async with self.pool.engine(e.id, policy, remote) as entry:
            entry.listeners[(t.src_repo, t.ref)] = progress
            done = asyncio.Event()
            reporter = asyncio.ensure_future(self._report(t, progress, done))
            try:
                if t.operation == "delete":
                    result = await self._delete(entry, t)
                else:
                    result = await self._filter_or_copy(entry, policy, t, resume)
            finally:
                entry.listeners.pop((t.src_repo, t.ref), None)
                # Told to stop, not cancelled: a cancel landing inside its progress write left
                # that transaction's connection invalid, and the PendingRollbackError it raised
                # then failed the tag (seen under load: tags retried, executions 60x slower).
                done.set()
                await reporter
        return await self._record(t, e, policy, result, time.monotonic() - started, progress, run)

    async def _report(self, t: q.TaskRow, progress: _Progress, done: asyncio.Event) -> None:
        """Progress and the resume checkpoint, once a second until *done*; best effort: a
        failed write is logged, never the tag's failure."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await done.wait()
                return
            try:
                await report_progress(
                    progress.blobs,
                    None,
                    f"{t.src_repo}:{t.ref} {progress.sent / 1e6:.1f} MB sent",
                    checkpoint={"uploads": dict(progress.uploads)} if progress.uploads else None,
                )
            except Exception as exc:  # noqa: BLE001 - progress is best effort
                log.warning("progress of %s:%s not recorded: %s", t.src_repo, t.ref, exc)

    async def _filter_or_copy(
        self, entry: _Entry, policy: q.PolicyRow, t: q.TaskRow, resume: dict[str, str]
    ) -> TagResult:
        """The tag left out by the filters (status copied, ``error`` saying why: the outcome
        ``skipped``), or copied. Failing to read what the filters look at fails this tag like
        a failed copy (retried when transient), never the job: a job that raised was retried
        by the queue and, once it gave up, recorded as "its job stopped (the nodes running it
        died)"."""
        try:
            skip = await self._filtered_out(entry.src, policy, t)
        except Exception as exc:
            failed = TagResult(t.src_repo, t.dst_repo, t.ref, "failed")
            failed.error = (
                f"reading {t.src_repo}:{t.ref} for the label or artifact-type filter failed: "
                + describe_failure(exc)
            )
            failed.transient = transient_failure(exc)
            return failed
        if skip is not None:
            result = TagResult(t.src_repo, t.dst_repo, t.ref, "copied")
            result.error = skip
            return result
        return await entry.engine.copy_tag(t.src_repo, t.dst_repo, t.ref, resume=resume)

    async def _filtered_out(
        self, src: Registry, policy: q.PolicyRow, t: q.TaskRow
    ) -> str | None:
        """Why the label or artifact-type filter leaves this tag out (None: copy it)."""
        if not policy.labels and not policy.artifact_types:
            return None
        manifest = await src.get_manifest(t.src_repo, t.ref)
        try:
            parsed = parse_manifest(manifest.data, manifest.media_type)
        except ManifestError as exc:
            return f"not a manifest this registry reads: {exc}"
        if policy.artifact_types:
            kind = parsed.referrer_artifact_type() or (
                "index" if parsed.is_index else (str(parsed.config.media_type) if parsed.config else "")
            )
            wanted = set(policy.artifact_types)
            image = parsed.config is not None and parsed.config.media_type in _IMAGE_CONFIGS
            if kind not in wanted and not ("image" in wanted and image):
                return f"artifact type {kind or 'unknown'} is not selected"
        if policy.labels:
            labels = dict(parsed.annotations or {})
            if parsed.config is not None and parsed.config.size <= 4 * 1024 * 1024:
                labels.update(await _config_labels(src, t.src_repo, str(parsed.config.digest)))
            for key, value in policy.labels.items():
                if key not in labels or (value != "*" and labels[key] != value):
                    return f"label {key}={value} is not on it"
        return None

    async def _delete(self, entry: _Entry, t: q.TaskRow) -> TagResult:
        result = TagResult(t.src_repo, t.dst_repo, t.ref, "copied")
        try:
            there = await entry.dst.head_manifest(t.dst_repo, t.ref)
            if there is None:
                result.error = "nothing to delete at the destination"
                return result
            result.digest = there.digest
            if t.expect_digest and ":" not in t.ref and there.digest != t.expect_digest:
                result.error = f"the destination's tag moved to {there.digest}: left alone"
                return result
            await entry.dst.delete_manifest(t.dst_repo, t.ref)
            result.status = "copied"
        except ReplicationError as exc:
            result.status, result.error = "failed", str(exc)
            result.transient = bool(exc.transient)
            if isinstance(exc, RegistryError) and exc.status in (400, 405):
                result.error = f"the destination refused to delete {t.ref}: {exc}"
        return result

    async def _record(
        self,
        t: q.TaskRow,
        e: q.ExecutionRow,
        policy: q.PolicyRow,
        result: TagResult,
        duration: float,
        progress: _Progress,
        run: q.TaskRun,
    ) -> dict[str, Any]:
        if not result.ok and result.transient and run.attempt < TASK_ATTEMPTS:
            async with self.service._tx() as conn:
                await q.retry_task(conn, t, result.error or "failed", run)
            if progress.uploads:
                await report_progress(0, None, "retrying", checkpoint={"uploads": progress.uploads})
            raise TaskRetry(result.error or "failed")
        if t.operation == "delete":
            outcome = "failed" if not result.ok else ("deleted" if not result.error else "skipped")
        elif result.ok and result.error:  # left out by a filter
            outcome = "skipped"
        else:
            outcome = result.status
        detail = result.to_json()
        for key in ("src_repo", "dst_repo", "ref", "status", "digest", "bytes", "duration", "error"):
            detail.pop(key, None)
        async with self.service._tx() as conn:
            closed = await q.finish_task(
                conn,
                t,
                ok=result.ok,
                outcome=outcome,
                digest=result.digest,
                nbytes=result.bytes,
                duration=duration,
                error=result.error,
                transient=result.transient if not result.ok else None,
                detail=detail,
                run=run,
            )
            if not result.ok and result.transient and e.trigger == "event":
                await q.set_catchup(conn, policy.id, True)
            if closed is not None:
                await self._publish(conn, closed)
        if closed is not None:
            await self._audit(closed)
        return {"outcome": outcome, "digest": result.digest, "bytes": result.bytes}

    async def _publish(self, conn: Any, e: q.ExecutionRow) -> None:
        if not self.finished.wanted():
            return
        policy = await q.policy_by_id(conn, e.policy_id)
        direction = policy.direction if policy is not None else "push"
        repos = await q.task_repositories(
            conn, e.id, "src" if direction == "push" else "dst", REPOSITORIES_MAX
        )
        pattern = ""
        if policy is not None:
            pattern = policy.source if direction == "push" else (policy.dest_namespace or "")
        await self.finished.publish(
            conn,
            ExecutionFinished(
                e.id, e.policy_name, e.trigger, e.state, e.total, e.succeeded, e.failed, e.bytes,
                e.message,
                remote=policy.remote_name if policy is not None else "",
                direction=direction,
                repositories=tuple(repos),
                pattern=pattern,
                started_at=e.created_at,
                finished_at=e.finished_at,
            ),
        )  # fmt: skip

    async def _audit(self, e: q.ExecutionRow) -> None:
        await self.audit.record(
            AuditEvent(
                "replication.execution",
                actor=e.triggered_by or "system",
                actor_type="system",
                result="success" if e.state == "succeeded" else "failure",
                details={
                    "policy": e.policy_name,
                    "execution": e.id,
                    "trigger": e.trigger,
                    "state": e.state,
                    "total": e.total,
                    "succeeded": e.succeeded,
                    "failed": e.failed,
                    "bytes": e.bytes,
                    **({"message": e.message} if e.message else {}),
                },
            )
        )

    # --- housekeeping ---------------------------------------------------------------------

    async def sweep(self) -> int:
        """Tasks whose job is gone or gave up (its node died on every attempt): recorded as
        failed, so that their execution closes."""
        async with self.ctx.engine.connect() as conn:
            lost = await q.lost_tasks(conn, jobs_table)
        for t in lost:
            async with self.service._tx() as conn:
                closed = await q.finish_task(
                    conn,
                    t,
                    ok=False,
                    outcome="failed",
                    digest=None,
                    nbytes=0,
                    duration=0.0,
                    error=t.error or "its job stopped (the nodes running it died)",
                    transient=True,
                    detail=None,
                )
                if closed is not None:
                    await self._publish(conn, closed)
            if closed is not None:
                await self._audit(closed)
        return len(lost)


async def _config_labels(src: Registry, repo: str, digest: str) -> dict[str, str]:
    import json

    try:
        async with src.open_blob(repo, digest, size=None) as stream:
            data = b""
            async for chunk in stream.chunks():
                data += chunk
                if len(data) > 4 * 1024 * 1024:
                    return {}
        doc = json.loads(data)
    except (ReplicationError, ValueError):
        return {}
    labels = (doc.get("config") or {}).get("Labels") if isinstance(doc, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items()}
