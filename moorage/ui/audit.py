"""The audit log viewer (system administrators)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response
from starlette.routing import Route

from ..audit.store import query_events
from .pages import (
    PageGroup,
    Visit,
    denied,
)


class AuditPages(PageGroup):
    """The audit log with filters and export links."""

    nav = (("audit", "/ui/audit", "Audit"),)
    admin_sections = frozenset({"audit"})

    def routes(self) -> list[Route]:
        get = ["GET", "HEAD"]
        return [
            Route("/ui/audit", self.page(self.audit_page), methods=get),
        ]

    async def audit_page(self, visit: Visit) -> Response:
        if not visit.is_admin:
            raise denied("The audit log is for system administrators.")
        qp = visit.request.query_params
        filters = {k: qp.get(k, "").strip()[:200] for k in ("actor", "action", "repository")}
        result = qp.get("result", "")
        result = result if result in ("success", "partial", "failure", "denied") else ""
        since, until = _form_time(qp.get("since")), _form_time(qp.get("until"))
        try:
            cursor = int(qp["cursor"]) if qp.get("cursor") else None
        except ValueError:
            cursor = None
        if cursor is not None and not 0 <= cursor <= 2**62:  # as the API's AuditQuery
            cursor = None  # beyond a database integer: an OverflowError, a 500
        page = await query_events(
            self.ctx.engine,
            actor=filters["actor"] or None,
            action=filters["action"] or None,
            repository=filters["repository"] or None,
            result=result or None,
            since=since,
            until=until,
            cursor=cursor,
            limit=50,
        )
        params = {
            **filters,
            "result": result,
            "since": since.isoformat() if since else "",
            "until": until.isoformat() if until else "",
        }
        return self.render(
            visit,
            "audit.html",
            section="audit",
            events=page.events,
            next_cursor=page.next_cursor,
            filters={
                **filters,
                "result": result,
                "since": _input_time(since),
                "until": _input_time(until),
            },
            params=params,
            first_page=cursor is None,
        )


def _form_time(raw: str | None) -> datetime | None:
    """A ``datetime-local`` form value (or ISO 8601 time), read as UTC."""
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _input_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M") if value else ""
