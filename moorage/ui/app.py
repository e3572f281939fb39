"""The web UI's routes: ``/``, ``/login``, ``/logout``, ``/ui/...`` and ``/static/ui/...``.

Pages are authenticated by the session cookie only (``moorage.auth.sessions``): a browser may
also hold Basic credentials for this origin and would attach them to a forged cross-site post,
so the UI never accepts an ``Authorization`` header as a login. Every POST carries the session's
CSRF token (the login form a signed double-submit token). Reads and writes go through the same
services as the REST API, so the access rules live in one place.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from .. import __version__
from ..auth.resolver import CSRFRejected, PrincipalResolver, Resolved
from ..auth.service import ANONYMOUS, AccessService, AuthFailed, LockedOut
from ..auth.service import Unavailable as AuthUnavailable
from ..auth.sessions import (
    SESSION_COOKIE,
    SessionStore,
    clear_session_cookie,
    set_session_cookie,
)
from ..db import access_queries as aq
from ..logs import request_id
from ..proxies import external_origin
from ..services.catalog import CatalogService
from ..services.context import ServiceContext
from ..services.errors import Conflict, Denied, Invalid, Missing
from ..services.management import ManagementService
from .audit import AuditPages
from .dashboard import DashboardPages
from .jobs import JobsPages
from .organizations import OrganizationPages
from .pages import Handler, PageError, PageGroup, Visit, denied, login_for, not_found
from .repositories import RepositoryPages
from .robots import RobotPages
from .users import UserPages
from .web import (
    HERE,
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    FormError,
    LoginCSRF,
    StaticFiles,
    html,
    make_templates,
    read_form,
    see_other,
)

if TYPE_CHECKING:
    from ..auth.oidc import OIDCClient
    from .oidc import OIDCLogin

log = logging.getLogger("moorage.ui")
T = TypeVar("T")
# Confirmation messages of the plumbing's own redirects; each page group adds its own.
DONE: dict[str, str] = {}
CORE_GROUPS: tuple[type[PageGroup], ...] = (
    DashboardPages,
    RepositoryPages,
    OrganizationPages,
    UserPages,
    RobotPages,
    AuditPages,
    JobsPages,
)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only our own pages, never another origin."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if target == "/" or target.startswith("/ui/"):
        return target
    return "/"


class WebUI:
    def __init__(
        self,
        ctx: ServiceContext,
        access: AccessService,
        sessions: SessionStore,
        resolver: PrincipalResolver,
        catalog: CatalogService,
        management: ManagementService,
        extra_groups: Sequence[Callable[[WebUI], PageGroup | Sequence[PageGroup]]] = (),
        oidc: OIDCClient | None = None,
    ) -> None:
        """*extra_groups* build each capability's pages (moorage/capabilities.py); *oidc*
        offers single sign-on (``auth.oidc``, moorage/ui/oidc.py)."""
        self.ctx = ctx
        self.access = access
        self.sessions = sessions
        self.resolver = resolver
        self.catalog = catalog
        self.management = management
        self.static = StaticFiles(HERE / "static")
        self._login_csrf: LoginCSRF | None = None
        self.oidc: OIDCLogin | None = None
        if oidc is not None:  # single sign-on's module (httpx, joserfc) only when configured
            from .oidc import OIDCLogin

            self.oidc = OIDCLogin(self, oidc)
        self.groups: list[PageGroup] = []
        for make in extra_groups:  # a capability may bring one group of pages or several
            made = make(self)
            if isinstance(made, PageGroup):
                self.groups.append(made)
            else:
                self.groups.extend(made)
        self.groups += [group(self) for group in CORE_GROUPS]
        self.nav = [item for g in sorted(self.groups, key=_nav_order) for item in g.nav]
        self.admin_sections = frozenset().union(*(g.admin_sections for g in self.groups))
        self.done = dict(DONE)
        for g in self.groups:
            self.done.update(g.done)
        dirs = [g.template_dir for g in self.groups if g.template_dir is not None]
        self.templates = make_templates(self.static, dirs)
        self.router = Router(routes=self.routes(), default=self._unknown)

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        own = [
            Route("/login", self.login_form, methods=get),
            Route("/login", self.login, methods=post),
            Route("/logout", self.page(self.logout), methods=post),
            Route("/static/ui/{name}", self.static_file, methods=get),
        ]
        if self.oidc is not None:
            own += self.oidc.routes()
        # Capabilities' pages first: they may add sub-pages under a core group's paths
        # (e.g. /ui/repositories/{name}/...), which a core route's {name:path} would swallow.
        return own + [route for group in self.groups for route in group.routes()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = list(message.get("headers", [])) + extra
                started.append(True)
            await send(message)

        started: list[bool] = []
        try:
            await self.router(scope, receive, secured)
        except Exception as exc:  # a page, not a JSON error or a traceback, for a person
            if started:
                raise
            busy = isinstance(exc, SQLAlchemyError)
            log.log(
                logging.WARNING if busy else logging.ERROR,
                "UI %s %s failed",
                scope.get("method"),
                scope.get("path"),
                exc_info=not busy,
            )
            title, status = ("Try again", 503) if busy else ("Something went wrong", 500)
            message = (
                "The database is unavailable; try again in a moment."
                if busy
                else f"The server log has the details (request id {request_id.get()})."
            )
            response = self.render(
                None, "error.html", status, title=title, message=message, back=""
            )
            await response(scope, receive, secured)

    # --- plumbing ---------------------------------------------------------------------------

    def _shows(self, section: str, visit: Visit) -> bool:
        """Pages only system administrators can open are not offered to others."""
        return visit.is_admin or section not in self.admin_sections

    async def login_csrf(self) -> LoginCSRF:
        """The login form's MAC key: derived from the oldest token-signing key, which every
        node shares through the database."""
        if self._login_csrf is None:
            async with self.ctx.engine.connect() as conn:
                keys = await aq.signing_keys_all(conn)
            material = keys[0].private_pem.encode() if keys else b""
            if not material:
                raise RuntimeError("no signing key yet")
            self._login_csrf = LoginCSRF(
                hashlib.sha256(b"moorage-ui-login-csrf\0" + material).digest()
            )
        return self._login_csrf

    async def resolve(self, request: Request) -> Resolved | None:
        """The signed-in session behind this request, or None."""
        try:
            resolved = await self.resolver.resolve(_cookie_only(request))
        except (AuthFailed, LockedOut, AuthUnavailable):
            return None
        if resolved.session is None or resolved.principal.kind != "user":
            return None
        return resolved

    def page(
        self, handler: Handler, public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page for signed-in users; with *public*, anonymous visitors may read it too while
        ``auth.anonymous_access`` is on (the services then show public repositories only)."""

        async def endpoint(request: Request) -> Response:
            resolved = await self.resolve(request)
            reading = request.method in ("GET", "HEAD")
            if resolved is not None and resolved.session is not None:
                visit = Visit(request, resolved.principal, resolved.session)
            elif public and reading and self.access.config.anonymous_access:
                visit = Visit(request, ANONYMOUS, None)
            elif reading:
                return see_other(login_for(request))
            else:
                return self.error_page(
                    request, None, 403, "Signed out", "Your session has ended. Sign in again."
                )
            try:
                if request.method == "POST":
                    if resolved is None:  # anonymous visitors only read public pages
                        raise PageError(403, "Signed out", "Sign in to make changes.")
                    try:
                        visit.form = await read_form(request)
                    except FormError:
                        visit.form = {}  # no readable token either: refused just below
                    try:
                        self.resolver.check_csrf(
                            resolved, "POST", None, visit.form.get("csrf_token")
                        )
                    except CSRFRejected:
                        raise PageError(
                            403,
                            "Form refused",
                            "This form has expired or did not come from this site. "
                            "Reload the page and try again.",
                        ) from None
                return await handler(visit)
            except PageError as exc:
                if exc.status == 403 and visit.principal.anonymous:
                    # Private and missing repositories alike (refused before existence is
                    # checked): sign in, as /v2 and the API answer anonymous callers.
                    return see_other(login_for(request))
                return self.error_page(request, visit, exc.status, exc.title, exc.message)

        return endpoint

    def render(
        self, visit: Visit | None, template: str, status: int = 200, **context: Any
    ) -> Response:
        flashes: list[tuple[str, str]] = []
        request = visit.request if visit else None
        if request is not None:
            done = self.done.get(request.query_params.get("done", ""))
            if done:
                flashes.append(("ok", done))
        return html(
            self.templates,
            template,
            status,
            user=visit.principal if visit and not visit.principal.anonymous else None,
            # An anonymous visitor of a public page: the top bar offers "Sign in" (back here).
            sign_in=login_for(visit.request) if visit and visit.principal.anonymous else "",
            csrf_token=visit.session.csrf_token if visit and visit.session else "",
            version=__version__,
            flashes=flashes,
            nav=[item for item in self.nav if visit is None or self._shows(item[0], visit)],
            section=context.pop("section", ""),
            **context,
        )

    def error_page(
        self, request: Request, visit: Visit | None, status: int, title: str, message: str
    ) -> Response:
        return self.render(visit, "error.html", status, title=title, message=message, back="")

    async def not_found_page(self, request: Request) -> Response:
        resolved = await self.resolve(request)
        visit = (
            Visit(request, resolved.principal, resolved.session)
            if resolved is not None and resolved.session is not None
            else None
        )
        return self.error_page(request, visit, 404, "Not found", "This page does not exist.")

    async def _unknown(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.not_found_page(Request(scope, receive))
        await response(scope, receive, send)

    async def static_file(self, request: Request) -> Response:
        return self.static.response(request, request.path_params["name"])

    # --- login / logout ---------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if await self.resolve(request) is not None:
            return see_other(safe_next(request.query_params.get("next")))
        return await self._login_page(request, "", "", 200)

    async def login_page(
        self, request: Request, error: str, username: str, status: int
    ) -> Response:
        """The sign-in form (with *error* shown), e.g. after a refused single sign-on."""
        return await self._login_page(request, error, username, status)

    async def _login_page(
        self, request: Request, error: str, username: str, status: int
    ) -> Response:
        token = (await self.login_csrf()).issue()
        response = self.render(
            None,
            "login.html",
            status,
            error=error,
            username=username,
            login_csrf=token,
            next=safe_next(request.query_params.get("next")) if request.method == "GET" else "",
            sso=self.oidc.label if self.oidc is not None else "",
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            max_age=3600,
            path="/login",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def login(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except FormError as exc:
            return self.error_page(request, None, 400, "Bad request", str(exc))
        csrf = await self.login_csrf()
        if not csrf.valid(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf_token")):
            return self.error_page(
                request,
                None,
                403,
                "Form refused",
                "The sign-in form expired or did not come from this site. Reload and try again.",
            )
        username = form.get("username", "").strip()[:200]
        client = (request.client.host if request.client else "-") or "-"
        try:
            cookie, _session = await self.management.login(
                username,
                form.get("password", ""),
                client,
                request.headers.get("user-agent", "")[:512],
            )
        except AuthFailed:  # also robots and tokens: sessions are for people
            return await self._login_page(request, "Wrong username or password.", username, 401)
        except LockedOut:
            return await self._login_page(
                request, "Too many failed sign-ins. Try again later.", username, 429
            )
        except AuthUnavailable:
            return await self._login_page(
                request, "The directory service is unavailable. Try again shortly.", username, 503
            )
        response = see_other(safe_next(form.get("next")))
        secure = request.url.scheme == "https"
        set_session_cookie(response, cookie, secure, int(self.sessions.lifetime.total_seconds()))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout(self, visit: Visit) -> Response:
        cookie = visit.request.cookies.get(SESSION_COOKIE, "")
        await self.management.logout(visit.caller, cookie)
        response = see_other("/login")
        clear_session_cookie(response, visit.request.url.scheme == "https")
        return response

    # --- pages ------------------------------------------------------------------------------

    def host(self, request: Request) -> str:
        """The registry's address as clients write it in image references."""
        base = self.ctx.config.http.base_url
        if base:
            return base.split("://", 1)[-1].rstrip("/")
        return external_origin(request.scope).split("://", 1)[1]

    async def service_call(self, call: Awaitable[T], *, reading: bool = True) -> T:
        """A service call, its refusals as error pages. Reading, a malformed name is "not
        found" (as on /v2, what the caller may not read is not revealed); writing, the
        service's message says what to fix."""
        try:
            return await call
        except Missing as exc:
            raise not_found(str(exc)) from None
        except Invalid as exc:
            if reading:
                raise not_found(str(exc)) from None
            raise PageError(400, "Not saved", str(exc)) from None
        except Conflict as exc:
            raise PageError(409, "Not saved", str(exc)) from None
        except Denied as exc:
            raise denied(str(exc)) from None


def _nav_order(group: PageGroup) -> int:
    """Core sections first, in CORE_GROUPS order, then the capabilities' in theirs."""
    kind = type(group)
    return CORE_GROUPS.index(kind) if kind in CORE_GROUPS else len(CORE_GROUPS)


def _cookie_only(request: Request) -> Request:
    """The request as the UI sees it: cookies, never an Authorization header."""
    if "authorization" not in request.headers:
        return request
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    scope.pop("moorage.resolved", None)
    return Request(scope)
