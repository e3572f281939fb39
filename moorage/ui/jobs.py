"""Background jobs of every node, with progress (system administrators)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from ..services.jobs import STATES, JobsView
from .pages import PageGroup, Visit, denied


class JobsPages(PageGroup):
    """The shared job queue: scans, replication, garbage collection, housekeeping."""

    nav = (("jobs", "/ui/jobs", "Jobs"),)
    admin_sections = frozenset({"jobs"})

    def routes(self) -> list[Route]:
        return [Route("/ui/jobs", self.page(self.jobs_page), methods=["GET", "HEAD"])]

    async def jobs_page(self, visit: Visit) -> Response:
        if not visit.is_admin:
            raise denied("Background jobs are for system administrators.")
        qp = visit.request.query_params
        state = qp.get("state", "")
        state = state if state in STATES else ""
        kind = qp.get("kind", "").strip()[:64]
        cursor = qp.get("after") or None
        page = await self._service(
            JobsView(self.ctx).list(visit.caller, state or None, kind or None, cursor, limit=50)
        )
        return self.render(
            visit,
            "jobs.html",
            section="jobs",
            jobs=page.items,
            filters={"state": state, "kind": kind},
            states=STATES,
            next_after=page.next_cursor,
            first_page=cursor is None,
        )
