"""The pull-through caches page (system administrators): each cache organization with its
upstream and usage, and a form to add one (what ``moorage admin create-org --mirror-of`` does)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Route

from ..ui.pages import PageError, PageGroup, Visit, denied
from ..ui.web import see_other
from .admin import MirrorAdmin
from .models_api import CacheCreate

if TYPE_CHECKING:
    from ..ui.app import WebUI


def _int(raw: str, what: str, default: int | None = None) -> int | None:
    raw = raw.strip()
    if not raw:
        return default
    if not raw.isdecimal() or len(raw) > 18:
        raise PageError(400, "Not saved", f"{what} is a whole number.")
    return int(raw)


class MirrorPages(PageGroup):
    nav = (("mirror", "/ui/mirror", "Caches"),)
    admin_sections = frozenset({"mirror"})
    done = {"cache-added": "Cache organization created."}
    template_dir: ClassVar[Path | None] = Path(__file__).parent / "templates"

    def __init__(self, ui: WebUI, admin: MirrorAdmin) -> None:
        super().__init__(ui)
        self.admin = admin

    def routes(self) -> list[Route]:
        return [
            Route("/ui/mirror", self.page(self.overview), methods=["GET", "HEAD"]),
            Route("/ui/mirror", self.page(self.add), methods=["POST"]),
        ]

    async def overview(self, visit: Visit) -> Response:
        if not visit.is_admin:
            raise denied("Pull-through caches are for system administrators.")
        caches = await self._service(self.admin.caches(visit.caller, usage=True))
        return self.render(visit, "mirror.html", section="mirror", caches=caches)

    async def add(self, visit: Visit) -> Response:
        if not visit.is_admin:
            raise denied("Pull-through caches are for system administrators.")
        f = visit.form
        platforms = [p.strip() for p in f.get("platforms", "").split(",") if p.strip()]
        try:
            spec = self._spec(f, platforms)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ()))
            raise PageError(400, "Not saved", f"{where}: {err.get('msg', 'invalid')}") from None
        await self._change(self.admin.create(visit.caller, spec))
        return see_other("/ui/mirror?done=cache-added")

    @staticmethod
    def _spec(f: Any, platforms: list[str]) -> CacheCreate:
        return CacheCreate(
            name=f.get("name", "").strip()[:255],
            url=f.get("url", "").strip()[:500],
            username=f.get("username", "").strip()[:255] or None,
            password=(f.get("password") or None),
            insecure=f.get("insecure") == "on",
            platforms=platforms[:32] or None,
            staleness_seconds=_int(f.get("staleness", ""), "Staleness", 300) or 0,
            evict_after_days=_int(f.get("evict_after_days", ""), "Evict after days"),
            max_bytes=_int(f.get("max_bytes", ""), "Size cap"),
        )
