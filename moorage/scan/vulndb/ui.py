"""The vulnerability-data page: what is imported, from where, when, and the pull policies."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.routing import Route

from ...ui.pages import PageGroup, Visit
from .service import VulnDB

HERE = Path(__file__).parent


class VulnDBPages(PageGroup):
    nav = (("vulndb", "/ui/vulndb", "Vulnerability data"),)
    template_dir = HERE / "templates"

    def __init__(self, ui: object, vulndb: VulnDB) -> None:
        super().__init__(ui)  # type: ignore[arg-type]
        self.vulndb = vulndb

    def routes(self) -> list[Route]:
        return [Route("/ui/vulndb", self.page(self.status_page), methods=["GET", "HEAD"])]

    async def status_page(self, visit: Visit) -> Response:
        status = await self.vulndb.status()
        p = visit.principal
        is_admin = p.kind == "user" and p.is_admin
        policies = await self.vulndb.policies() if is_admin else []
        return self.render(
            visit, "vulndb.html", section="vulndb", db=status, policies=policies, admin=is_admin
        )
