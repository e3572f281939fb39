"""When executions start by themselves: on push and delete events, on cron schedules, and to
catch up with a remote that was away.

Event subscribers run inside the push's (or delete's) transaction and only write rows — a task
and its job, joined to the policy's open event execution — so a push that rolls back replicates
nothing and a push acknowledged to its client always has its replication queued (the outbox
pattern). They never call the network.

Loops: a change made by replication itself — written here by a pull policy (actor
``replication:<policy>``) or pushed here by another site's account (the username of a ``site``
remote; geo-replication uses one account on every site) — is not sent on by event triggers
unless the policy sets ``forward_replicated``. Two sites replicating to each other thus copy each
change once, never back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import job_queries
from ..db.queries import now
from ..jobs.runner import JobRunner
from ..services.events import ManifestDeleted, ManifestPushed, TagDeleted
from ..services.rules import ManifestWrite, Rule
from . import filters
from . import queries as q
from .errors import ReplicationError
from .jobs import TAG_JOB_ATTEMPTS, Executor
from .service import TAG_JOB, ReplicationService

log = logging.getLogger("moorage.replication")
CRON_JOB = "replication.cron"
CATCHUP_JOB = "replication.catchup"
REPLICATION_ACTOR = "replication:"


class EventTriggers:
    def __init__(self, service: ReplicationService, runner: JobRunner) -> None:
        self.service = service
        self.runner = runner

    async def _replicated(self, conn: AsyncConnection, actor: str | None) -> bool:
        if not actor:
            return False
        if actor.startswith(REPLICATION_ACTOR):
            return True
        return actor in await q.site_accounts(conn)

    async def _policies(self, conn: AsyncConnection, repo: str, actor: str | None) -> list[Any]:
        found = await q.cached_event_policies(conn)
        if not found:
            return []
        replicated = await self._replicated(conn, actor)
        return [
            p
            for p in found
            if (not replicated or p.forward_replicated)
            and filters.matches(p.source, repo)
            and not filters.excluded_repository(p.exclude, repo)
        ]

    async def _add(
        self,
        conn: AsyncConnection,
        policy: Any,
        actor: str | None,
        operation: str,
        repo: str,
        ref: str,
        expect: str | None = None,
    ) -> None:
        execution_id = await q.open_event_execution(conn, policy.id)
        if execution_id is not None and await q.queued_task(
            conn, execution_id, operation, repo, ref
        ):
            return  # a task for it has not started yet: it will copy the latest state
        if execution_id is None or not await q.grow_execution(conn, execution_id, 1):
            execution_id = await q.insert_execution(conn, policy.id, "event", actor, "running")
            await q.grow_execution(conn, execution_id, 1)
        dst = filters.destination(repo, policy.dest_namespace)
        task_id = await q.insert_task(conn, execution_id, operation, repo, dst, ref, expect)
        job_id = await job_queries.enqueue(
            conn, TAG_JOB, {"task": task_id}, max_attempts=TAG_JOB_ATTEMPTS
        )
        await q.set_task_job(conn, task_id, job_id)
        self._wake_soon()

    def _wake_soon(self) -> None:
        # The job row is visible once the push commits, just after this returns.
        try:
            asyncio.get_running_loop().call_later(0.1, self.runner.wake)
        except RuntimeError:
            pass

    @staticmethod
    def _wanted_tag(policy: Any, tag: str) -> bool:
        return filters.matches(policy.tags, tag) and not filters.excluded_tag(policy.exclude, tag)

    async def manifest_pushed(self, conn: AsyncConnection, ev: ManifestPushed) -> None:
        refs: list[tuple[str, bool]] = []  # (ref, is an image tag the tag filter applies to)
        for tag in ev.tags:
            subject = filters.attached_subject(tag)
            refs.append((subject, False) if subject else (tag, True))
        if ev.subject and not ev.tags:
            refs.append((ev.subject, False))  # a referrer: sync its subject's referrers
        if not refs:
            return  # an index child or untagged content: comes with what references it
        for policy in await self._policies(conn, ev.repository, ev.actor):
            for ref, is_tag in refs:
                if is_tag and not self._wanted_tag(policy, ref):
                    continue
                if not is_tag and not policy.referrers:
                    continue
                await self._add(conn, policy, ev.actor, "copy", ev.repository, ref)

    async def tag_deleted(self, conn: AsyncConnection, ev: TagDeleted) -> None:
        if filters.attached_tag(ev.tag):
            return
        for policy in await self._policies(conn, ev.repository, ev.actor):
            if policy.replicate_deletes and self._wanted_tag(policy, ev.tag):
                await self._add(conn, policy, ev.actor, "delete", ev.repository, ev.tag, ev.digest)

    async def manifest_deleted(self, conn: AsyncConnection, ev: ManifestDeleted) -> None:
        for policy in await self._policies(conn, ev.repository, ev.actor):
            if policy.replicate_deletes:
                await self._add(conn, policy, ev.actor, "delete", ev.repository, ev.digest)


class Schedules:
    """The periodic jobs: cron triggers, catch-up runs, lost tasks."""

    def __init__(self, service: ReplicationService, executor: Executor) -> None:
        self.service = service
        self.executor = executor

    async def cron(self, _payload: dict[str, Any]) -> dict[str, Any]:
        started = []
        at = now()
        async with self.service.ctx.engine.connect() as conn:
            found = await q.cron_policies(conn)
        for p in found:
            assert p.cron is not None
            last = p.cron_last_at or p.created_at
            fired = filters.cron_due(p.cron, last, at)
            if fired is None:
                continue
            async with self.service._tx() as conn:
                if await q.claim_cron(conn, p.id, fired):
                    await self.service.start(p.name, "cron", f"cron:{p.cron}", conn)
                    started.append(p.name)
        if started:
            self.executor.runner.wake()
        return {"started": started}

    async def catchup(self, _payload: dict[str, Any]) -> dict[str, Any]:
        """Policies whose event tasks failed while their remote was away: once it answers
        again, a catch-up execution copies everything (and re-runs the failed deletes)."""
        swept = await self.executor.sweep()
        started = []
        async with self.service.ctx.engine.connect() as conn:
            found = await q.catchup_policies(conn)
        for p in found:
            async with self.service.ctx.engine.connect() as conn:
                remote = await q.remote_by_id(conn, p.remote_id)
            if remote is None:
                continue
            try:
                async with self.service.client(remote) as client:
                    ping = await client.ping()
                if not ping.authenticated:
                    continue
            except ReplicationError as exc:
                log.info("catch-up of %s waits: remote %s: %s", p.name, remote.name, exc)
                continue
            async with self.service._tx() as conn:
                if await q.set_catchup(conn, p.id, False):
                    await self.service.start(p.name, "catch-up", "system", conn)
                    started.append(p.name)
        if started:
            self.executor.runner.wake()
        return {"started": started, "lost_tasks": swept}


class SparseIndexRule(Rule):
    """Accepts an index without all its children when replication writes it: a pull policy
    with a platform filter (requester ``replication:<policy>``), or another site's account
    pushing here (its policy chose the platforms). Everyone else still gets
    ``MANIFEST_BLOB_UNKNOWN`` for a missing child."""

    name = "replication-sparse-index"
    order = 5

    async def sparse_index(
        self, conn: AsyncConnection, write: ManifestWrite, missing: tuple[str, ...]
    ) -> bool:
        who = write.requester
        if who.kind == "system" and who.name.startswith(REPLICATION_ACTOR):
            policy = await q.policy_by_name(conn, who.name[len(REPLICATION_ACTOR) :])
            return policy is not None and bool(policy.platforms)
        return who.name in await q.site_accounts(conn)
