"""The shared job queue as operators see it (REST API and web UI; ``moorage jobs`` reads the
same table): every node's background work, with progress, for system administrators."""

from __future__ import annotations

from typing import Any

from ..db import job_queries as jq
from .catalog import check_limit, decode_cursor, page_of
from .context import ServiceContext
from .errors import Denied, Invalid, Missing
from .management.base import Caller
from .models import Job, JobProgress, Page

STATES = ("queued", "running", "succeeded", "failed")


def job_model(j: jq.JobRow) -> Job:
    progress = None
    if j.progress:
        progress = JobProgress(
            done=int(j.progress.get("done") or 0),
            total=j.progress.get("total"),
            message=str(j.progress.get("message") or ""),
        )
    return Job(
        id=j.id,
        kind=j.kind,
        state=j.state,
        attempts=j.attempts,
        max_attempts=j.max_attempts,
        node=j.claimed_by,
        created_at=j.created_at,
        run_after=j.run_after,
        heartbeat_at=j.heartbeat_at,
        finished_at=j.finished_at,
        progress=progress,
        result=j.result,
        error=j.last_error,
        payload=j.payload,
    )


class JobsView:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @staticmethod
    def _admin(c: Caller) -> None:
        p = c.principal
        if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
            raise Denied("system administrators only")
        if not p.may_use_api(write=False):
            raise Denied("this token lacks the api:read scope")

    async def list(
        self,
        c: Caller,
        state: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Job]:
        self._admin(c)
        n = check_limit(limit)
        if state is not None and state not in STATES:
            raise Invalid("state", f"state is one of {', '.join(STATES)}")
        if kind is not None and len(kind) > 64:
            raise Invalid("kind", "kind is at most 64 characters")
        after = decode_cursor(cursor)
        if after is not None and not (after.isdecimal() and len(after) <= 18):
            raise Invalid("cursor", "cursor is not one this server issued")
        async with self.ctx.engine.connect() as conn:
            rows = await jq.list_jobs(
                conn, state=state, kind=kind, limit=n + 1, before_id=int(after) if after else None
            )
        items, nxt = page_of(rows, [str(r.id) for r in rows], n)
        return Page[Job](items=[job_model(r) for r in items], next_cursor=nxt)

    async def get(self, c: Caller, job_id: Any) -> Job:
        self._admin(c)
        if not isinstance(job_id, int) or not 0 < job_id < 2**62:
            raise Invalid("job_id", "job_id is a positive integer")
        async with self.ctx.engine.connect() as conn:
            row = await jq.get_job(conn, job_id)
        if row is None:
            raise Missing(f"no job {job_id}")
        return job_model(row)
