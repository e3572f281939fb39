"""SQL of the replication capability: remotes, policies, executions and their tasks.

An execution is the sum of its tasks: each task's outcome and the execution's counters change in
one transaction (:func:`finish_task`), and the task that brings ``done`` to ``total`` closes the
execution in that same transaction, so exactly one node does it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.confcache import ConfigCache
from ..db.queries import _aware, insert_ignore, now
from .tables import (
    replication_executions as ex,
)
from .tables import (
    replication_policies as pol,
)
from .tables import (
    replication_remotes as rem,
)
from .tables import (
    replication_site,
)
from .tables import (
    replication_tasks as tk,
)

FINAL = ("succeeded", "failed")


# --- this site --------------------------------------------------------------------------------


async def site_id(conn: AsyncConnection) -> str:
    """This site's id, made on first use (every node of the site then reads the same one)."""
    found = await conn.scalar(sa.select(replication_site.c.site_id).where(replication_site.c.id == 1))
    if found is not None:
        return str(found)
    await insert_ignore(
        conn,
        replication_site,
        {"id": 1, "site_id": uuid.uuid4().hex, "created_at": now()},
        ["id"],
    )
    return str(
        await conn.scalar(sa.select(replication_site.c.site_id).where(replication_site.c.id == 1))
    )


# --- remotes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteRow:
    id: int
    name: str
    url: str
    username: str | None
    secret: str | None
    insecure: bool
    ca_pem: str | None
    site: bool
    peer_site_id: str | None
    description: str
    created_at: datetime
    updated_at: datetime
    checked_at: datetime | None
    check_ok: bool | None
    check_message: str | None


def _remote(r: Any) -> RemoteRow:
    return RemoteRow(
        id=int(r.id),
        name=r.name,
        url=r.url,
        username=r.username,
        secret=r.secret,
        insecure=bool(r.insecure),
        ca_pem=r.ca_pem,
        site=bool(r.site),
        peer_site_id=r.peer_site_id,
        description=r.description or "",
        created_at=_aware(r.created_at) or now(),
        updated_at=_aware(r.updated_at) or now(),
        checked_at=_aware(r.checked_at),
        check_ok=r.check_ok,
        check_message=r.check_message,
    )


async def insert_remote(conn: AsyncConnection, **values: Any) -> int:
    ts = now()
    res = await conn.execute(
        sa.insert(rem).values(created_at=ts, updated_at=ts, **values).returning(rem.c.id)
    )
    return int(res.scalar_one())


async def update_remote(conn: AsyncConnection, remote_id: int, **values: Any) -> None:
    await conn.execute(sa.update(rem).where(rem.c.id == remote_id).values(updated_at=now(), **values))


async def record_check(
    conn: AsyncConnection, remote_id: int, ok: bool, message: str, peer_site: str | None
) -> None:
    values: dict[str, Any] = {"checked_at": now(), "check_ok": ok, "check_message": message[:2000]}
    if peer_site is not None:
        values["peer_site_id"] = peer_site
    await conn.execute(sa.update(rem).where(rem.c.id == remote_id).values(**values))


async def remote_by_name(conn: AsyncConnection, name: str) -> RemoteRow | None:
    r = (await conn.execute(sa.select(rem).where(rem.c.name == name))).first()
    return _remote(r) if r else None


async def remote_by_id(conn: AsyncConnection, remote_id: int) -> RemoteRow | None:
    r = (await conn.execute(sa.select(rem).where(rem.c.id == remote_id))).first()
    return _remote(r) if r else None


async def remotes(conn: AsyncConnection) -> list[RemoteRow]:
    return [_remote(r) for r in await conn.execute(sa.select(rem).order_by(rem.c.name))]


async def delete_remote(conn: AsyncConnection, remote_id: int) -> None:
    await conn.execute(sa.delete(rem).where(rem.c.id == remote_id))


async def site_accounts(conn: AsyncConnection) -> set[str]:
    """Accounts through which other sites replicate into this one (the usernames of the site
    remotes: geo-replication uses one account, the same on every site)."""
    rows = await conn.execute(
        sa.select(rem.c.username).where(rem.c.site.is_(True), rem.c.username.is_not(None))
    )
    return {r[0] for r in rows}


# --- policies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyRow:
    id: int
    name: str
    remote_id: int
    remote_name: str
    direction: str
    source: str
    tags: str | None
    exclude: str | None
    labels: dict[str, str] | None
    artifact_types: list[str] | None
    dest_namespace: str | None
    on_event: bool
    cron: str | None
    cron_last_at: datetime | None
    platforms: list[str] | None
    referrers: bool
    replicate_deletes: bool
    forward_replicated: bool
    bandwidth_limit: int | None
    enabled: bool
    needs_catchup: bool
    description: str
    created_by: str | None
    created_at: datetime
    updated_at: datetime


def _policy(r: Any) -> PolicyRow:
    return PolicyRow(
        id=int(r.id),
        name=r.name,
        remote_id=int(r.remote_id),
        remote_name=r.remote_name,
        direction=r.direction,
        source=r.source,
        tags=r.tags,
        exclude=r.exclude,
        labels=dict(r.labels) if r.labels else None,
        artifact_types=list(r.artifact_types) if r.artifact_types else None,
        dest_namespace=r.dest_namespace,
        on_event=bool(r.on_event),
        cron=r.cron,
        cron_last_at=_aware(r.cron_last_at),
        platforms=list(r.platforms) if r.platforms else None,
        referrers=bool(r.referrers),
        replicate_deletes=bool(r.replicate_deletes),
        forward_replicated=bool(r.forward_replicated),
        bandwidth_limit=int(r.bandwidth_limit) if r.bandwidth_limit else None,
        enabled=bool(r.enabled),
        needs_catchup=bool(r.needs_catchup),
        description=r.description or "",
        created_by=r.created_by,
        created_at=_aware(r.created_at) or now(),
        updated_at=_aware(r.updated_at) or now(),
    )


def _policies() -> Any:
    return sa.select(*pol.c, rem.c.name.label("remote_name")).select_from(
        pol.join(rem, rem.c.id == pol.c.remote_id)
    )


async def insert_policy(conn: AsyncConnection, **values: Any) -> int:
    ts = now()
    res = await conn.execute(
        sa.insert(pol).values(created_at=ts, updated_at=ts, **values).returning(pol.c.id)
    )
    return int(res.scalar_one())


async def update_policy(conn: AsyncConnection, policy_id: int, **values: Any) -> None:
    await conn.execute(sa.update(pol).where(pol.c.id == policy_id).values(updated_at=now(), **values))


async def delete_policy(conn: AsyncConnection, policy_id: int) -> None:
    await conn.execute(sa.delete(pol).where(pol.c.id == policy_id))


async def policy_by_name(conn: AsyncConnection, name: str) -> PolicyRow | None:
    r = (await conn.execute(_policies().where(pol.c.name == name))).first()
    return _policy(r) if r else None


async def policy_by_id(conn: AsyncConnection, policy_id: int) -> PolicyRow | None:
    r = (await conn.execute(_policies().where(pol.c.id == policy_id))).first()
    return _policy(r) if r else None


async def policies(conn: AsyncConnection) -> list[PolicyRow]:
    return [_policy(r) for r in await conn.execute(_policies().order_by(pol.c.name))]


async def policies_using(conn: AsyncConnection, remote_id: int) -> list[str]:
    rows = await conn.execute(sa.select(pol.c.name).where(pol.c.remote_id == remote_id))
    return [r[0] for r in rows]


async def event_policies(conn: AsyncConnection) -> list[PolicyRow]:
    """Enabled push policies triggered by pushes and deletes (read in the push's transaction)."""
    q = _policies().where(pol.c.on_event.is_(True), pol.c.enabled.is_(True))
    return [_policy(r) for r in await conn.execute(q.where(pol.c.direction == "push"))]


async def _event_policies(conn: AsyncConnection, _key: None) -> tuple[PolicyRow, ...]:
    return tuple(await event_policies(conn))


_event_policies_cache = ConfigCache("replication_policies", _event_policies)


async def cached_event_policies(conn: AsyncConnection) -> tuple[PolicyRow, ...]:
    """:func:`event_policies` from this process's cache while the policies table is unchanged
    (moorage/db/confcache.py: exact on every node)."""
    return await _event_policies_cache.get(conn, None)


async def cron_policies(conn: AsyncConnection) -> list[PolicyRow]:
    q = _policies().where(pol.c.cron.is_not(None), pol.c.enabled.is_(True))
    return [_policy(r) for r in await conn.execute(q)]


async def catchup_policies(conn: AsyncConnection) -> list[PolicyRow]:
    q = _policies().where(pol.c.needs_catchup.is_(True), pol.c.enabled.is_(True))
    return [_policy(r) for r in await conn.execute(q)]


async def claim_cron(conn: AsyncConnection, policy_id: int, fired: datetime) -> bool:
    """Record the policy's cron firing at *fired*; False when it was recorded already (one
    execution per firing, whichever node runs the cron job)."""
    res = await conn.execute(
        sa.update(pol)
        .where(
            pol.c.id == policy_id,
            sa.or_(pol.c.cron_last_at.is_(None), pol.c.cron_last_at < fired),
        )
        .values(cron_last_at=fired)
    )
    return bool(res.rowcount)


async def set_catchup(conn: AsyncConnection, policy_id: int, value: bool) -> bool:
    res = await conn.execute(
        sa.update(pol)
        .where(pol.c.id == policy_id, pol.c.needs_catchup.is_(not value))
        .values(needs_catchup=value)
    )
    return bool(res.rowcount)


# --- executions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    id: int
    policy_id: int
    policy_name: str
    trigger: str
    triggered_by: str | None
    state: str
    total: int
    done: int
    succeeded: int
    failed: int
    bytes: int
    message: str | None
    created_at: datetime
    finished_at: datetime | None


def _execution(r: Any) -> ExecutionRow:
    return ExecutionRow(
        id=int(r.id),
        policy_id=int(r.policy_id),
        policy_name=r.policy_name,
        trigger=r.trigger,
        triggered_by=r.triggered_by,
        state=r.state,
        total=int(r.total),
        done=int(r.done),
        succeeded=int(r.succeeded),
        failed=int(r.failed),
        bytes=int(r.bytes),
        message=r.message,
        created_at=_aware(r.created_at) or now(),
        finished_at=_aware(r.finished_at),
    )


def _executions() -> Any:
    return sa.select(*ex.c, pol.c.name.label("policy_name")).select_from(
        ex.join(pol, pol.c.id == ex.c.policy_id)
    )


async def insert_execution(
    conn: AsyncConnection, policy_id: int, trigger: str, by: str | None, state: str = "planning"
) -> int:
    res = await conn.execute(
        sa.insert(ex)
        .values(
            policy_id=policy_id,
            trigger=trigger,
            triggered_by=by,
            state=state,
            created_at=now(),
        )
        .returning(ex.c.id)
    )
    return int(res.scalar_one())


async def execution(conn: AsyncConnection, execution_id: int) -> ExecutionRow | None:
    r = (await conn.execute(_executions().where(ex.c.id == execution_id))).first()
    return _execution(r) if r else None


async def executions(
    conn: AsyncConnection, policy_id: int, limit: int = 50, before_id: int | None = None
) -> list[ExecutionRow]:
    q = _executions().where(ex.c.policy_id == policy_id)
    if before_id is not None:
        q = q.where(ex.c.id < before_id)
    return [_execution(r) for r in await conn.execute(q.order_by(ex.c.id.desc()).limit(limit))]


async def open_event_execution(conn: AsyncConnection, policy_id: int) -> int | None:
    """A running event execution of the policy that more event tasks may join."""
    q = (
        sa.select(ex.c.id)
        .where(ex.c.policy_id == policy_id, ex.c.trigger == "event", ex.c.state == "running")
        .order_by(ex.c.id.desc())
        .limit(1)
    )
    found = await conn.scalar(q)
    return int(found) if found is not None else None


async def grow_execution(conn: AsyncConnection, execution_id: int, more: int) -> bool:
    """Add *more* tasks to a running execution; False when it closed meanwhile."""
    res = await conn.execute(
        sa.update(ex)
        .where(ex.c.id == execution_id, ex.c.state == "running")
        .values(total=ex.c.total + more)
    )
    return bool(res.rowcount)


async def planned(conn: AsyncConnection, execution_id: int, total: int, message: str | None) -> None:
    """Planning done: *total* tasks (none: the execution succeeded at once)."""
    values: dict[str, Any] = {"total": total, "message": message}
    if total == 0:
        values.update(state="succeeded", finished_at=now())
    else:
        values["state"] = "running"
    await conn.execute(
        sa.update(ex).where(ex.c.id == execution_id, ex.c.state == "planning").values(**values)
    )


async def fail_execution(conn: AsyncConnection, execution_id: int, message: str) -> bool:
    res = await conn.execute(
        sa.update(ex)
        .where(ex.c.id == execution_id, ex.c.state == "planning")
        .values(state="failed", message=message[:4000], finished_at=now())
    )
    return bool(res.rowcount)


# --- tasks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: int
    execution_id: int
    operation: str
    src_repo: str
    dst_repo: str
    ref: str
    expect_digest: str | None
    state: str
    outcome: str | None
    digest: str | None
    bytes: int
    duration: float
    attempts: int
    error: str | None
    transient: bool | None
    detail: dict[str, Any] | None
    job_id: int | None
    node: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def _replace_state(self, state: str) -> TaskRow:
        return replace(self, state=state)


def _task(r: Any) -> TaskRow:
    return TaskRow(
        id=int(r.id),
        execution_id=int(r.execution_id),
        operation=r.operation,
        src_repo=r.src_repo,
        dst_repo=r.dst_repo,
        ref=r.ref,
        expect_digest=r.expect_digest,
        state=r.state,
        outcome=r.outcome,
        digest=r.digest,
        bytes=int(r.bytes or 0),
        duration=float(r.duration or 0),
        attempts=int(r.attempts or 0),
        error=r.error,
        transient=r.transient,
        detail=dict(r.detail) if r.detail else None,
        job_id=int(r.job_id) if r.job_id is not None else None,
        node=r.node,
        created_at=_aware(r.created_at) or now(),
        started_at=_aware(r.started_at),
        finished_at=_aware(r.finished_at),
    )


async def insert_task(
    conn: AsyncConnection,
    execution_id: int,
    operation: str,
    src_repo: str,
    dst_repo: str,
    ref: str,
    expect_digest: str | None = None,
) -> int:
    res = await conn.execute(
        sa.insert(tk)
        .values(
            execution_id=execution_id,
            operation=operation,
            src_repo=src_repo,
            dst_repo=dst_repo,
            ref=ref,
            expect_digest=expect_digest,
            state="queued",
            created_at=now(),
        )
        .returning(tk.c.id)
    )
    return int(res.scalar_one())


async def set_task_job(conn: AsyncConnection, task_id: int, job_id: int | None) -> None:
    await conn.execute(sa.update(tk).where(tk.c.id == task_id).values(job_id=job_id))


async def queued_task(
    conn: AsyncConnection, execution_id: int, operation: str, src_repo: str, ref: str
) -> bool:
    """A task for the same thing that has not started yet (it will see the latest state)."""
    q = sa.select(tk.c.id).where(
        tk.c.execution_id == execution_id,
        tk.c.operation == operation,
        tk.c.src_repo == src_repo,
        tk.c.ref == ref,
        tk.c.state == "queued",
    )
    return await conn.scalar(q.limit(1)) is not None


async def task(conn: AsyncConnection, task_id: int) -> TaskRow | None:
    r = (await conn.execute(sa.select(tk).where(tk.c.id == task_id))).first()
    return _task(r) if r else None


async def tasks(
    conn: AsyncConnection, execution_id: int, limit: int = 10_000
) -> list[TaskRow]:
    """An execution's tasks; one not recorded yet whose job runs shows as ``running``."""
    from ..db.schema import jobs

    shown = sa.case(
        (sa.and_(tk.c.state.not_in(FINAL), jobs.c.state == "running"), "running"),
        else_=tk.c.state,
    ).label("shown_state")
    q = (
        sa.select(*tk.c, shown)
        .select_from(tk.outerjoin(jobs, jobs.c.id == tk.c.job_id))
        .where(tk.c.execution_id == execution_id)
    )
    out = []
    for r in await conn.execute(q.order_by(tk.c.id).limit(limit)):
        out.append(_task(r)._replace_state(r.shown_state))
    return out


async def task_repositories(
    conn: AsyncConnection, execution_id: int, local: str, limit: int
) -> list[str]:
    """The distinct repositories of an execution's tasks on this side (*local*: ``src`` for a
    push, ``dst`` for a pull), at most *limit*."""
    col = tk.c.src_repo if local == "src" else tk.c.dst_repo
    rows = await conn.execute(
        sa.select(col).where(tk.c.execution_id == execution_id).distinct().order_by(col).limit(limit)
    )
    return [str(r[0]) for r in rows]


async def retry_task(conn: AsyncConnection, t: TaskRow, error: str, run: TaskRun) -> None:
    await conn.execute(
        sa.update(tk)
        .where(tk.c.id == t.id, tk.c.state.not_in(FINAL))
        .values(state="retrying", error=error[:4000], transient=True, **run.values())
    )


@dataclass(frozen=True, slots=True)
class TaskRun:
    """This attempt at a task: written with its outcome (no write when it starts: whether it
    runs now is the job's state, joined in by :func:`tasks`)."""

    attempt: int
    node: str
    started_at: datetime

    def values(self) -> dict[str, Any]:
        return {
            "attempts": self.attempt,
            "node": self.node[:128],
            "started_at": sa.func.coalesce(tk.c.started_at, self.started_at),
        }


async def finish_task(
    conn: AsyncConnection,
    t: TaskRow,
    *,
    ok: bool,
    outcome: str,
    digest: str | None,
    nbytes: int,
    duration: float,
    error: str | None,
    transient: bool | None,
    detail: dict[str, Any] | None,
    run: TaskRun | None = None,
) -> ExecutionRow | None:
    """Record a task's final outcome and add it to its execution; returns the execution when
    this task closed it (the caller records the audit event and calls the hooks), else None."""
    res = await conn.execute(
        sa.update(tk)
        .where(tk.c.id == t.id, tk.c.state.not_in(FINAL))
        .values(
            state="succeeded" if ok else "failed",
            outcome=outcome,
            digest=digest,
            bytes=nbytes,
            duration=duration,
            error=error[:4000] if error else None,
            transient=transient,
            detail=detail,
            finished_at=now(),
            **(run.values() if run is not None else {}),
        )
    )
    if not res.rowcount:
        return None  # another node recorded it first
    await conn.execute(
        sa.update(ex)
        .where(ex.c.id == t.execution_id)
        .values(
            done=ex.c.done + 1,
            succeeded=ex.c.succeeded + (1 if ok else 0),
            failed=ex.c.failed + (0 if ok else 1),
            bytes=ex.c.bytes + nbytes,
        )
    )
    res = await conn.execute(
        sa.update(ex)
        .where(ex.c.id == t.execution_id, ex.c.state == "running", ex.c.done >= ex.c.total)
        .values(
            state=sa.case(
                (ex.c.failed == 0, "succeeded"),
                (ex.c.succeeded == 0, "failed"),
                else_="partial",
            ),
            finished_at=now(),
        )
    )
    if not res.rowcount:
        return None
    return await execution(conn, t.execution_id)


async def failed_transient_tasks(
    conn: AsyncConnection, policy_id: int, since: datetime | None
) -> list[TaskRow]:
    """Tasks of the policy that failed because the peer was away (what a catch-up re-runs)."""
    q = (
        sa.select(tk)
        .select_from(tk.join(ex, ex.c.id == tk.c.execution_id))
        .where(ex.c.policy_id == policy_id, tk.c.state == "failed", tk.c.transient.is_(True))
    )
    if since is not None:
        q = q.where(tk.c.finished_at >= since)
    return [_task(r) for r in await conn.execute(q.order_by(tk.c.id).limit(10_000))]


async def lost_tasks(conn: AsyncConnection, job_table: sa.Table) -> list[TaskRow]:
    """Tasks not final whose job is gone or failed (its attempts used up by node deaths)."""
    jobs = job_table
    q = (
        sa.select(tk)
        .select_from(tk.outerjoin(jobs, jobs.c.id == tk.c.job_id))
        .where(
            tk.c.state.not_in(FINAL),
            tk.c.job_id.is_not(None),
            sa.or_(jobs.c.id.is_(None), jobs.c.state.in_(("failed", "succeeded"))),
        )
        .limit(1000)
    )
    return [_task(r) for r in await conn.execute(q)]
