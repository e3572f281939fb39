"""What every page of the web UI shares: the visit (who, session, form), page errors, and
:class:`PageGroup`, the base of each area's pages (dashboard, repositories, organizations, users,
robots, audit — and each capability's own pages, in its own package).

A page group lists its routes, its navigation entries and the confirmation messages its
redirects may ask for; the WebUI (ui/app.py) mounts the groups, wraps each handler with
authentication and CSRF checks (``page``) and renders templates. Templates are looked up in
ui/templates and in each group's own ``templates`` directory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.service import Principal
from ..auth.sessions import Session
from ..services.management import Caller

if TYPE_CHECKING:
    from .app import WebUI

T = TypeVar("T")


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def not_found(what: str = "This page does not exist.") -> PageError:
    return PageError(404, "Not found", what)


def denied(what: str = "You do not have access to this page.") -> PageError:
    return PageError(403, "Not allowed", what)


@dataclass
class Visit:
    """One request: who, their session, and the posted form (for POST). An anonymous visitor
    of a public page has the anonymous principal and no session."""

    request: Request
    principal: Principal
    session: Session | None
    form: dict[str, str] = field(default_factory=dict)

    @property
    def caller(self) -> Caller:
        """The principal with its address, for the services' audit records."""
        client = self.request.client.host if self.request.client else None
        session = self.session.id if self.session is not None else None
        return Caller(self.principal, client, self.request.headers.get("user-agent"), session)

    @property
    def is_admin(self) -> bool:
        return self.principal.kind == "user" and self.principal.is_admin


Handler = Callable[[Visit], Awaitable[Response]]


@dataclass(frozen=True)
class Cell:
    """One cell a capability adds to a core table (text, optional link and CSS class)."""

    text: str
    href: str | None = None
    css: str = ""
    title: str = ""


@dataclass(frozen=True)
class TagColumn:
    """A column of the repository page's tag table: a cell per manifest digest."""

    title: str
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Panel:
    """A section of the image page, rendered from the capability's template with
    ``panel`` (the context) in scope."""

    title: str
    template: str
    context: dict[str, Any]


def login_for(request: Request) -> str:
    """The login form, returning to *request*'s page afterwards (``/`` needs no ``next``)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return "/login" if target == "/" else "/login?next=" + quote_path(target)


def permission_subject(
    form: dict[str, str], org: str | None = None
) -> tuple[str | None, str | None]:
    """(user, team) named by a permission form; a bare team name is in *org*."""
    subject = form.get("subject", "").strip()
    if form.get("kind") == "team":
        if org is not None and "/" not in subject:
            subject = f"{org}/{subject}"
        return None, subject
    return subject, None


def path_op(visit: Visit, *allowed: str) -> str:
    op = str(visit.request.path_params["op"])
    if op not in allowed:
        raise not_found()
    return op


def done_key(op: str) -> str:
    return "granted" if op == "grant" else "revoked"


def quote_path(path: str) -> str:
    return quote(path, safe="/")


class PageGroup:
    """The pages of one area. Subclasses set ``nav`` (main navigation entries: section, link,
    label), ``admin_sections`` (sections only system administrators are offered), ``done``
    (``?done=key`` → fixed confirmation text: a link cannot make the UI say anything an attacker
    wants) and ``template_dir`` (a capability's own templates), and return their routes from
    ``routes()``, each handler wrapped with ``self.page(...)``."""

    nav: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    admin_sections: ClassVar[frozenset[str]] = frozenset()
    done: ClassVar[dict[str, str]] = {}
    template_dir: ClassVar[Path | None] = None

    def __init__(self, ui: WebUI) -> None:
        self.ui = ui
        self.ctx = ui.ctx
        self.access = ui.access
        self.catalog = ui.catalog
        self.management = ui.management

    def routes(self) -> list[Route]:
        raise NotImplementedError

    async def tag_columns(self, visit: Visit, repository: str, digests: list[str]) -> list[TagColumn]:
        """Columns this group adds to the repository page's tag table (e.g. a trust verdict)."""
        return []

    async def image_panels(self, visit: Visit, repository: str, digest: str) -> list[Panel]:
        """Sections this group adds to the image page (e.g. its signatures)."""
        return []

    async def organization_panels(self, visit: Visit, org: str) -> list[Panel]:
        """Sections this group adds to an organization's page (e.g. its storage quota)."""
        return []

    def page(
        self, handler: Handler, public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        return self.ui.page(handler, public)

    def render(
        self, visit: Visit | None, template: str, status: int = 200, **context: Any
    ) -> Response:
        return self.ui.render(visit, template, status, **context)

    def host(self, request: Request) -> str:
        return self.ui.host(request)

    async def _service(self, call: Awaitable[T], *, reading: bool = True) -> T:
        return await self.ui.service_call(call, reading=reading)

    async def _change(self, call: Awaitable[T]) -> T:
        return await self.ui.service_call(call, reading=False)
