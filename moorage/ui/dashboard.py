"""The dashboard: storage per namespace, activity, largest repositories."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .charts import bar_chart, line_chart
from .pages import (
    PageGroup,
    Visit,
)
from .web import (
    human_size,
    see_other,
)


class DashboardPages(PageGroup):
    """The dashboard (``/``)."""

    nav = (("dashboard", "/", "Dashboard"),)

    def routes(self) -> list[Route]:
        get = ["GET", "HEAD"]
        return [
            Route("/", self.page(self.dashboard), methods=get),
            Route("/ui", self.to_dashboard, methods=get),
            Route("/ui/", self.to_dashboard, methods=get),
        ]

    async def to_dashboard(self, request: Request) -> Response:
        return see_other("/")

    async def dashboard(self, visit: Visit) -> Response:
        p = visit.principal
        board = await self.catalog.dashboard(p)
        days = [d.day for d in board.activity]
        activity = line_chart(
            days,
            [
                ("push", [d.pushes for d in board.activity]),
                ("pull", [d.pulls for d in board.activity]),
            ],
            width=1000,
            height=220,
        )
        storage = bar_chart(
            [
                (ns.namespace, ns.size, _namespace_link(ns.namespace))
                for ns in board.storage_per_namespace[:10]
            ],
            human_size,
        )
        largest = bar_chart(
            [(r.name, r.size, "/ui/repositories/" + r.name) for r in board.largest_repositories],
            human_size,
        )
        stats: list[tuple[str, int | str]] = []
        if visit.is_admin:  # system-wide figures; the charts above are the caller's own scope
            info = await self.catalog.system_info()
            counts = info.counts
            stats = [
                ("repositories", counts.get("repositories", 0)),
                ("tags", counts.get("tags", 0)),
                ("storage used", human_size(info.storage_used)),
                ("organizations", counts.get("organizations", 0)),
                ("users", counts.get("users", 0)),
            ]
        return self.render(
            visit,
            "dashboard.html",
            section="dashboard",
            stats=stats,
            activity=activity,
            storage=storage,
            largest=largest,
            host=self.host(visit.request),
        )


def _namespace_link(namespace: str) -> str | None:
    if namespace.startswith("("):  # "(top level)": repositories without a namespace
        return None
    return "/ui/repositories?" + urlencode({"namespace": namespace})
