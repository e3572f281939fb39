"""The background jobs every node knows, and their schedules.

Handlers are small: each calls one service. Later features (garbage collection, scans,
replication) register their own kinds here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..audit.log import AuditLog
from ..auth.sessions import SessionStore
from ..auth.throttle import REMEMBER
from ..db import access_queries, job_queries
from ..services.context import ServiceContext
from ..services.uploads import UploadService
from .runner import JobRunner

PURGE_UPLOADS = "uploads.purge_stale"
PRUNE_AUDIT = "audit.prune"
PRUNE_JOBS = "jobs.prune"
PURGE_SESSIONS = "sessions.purge_expired"
PURGE_LOGIN_COUNTERS = "auth.purge_login_counters"
KNOWN_KINDS = frozenset(
    {PURGE_UPLOADS, PRUNE_AUDIT, PRUNE_JOBS, PURGE_SESSIONS, PURGE_LOGIN_COUNTERS}
)


def register_standard_jobs(
    runner: JobRunner,
    ctx: ServiceContext,
    audit: AuditLog | None,
    sessions: SessionStore | None = None,
) -> None:
    config = ctx.config
    uploads = UploadService(ctx)

    async def purge_uploads(payload: dict[str, Any]) -> dict[str, int]:
        idle = timedelta(
            hours=float(payload.get("idle_hours", config.registry.upload_expiry_hours))
        )
        sessions, items = await uploads.purge_abandoned(idle)
        return {"sessions": sessions, "storage_items": items}

    async def prune_jobs(payload: dict[str, Any]) -> dict[str, int]:
        before = datetime.now(UTC) - timedelta(days=config.jobs.keep_finished_days)
        async with ctx.write_engine.begin() as conn:
            return {"deleted": await job_queries.prune_finished(conn, before)}

    runner.register(PURGE_UPLOADS, purge_uploads)
    runner.schedule(PURGE_UPLOADS, timedelta(minutes=15))
    runner.register(PRUNE_JOBS, prune_jobs)
    runner.schedule(PRUNE_JOBS, timedelta(hours=1))

    if audit is not None:
        audit_log = audit

        async def prune_audit(_payload: dict[str, Any]) -> dict[str, int]:
            return {"pruned": await audit_log.prune()}

        runner.register(PRUNE_AUDIT, prune_audit)
        retention = config.audit.retention
        if retention.max_age_days or retention.max_events:
            runner.schedule(PRUNE_AUDIT, timedelta(minutes=10), at_start=True)

    if sessions is not None:
        session_store = sessions

        async def purge_sessions(_payload: dict[str, Any]) -> dict[str, int]:
            # Expired sessions are refused on lookup already; this keeps the table small.
            return {"deleted": await session_store.purge_expired()}

        runner.register(PURGE_SESSIONS, purge_sessions)
        runner.schedule(PURGE_SESSIONS, timedelta(minutes=15))

        async def purge_login_counters(_payload: dict[str, Any]) -> dict[str, int]:
            # Failure counters past their window and old success marks (auth/throttle.py):
            # names an outsider sprays must not fill the table.
            ts = datetime.now(UTC)
            window = timedelta(seconds=config.auth.lockout.window)
            async with ctx.write_engine.begin() as conn:
                purged = await access_queries.purge_counters(conn, ts - window, ts - REMEMBER)
            return {"deleted": purged}

        runner.register(PURGE_LOGIN_COUNTERS, purge_login_counters)
        runner.schedule(PURGE_LOGIN_COUNTERS, timedelta(hours=1))
