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
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from .. import __version__
from ..audit.store import query_events
from ..auth.pat import PAT_SCOPES
from ..auth.resolver import CSRFRejected, PrincipalResolver, Resolved
from ..auth.scopes import ADMIN, DELETE
from ..auth.service import ANONYMOUS, AccessService, AuthFailed, LockedOut, Principal
from ..auth.service import Unavailable as AuthUnavailable
from ..auth.sessions import (
    SESSION_COOKIE,
    Session,
    SessionStore,
    clear_session_cookie,
    set_session_cookie,
)
from ..db import access_queries as aq
from ..logs import request_id
from ..services.catalog import CatalogService
from ..services.context import ServiceContext
from ..services.errors import Conflict, Denied, Invalid, Missing
from ..services.management import Caller, ManagementService
from ..services.models import Page, RepositorySummary, Robot, TagInfo
from .charts import bar_chart, line_chart
from .web import (
    HERE,
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    FormError,
    LoginCSRF,
    StaticFiles,
    html,
    human_size,
    make_templates,
    read_form,
    see_other,
)

log = logging.getLogger("moorage.ui")
T = TypeVar("T")


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def not_found(what: str = "This page does not exist.") -> PageError:
    return PageError(404, "Not found", what)


def denied(what: str = "You do not have access to this page.") -> PageError:
    return PageError(403, "Not allowed", what)


# The main navigation: (section, link, label). Later pages (vulnerabilities, signatures,
# replication) add their entry here.
NAV: list[tuple[str, str, str]] = [
    ("dashboard", "/", "Dashboard"),
    ("repositories", "/ui/repositories", "Repositories"),
    ("organizations", "/ui/organizations", "Organizations"),
    ("users", "/ui/users", "Users"),
    ("robots", "/ui/robots", "Robots"),
    ("audit", "/ui/audit", "Audit"),
]

# Messages a redirect may ask for (``?done=key``): fixed texts, so a link cannot make the UI
# say anything an attacker wants.
DONE = {
    "tag-deleted": "Tag deleted.",
    "repo-saved": "Repository settings saved.",
    "repo-deleted": "Repository deleted.",
    "granted": "Permission granted.",
    "revoked": "Permission revoked.",
    "org-created": "Organization created.",
    "team-created": "Team created.",
    "member-added": "Member added.",
    "member-removed": "Member removed.",
    "user-created": "User created.",
    "user-saved": "User updated.",
    "password-changed": "Password changed.",
    "robot-revoked": "Robot revoked.",
    "token-deleted": "Token deleted.",
}


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
    ) -> None:
        self.ctx = ctx
        self.access = access
        self.sessions = sessions
        self.resolver = resolver
        self.catalog = catalog
        self.management = management
        self.static = StaticFiles(HERE / "static")
        self.templates = make_templates(self.static)
        self._login_csrf: LoginCSRF | None = None
        self.router = Router(routes=self.routes(), default=self._unknown)

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/", self.page(self.dashboard), methods=get),
            Route("/login", self.login_form, methods=get),
            Route("/login", self.login, methods=post),
            Route("/logout", self.page(self.logout), methods=post),
            Route("/static/ui/{name}", self.static_file, methods=get),
            Route("/ui", self.to_dashboard, methods=get),
            Route("/ui/", self.to_dashboard, methods=get),
            Route("/ui/repositories", self.page(self.repositories, public=True), methods=get),
            Route(
                "/ui/repositories/{name:path}/tags/{tag}/delete",
                self.page(self.delete_tag),
                methods=post,
            ),
            Route(
                "/ui/repositories/{name:path}/settings", self.page(self.repo_settings), methods=post
            ),
            Route(
                "/ui/repositories/{name:path}/permissions/{op}",
                self.page(self.repo_permission),
                methods=post,
            ),
            Route("/ui/repositories/{name:path}/delete", self.page(self.delete_repo), methods=post),
            Route(
                "/ui/repositories/{name:path}/manifests/{digest}",
                self.page(self.image, public=True),
                methods=get,
            ),
            Route(
                "/ui/repositories/{name:path}",
                self.page(self.repository, public=True),
                methods=get,
            ),
            Route("/ui/audit", self.page(self.audit_page), methods=get),
            Route("/ui/organizations", self.page(self.organizations), methods=get),
            Route("/ui/organizations", self.page(self.create_org), methods=post),
            Route("/ui/organizations/{org}", self.page(self.organization), methods=get),
            Route("/ui/organizations/{org}/teams", self.page(self.create_team), methods=post),
            Route(
                "/ui/organizations/{org}/permissions/{op}",
                self.page(self.org_permission),
                methods=post,
            ),
            Route("/ui/organizations/{org}/teams/{team}", self.page(self.team), methods=get),
            Route(
                "/ui/organizations/{org}/teams/{team}/members/{op}",
                self.page(self.team_member),
                methods=post,
            ),
            Route(
                "/ui/organizations/{org}/teams/{team}/grant",
                self.page(self.team_grant),
                methods=post,
            ),
            Route(
                "/ui/organizations/{org}/teams/{team}/revoke",
                self.page(self.team_revoke),
                methods=post,
            ),
            Route("/ui/users", self.page(self.users), methods=get),
            Route("/ui/users", self.page(self.create_user), methods=post),
            Route("/ui/users/{username}", self.page(self.update_user), methods=post),
            Route("/ui/account", self.page(self.account), methods=get),
            Route("/ui/account/password", self.page(self.change_password), methods=post),
            Route("/ui/account/tokens", self.page(self.create_token), methods=post),
            Route("/ui/account/tokens/{token}/delete", self.page(self.delete_token), methods=post),
            Route("/ui/robots", self.page(self.robots), methods=get),
            Route("/ui/robots", self.page(self.create_robot), methods=post),
            Route("/ui/robots/{robot}/revoke", self.page(self.revoke_robot), methods=post),
        ]

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
                return see_other(_login_for(request))
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
                    return see_other(_login_for(request))
                return self.error_page(request, visit, exc.status, exc.title, exc.message)

        return endpoint

    def render(
        self, visit: Visit | None, template: str, status: int = 200, **context: Any
    ) -> Response:
        flashes: list[tuple[str, str]] = []
        request = visit.request if visit else None
        if request is not None:
            done = DONE.get(request.query_params.get("done", ""))
            if done:
                flashes.append(("ok", done))
        return html(
            self.templates,
            template,
            status,
            user=visit.principal if visit and not visit.principal.anonymous else None,
            # An anonymous visitor of a public page: the top bar offers "Sign in" (back here).
            sign_in=_login_for(visit.request) if visit and visit.principal.anonymous else "",
            csrf_token=visit.session.csrf_token if visit and visit.session else "",
            version=__version__,
            flashes=flashes,
            nav=[item for item in NAV if visit is None or _shows(item[0], visit)],
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

    def host(self, request: Request) -> str:
        """The registry's address as clients write it in image references."""
        base = self.ctx.config.http.base_url
        if base:
            return base.split("://", 1)[-1].rstrip("/")
        return request.url.netloc

    async def repositories(self, visit: Visit) -> Response:
        qp = visit.request.query_params
        filters = {
            "q": qp.get("q", "").strip()[:255],
            "namespace": qp.get("namespace", "").strip()[:255],
            "visibility": qp.get("visibility", ""),
        }
        if filters["visibility"] not in ("public", "private"):
            filters["visibility"] = ""
        cursor = qp.get("after") or None
        try:
            page = await self.catalog.list_repositories(
                visit.principal,
                query=filters["q"] or None,
                namespace=filters["namespace"] or None,
                visibility=filters["visibility"] or None,
                cursor=cursor,
                limit=50,
            )
            error = ""
        except Invalid as exc:
            page, error = Page[RepositorySummary](items=[], next_cursor=None), str(exc)
        return self.render(
            visit,
            "repositories.html",
            section="repositories",
            repositories=page.items,
            next_after=page.next_cursor,
            first_page=cursor is None,
            filters=filters,
            error=error,
            host=self.host(visit.request),
        )

    async def repository(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        p = visit.principal
        repo = await self._service(self.catalog.repository(p, name))
        cursor = visit.request.query_params.get("after") or None
        tags = await self._service(self.catalog.tags(p, name, cursor=cursor, limit=100))
        can_admin = ADMIN in repo.permissions
        permissions = (
            await self.management.repository_permissions(visit.caller, name) if can_admin else []
        )
        names = [t.name for t in tags.items]
        return self.render(
            visit,
            "repository.html",
            section="repositories",
            repo=repo,
            size=repo.size,
            tags=[_tag_view(t) for t in tags.items],
            next_tag=tags.next_cursor,
            pull_tag="latest" if "latest" in names or not names else names[0],
            can_admin=can_admin,
            can_delete=DELETE in repo.permissions,
            grants=permissions,
            host=self.host(visit.request),
        )

    async def image(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        digest = visit.request.path_params["digest"]
        img = await self._service(self.catalog.image(visit.principal, name, digest))
        parent = visit.request.query_params.get("index", "")
        artifact = img.artifact_type not in (None, *IMAGE_CONFIG_TYPES)
        kind = "Index" if img.manifests else ("Artifact" if artifact else "Image")
        if img.config and img.config.os:
            kind += " for " + "/".join(
                x for x in (img.config.os, img.config.architecture, img.config.variant) if x
            )
        return self.render(
            visit,
            "image.html",
            section="repositories",
            repo=name,
            m=img,
            artifact_type=img.artifact_type if artifact else None,
            kind_label=kind,
            total_size=img.size,
            children=img.manifests,
            layers=img.layers,
            config=img.config,
            history=img.config.history if img.config else [],
            referrers=img.referrers,
            parent=parent if _DIGEST.match(parent) else "",
            host=self.host(visit.request),
        )

    async def _service(self, call: Awaitable[T], *, reading: bool = True) -> T:
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

    async def _change(self, call: Awaitable[T]) -> T:
        return await self._service(call, reading=False)

    # --- repository changes -----------------------------------------------------------------

    async def delete_tag(self, visit: Visit) -> Response:
        name, tag = visit.request.path_params["name"], visit.request.path_params["tag"]
        await self._change(self.management.delete_tag(visit.caller, name, tag))
        return see_other(f"/ui/repositories/{_quote(name)}?done=tag-deleted")

    async def repo_settings(self, visit: Visit) -> Response:
        name, f = visit.request.path_params["name"], visit.form
        await self._change(
            self.management.update_repository(
                visit.caller,
                name,
                description=f.get("description", "").replace("\r\n", "\n"),
                visibility=f.get("visibility") or None,
            )
        )
        return see_other(f"/ui/repositories/{_quote(name)}?done=repo-saved")

    async def repo_permission(self, visit: Visit) -> Response:
        name, op = visit.request.path_params["name"], _op(visit, "grant", "revoke")
        user, team = _subject(visit.form)
        role = visit.form.get("role", "") if op == "grant" else None
        await self._change(
            self.management.set_repository_permission(
                visit.caller, name, role, user=user, team=team
            )
        )
        return see_other(f"/ui/repositories/{_quote(name)}?done={_done(op)}")

    async def delete_repo(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        await self._change(self.management.delete_repository(visit.caller, name))
        return see_other("/ui/repositories?done=repo-deleted")

    # --- organizations and teams ------------------------------------------------------------

    async def organizations(self, visit: Visit) -> Response:
        page = await self._service(self.management.list_organizations(visit.caller, limit=200))
        return self.render(
            visit,
            "organizations.html",
            section="organizations",
            organizations=page.items,
            host=self.host(visit.request),
            form={"name": "", "description": ""},
            error="",
        )

    async def create_org(self, visit: Visit) -> Response:
        f = visit.form
        org = await self._change(
            self.management.create_organization(
                visit.caller, f.get("name", "").strip(), f.get("description", "")
            )
        )
        return see_other(f"/ui/organizations/{_quote(org.name)}?done=org-created")

    async def _org_admin(self, visit: Visit, org: str) -> bool:
        return ADMIN in await self.access.organization_actions(visit.principal, org)

    async def organization(self, visit: Visit) -> Response:
        name = visit.request.path_params["org"]
        org = await self._service(self.management.organization(visit.caller, name))
        teams = await self._service(self.management.list_teams(visit.caller, name, limit=200))
        can_admin = await self._org_admin(visit, name)
        perms = (
            await self._service(self.management.organization_permissions(visit.caller, name))
            if can_admin
            else []
        )
        return self.render(
            visit,
            "organization.html",
            section="organizations",
            org=org,
            teams=teams.items,
            grants=perms,
            can_admin=can_admin,
            error="",
        )

    async def create_team(self, visit: Visit) -> Response:
        org, f = visit.request.path_params["org"], visit.form
        await self._change(
            self.management.create_team(
                visit.caller, org, f.get("name", "").strip(), f.get("description", "")
            )
        )
        return see_other(f"/ui/organizations/{_quote(org)}?done=team-created")

    async def org_permission(self, visit: Visit) -> Response:
        org, op = visit.request.path_params["org"], _op(visit, "grant", "revoke")
        user, team = _subject(visit.form, org)
        role = visit.form.get("role", "") if op == "grant" else None
        await self._change(
            self.management.set_organization_permission(
                visit.caller, org, role, user=user, team=team
            )
        )
        return see_other(f"/ui/organizations/{_quote(org)}?done={_done(op)}")

    async def team(self, visit: Visit) -> Response:
        org, name = visit.request.path_params["org"], visit.request.path_params["team"]
        team = await self._service(self.management.team(visit.caller, org, name))
        org_admin = await self._org_admin(visit, org)
        roles = (
            await self._service(self.management.team_permissions(visit.caller, org, name))
            if org_admin
            else []
        )
        return self.render(
            visit,
            "team.html",
            section="organizations",
            org=org,
            team=team,
            roles=roles,
            org_admin=org_admin,
            can_admin=org_admin and team.source == "local",  # members: not directory teams
            error="",
        )

    async def team_member(self, visit: Visit) -> Response:
        org, team = visit.request.path_params["org"], visit.request.path_params["team"]
        add = _op(visit, "add", "remove") == "add"
        user = visit.form.get("username", "").strip()
        await self._change(self.management.set_team_member(visit.caller, org, team, user, add))
        done = "member-added" if add else "member-removed"
        return see_other(f"/ui/organizations/{_quote(org)}/teams/{_quote(team)}?done={done}")

    async def team_grant(self, visit: Visit) -> Response:
        org, team = visit.request.path_params["org"], visit.request.path_params["team"]
        repo = visit.form.get("repository", "").strip()
        await self._change(
            self.management.set_repository_permission(
                visit.caller, repo, visit.form.get("role", ""), user=None, team=f"{org}/{team}"
            )
        )
        return see_other(f"/ui/organizations/{_quote(org)}/teams/{_quote(team)}?done=granted")

    async def team_revoke(self, visit: Visit) -> Response:
        """Revoke one of the team's roles: on its organization, or on a repository (the
        services check the organization's, or the repository's, admin role)."""
        org, team = visit.request.path_params["org"], visit.request.path_params["team"]
        repo = visit.form.get("repository", "").strip()
        if repo:
            call = self.management.set_repository_permission(
                visit.caller, repo, None, user=None, team=f"{org}/{team}"
            )
        else:
            call = self.management.set_organization_permission(
                visit.caller, org, None, user=None, team=f"{org}/{team}"
            )
        await self._change(call)
        return see_other(f"/ui/organizations/{_quote(org)}/teams/{_quote(team)}?done=revoked")

    # --- users ------------------------------------------------------------------------------

    async def users(self, visit: Visit) -> Response:
        page = await self._service(self.management.list_users(visit.caller, limit=200))
        return self.render(
            visit,
            "users.html",
            section="users",
            users=page.items,
            form={"username": "", "email": ""},
            error="",
        )

    async def create_user(self, visit: Visit) -> Response:
        f = visit.form
        await self._change(
            self.management.create_user(
                visit.caller,
                f.get("username", "").strip(),
                f.get("password", ""),
                email=f.get("email", "").strip() or None,
                is_admin=f.get("is_admin") == "true",
            )
        )
        return see_other("/ui/users?done=user-created")

    async def update_user(self, visit: Visit) -> Response:
        changes: dict[str, Any] = {
            key: visit.form[key] == "true" for key in ("disabled", "is_admin") if key in visit.form
        }
        username = visit.request.path_params["username"]
        await self._change(self.management.update_user(visit.caller, username, changes))
        return see_other("/ui/users?done=user-saved")

    async def account(self, visit: Visit) -> Response:
        me = await self._service(self.management.user(visit.caller, visit.principal.name))
        tokens = await self._service(
            self.management.list_tokens(visit.caller, visit.principal.name, limit=200)
        )
        return self.render(
            visit,
            "account.html",
            local=me.source == "local",
            tokens=tokens.items,
            scopes=PAT_SCOPES,
        )

    async def create_token(self, visit: Visit) -> Response:
        f = visit.form
        days = f.get("expires_days", "").strip()
        if days and not days.isdigit():
            raise PageError(400, "Not saved", "Expiry is a whole number of days.")
        me = visit.principal.name
        token = await self._change(
            self.management.create_token(
                visit.caller,
                me,
                f.get("name", "").strip(),
                [s for s in PAT_SCOPES if f.get("scope:" + s) == "on"],
                int(days) if days else None,
            )
        )
        return self.render(
            visit,
            "secret.html",
            title=f"Personal access token {token.name} created",
            lost="delete the token and create another",
            username=me,
            secret=token.token,
            back="/ui/account",
            host=self.host(visit.request),
        )

    async def delete_token(self, visit: Visit) -> Response:
        raw = visit.request.path_params["token"]
        if not raw.isdigit() or len(raw) > 18:
            raise not_found()
        await self._change(
            self.management.delete_token(visit.caller, visit.principal.name, int(raw))
        )
        return see_other("/ui/account?done=token-deleted")

    async def change_password(self, visit: Visit) -> Response:
        f = visit.form
        await self._change(
            self.management.change_password(
                visit.caller,
                visit.principal.name,
                f.get("current_password", ""),
                f.get("new_password", ""),
            )
        )
        # The account's other sessions and tokens end with the old password; this one stays.
        return see_other("/ui/account?done=password-changed")

    # --- robots -----------------------------------------------------------------------------

    async def _robot_namespaces(self, visit: Visit) -> list[str]:
        """Namespaces whose robots the caller may see: their own and their organizations'."""
        orgs = await self._service(self.management.list_organizations(visit.caller, limit=200))
        return [visit.principal.name, *(o.name for o in orgs.items)]

    async def robots(self, visit: Visit) -> Response:
        extra: dict[str, Any] = {"admin_view": False}
        if visit.is_admin:
            robots, extra = await self._all_robots(visit)
        else:
            robots = []
            for ns in await self._robot_namespaces(visit):
                try:
                    page = await self.management.list_robots(visit.caller, ns, limit=200)
                except (Denied, Invalid, Missing):
                    continue  # an organization the caller belongs to but does not administer
                robots.extend(page.items)
        return self.render(
            visit,
            "robots.html",
            section="robots",
            robots=robots,
            form=dict.fromkeys(("namespace", "name", "description", "access", "expires_days"), ""),
            error="",
            **extra,
        )

    async def _all_robots(self, visit: Visit) -> tuple[list[Robot], dict[str, Any]]:
        """System administrators: every namespace's robots, filtered by namespace, paged."""
        qp = visit.request.query_params
        filters = {"namespace": qp.get("namespace", "").strip()[:64]}
        cursor = qp.get("after") or None
        try:
            page = await self.management.all_robots(
                visit.caller, filters["namespace"] or None, cursor, limit=100
            )
            error = ""
        except Invalid as exc:
            page, error = Page[Robot](items=[], next_cursor=None), str(exc)
        view = {
            "admin_view": True,
            "filters": filters,
            "next_after": page.next_cursor,
            "first_page": cursor is None,
            "filter_error": error,
        }
        return page.items, view

    async def create_robot(self, visit: Visit) -> Response:
        f = visit.form
        namespace = f.get("namespace", "").strip()
        days = f.get("expires_days", "").strip()
        if days and not days.isdigit():
            raise PageError(400, "Not saved", "Expiry is a whole number of days.")
        robot = await self._change(
            self.management.create_robot(
                visit.caller,
                namespace,
                f.get("name", "").strip(),
                _robot_access(namespace, f.get("access", "")),
                description=f.get("description", ""),
                expires_in_days=int(days) if days else None,
            )
        )
        # The secret is on this page only: no redirect to a page that could show it again.
        return self.render(
            visit,
            "secret.html",
            section="robots",
            title=f"Robot {robot.name} created",
            lost="revoke the robot and create another",
            username=robot.name,
            secret=robot.secret,
            back="/ui/robots",
            host=self.host(visit.request),
        )

    async def revoke_robot(self, visit: Visit) -> Response:
        namespace, _, name = visit.request.path_params["robot"].partition("+")
        await self._change(self.management.revoke_robot(visit.caller, namespace, name))
        return see_other("/ui/robots?done=robot-revoked")

    async def audit_page(self, visit: Visit) -> Response:
        if not visit.is_admin:
            raise denied("The audit log is for system administrators.")
        qp = visit.request.query_params
        filters = {k: qp.get(k, "").strip()[:200] for k in ("actor", "action", "repository")}
        result = qp.get("result", "")
        result = result if result in ("success", "failure", "denied") else ""
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


# An image's artifact type defaults to its config's media type (OCI 1.1): not an "artifact".
IMAGE_CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def _namespace_link(namespace: str) -> str | None:
    if namespace.startswith("("):  # "(top level)": repositories without a namespace
        return None
    return "/ui/repositories?" + urlencode({"namespace": namespace})


@dataclass(frozen=True)
class TagView:
    name: str
    digest: str
    kind: str
    platforms: list[str]
    size: int
    pushed_at: datetime


def _tag_view(t: TagInfo) -> TagView:
    if "index" in t.media_type or "manifest.list" in t.media_type:
        kind = "index"
    else:
        kind = "artifact" if t.artifact_type else "image"
    return TagView(t.name, t.digest, kind, t.platforms, t.size, t.pushed_at)


def _login_for(request: Request) -> str:
    """The login form, returning to *request*'s page afterwards (``/`` needs no ``next``)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return "/login" if target == "/" else "/login?next=" + _quote(target)


def _shows(section: str, visit: Visit) -> bool:
    """Pages only system administrators can open are not offered to others."""
    return visit.is_admin or section not in ("users", "audit")


def _cookie_only(request: Request) -> Request:
    """The request as the UI sees it: cookies, never an Authorization header."""
    if "authorization" not in request.headers:
        return request
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    scope.pop("moorage.resolved", None)
    return Request(scope)


def _subject(form: dict[str, str], org: str | None = None) -> tuple[str | None, str | None]:
    """(user, team) named by a permission form; a bare team name is in *org*."""
    subject = form.get("subject", "").strip()
    if form.get("kind") == "team":
        if org is not None and "/" not in subject:
            subject = f"{org}/{subject}"
        return None, subject
    return subject, None


def _op(visit: Visit, *allowed: str) -> str:
    op = str(visit.request.path_params["op"])
    if op not in allowed:
        raise not_found()
    return op


def _done(op: str) -> str:
    return "granted" if op == "grant" else "revoked"


def _robot_access(namespace: str, text: str) -> list[dict[str, Any]]:
    """``TARGET=ACTIONS`` lines (as ``moorage admin create-robot --access``) to the service's
    access list; the service validates every entry."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        target, sep, actions = line.partition("=")
        if not sep:
            raise PageError(400, "Not saved", f"Access line {line[:100]!r} is not TARGET=ACTIONS.")
        target = target.strip()
        key = "organization" if "/" not in target else "repository"
        acts = [a.strip() for a in actions.split(",") if a.strip()]
        out.append({key: target, "actions": acts})
    if not out:
        raise PageError(400, "Not saved", "Give the robot access to at least one repository.")
    return out


def _quote(path: str) -> str:
    return quote(path, safe="/")


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
