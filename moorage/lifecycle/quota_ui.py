"""Web pages of quotas: a "Storage" section on an organization's page (usage, the quota, how
full) for those who may read it (its members, system administrators), with a form for system
administrators to set or remove the quota — the same functions as the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from ..ui.pages import PageGroup, Panel, Visit, denied, quote_path
from ..ui.web import see_other
from . import quota
from .quota_api import may_read


class QuotaPages(PageGroup):
    template_dir = Path(__file__).parent / "templates"
    done = {
        "quota-set": "Quota saved: the next push is checked against it.",
        "quota-removed": "Quota removed.",
    }

    def __init__(self, ui: Any, rt: Any) -> None:
        super().__init__(ui)
        self.rt = rt

    def routes(self) -> list[Route]:
        return [
            Route("/ui/organizations/{org}/quota", self.page(self.set_quota), methods=["POST"]),
        ]

    async def org_panels(self, visit: Visit, org: str) -> list[Panel]:
        async with self.ctx.engine.connect() as conn:
            kind = await quota.namespace_kind(conn, org)
            if kind is None or not await may_read(self.rt, visit.principal, org, kind):
                return []
            q = await quota.get(conn, org)
        percent = (
            min(100, round(100 * q.usage_bytes / q.limit_bytes))
            if q.limit_bytes
            else (100 if q.limit_bytes == 0 else None)
        )
        context = {
            "org": org,
            "usage": quota.human_bytes(q.usage_bytes),
            "usage_bytes": q.usage_bytes,
            "limit": quota.human_bytes(q.limit_bytes) if q.limit_bytes is not None else None,
            "limit_bytes": q.limit_bytes,
            "percent": percent,
            "css": "danger" if (percent or 0) >= 90 else ("warn" if (percent or 0) >= 75 else "ok"),
            "can_set": visit.is_admin,
        }
        return [Panel("Storage", "quota_panel.html", context)]

    async def set_quota(self, visit: Visit) -> Response:
        org = visit.request.path_params["org"]
        if not visit.is_admin:
            raise denied("Only a system administrator may set a quota.")
        raw = visit.form.get("limit", "").strip()

        async def apply() -> quota.Quota:
            limit = None if raw.lower() in ("", "none") else quota.parse_size(raw)
            return await quota.change(
                self.ctx.write_engine, self.rt.audit, org, limit, visit.principal.name, "user"
            )

        state = await self._change(apply())
        done = "quota-removed" if state.limit_bytes is None else "quota-set"
        return see_other(f"/ui/organizations/{quote_path(org)}?done={done}")
