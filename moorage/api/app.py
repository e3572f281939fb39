"""/api/v1: the management REST API.

Authentication goes through the principal resolver the web UI shares (Basic user/robot/personal
access token, Bearer JWT or personal access token, or the UI's session cookie plus its CSRF
token for changes); authorization and audit happen in the services (catalog, management), with
the registry's rules. Errors are ``{"error": {"code", "message", "field"?}}``; every list is a
page ``{"items": [...], "next_cursor": ...}`` (``?limit=&cursor=``, plus a ``Link: rel=next``
header), except the audit log's ``{"events": [...], "next_cursor": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import __version__
from ..audit import AuditLog
from ..audit.events import as_utc
from ..audit.export import iter_export
from ..audit.store import AuditFilter, query_events
from ..auth.resolver import CSRFRejected, PrincipalResolver, client_addr
from ..auth.service import AccessService, AuthFailed, LockedOut
from ..auth.service import Unavailable as AuthUnavailable
from ..auth.sessions import SESSION_COOKIE, clear_session_cookie, set_session_cookie
from ..services.catalog import CatalogService, check_limit, decode_cursor, page_of, valid_digest
from ..services.context import ServiceContext
from ..services.errors import Conflict, Denied, Invalid, NotFound, ServiceError
from ..services.jobs import JobsView
from ..services.management import Caller, ManagementService
from ..services.models import (
    AccessToken,
    AccessTokenWithSecret,
    Dashboard,
    Grant,
    Health,
    ImageDetail,
    Job,
    Organization,
    Page,
    Referrer,
    RepositoryDetail,
    RepositorySummary,
    Robot,
    RobotWithSecret,
    SystemInfo,
    TagInfo,
    Team,
    TeamGrant,
    User,
)
from . import schemas as s
from .openapi import build_openapi
from .routing import APIError, Auth, Call, Op, error_response, parse_body, parse_query, to_response

log = logging.getLogger("moorage.api")
PREFIX = "/api/v1"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
STATIC = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "docs.js": "application/javascript",
    "swagger-ui-LICENSE": "text/plain",
}
DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Moorage API</title>
<link rel="stylesheet" href="{p}/static/swagger-ui.css"></head>
<body data-openapi="{p}/openapi.json"><div id="swagger-ui"></div>
<script src="{p}/static/swagger-ui-bundle.js"></script>
<script src="{p}/static/docs.js"></script></body></html>
""".replace("{p}", PREFIX)


def _paged(items: list[Any], key: Any, q: s.PageQuery) -> tuple[list[Any], str | None]:
    """Pagination of a short list held in memory (grants, referrers): same cursors."""
    n = check_limit(q.limit)
    after = decode_cursor(q.cursor)
    rest = [i for i in items if after is None or key(i) > after]
    return page_of(rest[: n + 1], [key(i) for i in rest[: n + 1]], n)


def _grant_key(g: Grant) -> str:
    return f"user:{g.user}" if g.user else f"team:{g.team}"


def _team_grant_key(g: TeamGrant) -> str:
    # the service's order: organization roles first, then repositories by name
    return f"0:{g.organization}" if g.organization else f"1:{g.repository}"


class ManagementAPI:
    def __init__(
        self,
        ctx: ServiceContext,
        access: AccessService,
        audit: AuditLog,
        resolver: PrincipalResolver,
        catalog: CatalogService,
        management: ManagementService,
        extra_ops: Sequence[Op] = (),
    ) -> None:
        """*extra_ops*: the installed capabilities' operations (moorage/capabilities.py),
        dispatched, validated and documented like the core's."""
        self.ctx = ctx
        self.access = access
        self.audit = audit
        self.resolver = resolver
        self.catalog = catalog
        self.m = management
        self.jobs = JobsView(ctx)
        self.ops = self._ops() + list(extra_ops)
        self._openapi: dict[str, Any] | None = None

    # --- dispatch ---------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = await self._dispatch(request)
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path[len(PREFIX) :] if request.url.path.startswith(PREFIX) else ""
        allowed: list[str] = []
        for op in self.ops:
            m = op.regex.match(path)
            if m is None:
                continue
            if op.method != request.method and not (
                op.method == "GET" and request.method == "HEAD"
            ):
                allowed.append(op.method)
                continue
            # For the audit of refusals (moorage/audit/refusals.py), read after the response.
            request.scope["moorage.api_op"] = (op, m.groupdict())
            try:
                return await self._run(op, request, m.groupdict())
            except APIError as exc:
                return error_response(exc.status, exc.code, exc.message, exc.field)
            except ServiceError as exc:
                return self._service_error(op, exc)
        if allowed:
            resp = error_response(
                405, "METHOD_NOT_ALLOWED", f"use {', '.join(sorted(set(allowed)))}"
            )
            resp.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return resp
        return error_response(404, "NOT_FOUND", "no such API endpoint")

    @staticmethod
    def _service_error(op: Op, exc: ServiceError) -> Response:
        if isinstance(exc, Invalid):
            status = 400 if exc.field in op.path_params or _in_query(op, exc.field) else 422
            return error_response(status, "INVALID", exc.message, exc.field)
        if isinstance(exc, NotFound):
            return error_response(404, "NOT_FOUND", exc.message)
        if isinstance(exc, Denied):
            return error_response(403, "DENIED", exc.message)
        if isinstance(exc, Conflict):
            return error_response(409, "CONFLICT", exc.message)
        raise exc

    async def _run(self, op: Op, request: Request, params: dict[str, str]) -> Response:
        from .routing import check_text

        for k, v in params.items():
            check_text(v, k)
            if len(v) > 512:
                raise APIError(400, "INVALID", f"{k} is too long", k)
        resolved = None
        if op.auth != "none":
            resolved = await self._authenticate(request, op)
        query = parse_query(op, request)
        body = await parse_body(op, request)
        if resolved is None:
            from ..auth.resolver import Resolved
            from ..auth.service import ANONYMOUS

            resolved = Resolved(ANONYMOUS)
        caller = Caller(
            resolved.principal,
            client_addr(request),
            request.headers.get("user-agent"),
            resolved.session.id if resolved.session is not None else None,
        )
        try:
            result = await op.handler(Call(request, resolved, caller, params, query, body))
        except Denied:
            if resolved.principal.anonymous and op.auth != "none":
                # As /v2 answers anonymous callers: log in (a private repository and a missing
                # one are refused alike, before existence is checked).
                raise APIError(401, "UNAUTHORIZED", "authentication required") from None
            raise
        return to_response(op, result, request)

    async def _authenticate(self, request: Request, op: Op) -> Any:
        try:
            with _auth_errors("authentication failed"):
                resolved = await self.resolver.resolve_checked(request, request.method)
        except CSRFRejected as exc:
            raise APIError(403, "CSRF_FAILED", f"{exc}: send the X-CSRF-Token header") from None
        if resolved.principal.anonymous and not (
            op.auth == "public" and self.access.config.anonymous_access
        ):
            raise APIError(401, "UNAUTHORIZED", "authentication required")
        if not resolved.principal.may_use_api(write=op.auth == "write"):
            need = "api:write" if op.auth == "write" else "api:read"
            raise APIError(403, "DENIED", f"this token lacks the {need} scope")
        return resolved

    # --- the route table --------------------------------------------------------------------

    def _ops(self) -> list[Op]:
        R: Auth = "read"
        P: Auth = "public"  # anonymous too (public repositories), when anonymous access is on
        RW: Auth = "write"
        repo = "/repositories/{repository}"
        org = "/organizations/{organization}"
        team = org + "/teams/{team}"
        robot = "/namespaces/{namespace}/robots/{robot}"
        user = "/users/{username}"
        w = (400, 401, 403, 404, 409, 422)
        return [
            # system
            Op("GET", "/health", self.health, "Liveness", "system", "none", response=Health, errors=()),
            Op("GET", "/system/info", self.system_info, "Version, storage used, counts (administrators)", "system", R, response=SystemInfo, errors=(401, 403)),
            Op("GET", "/dashboard", self.dashboard, "Storage per namespace, activity over 30 days, largest repositories (what the caller may read)", "system", R, response=Dashboard, errors=(401, 403)),
            Op("GET", "/openapi.json", self.openapi, "This document", "system", "none", response=None, errors=()),
            Op("GET", "/docs", self.docs, "Interactive documentation", "system", "none", media_type="text/html", errors=()),
            Op("GET", "/static/{file}", self.static, "Files of the documentation page", "system", "none", media_type="text/css|application/javascript|text/plain", errors=(404,)),
            # web sessions
            Op("POST", "/session", self.login, "Log in: sets the session cookie (HttpOnly) and returns the CSRF token", "session", "none", body=s.LoginBody, response=s.SessionInfo, status=201, errors=(400, 401, 413, 422, 429)),
            Op("DELETE", "/session", self.logout, "Log out: ends the session of the cookie sent", "session", "write", status=204, errors=(401, 403)),
            # repositories
            Op("GET", "/repositories", self.list_repositories, "List and search repositories the caller may pull (anonymous callers: public ones)", "repositories", P, query=s.RepositoryQuery, response=Page[RepositorySummary], errors=(400, 401, 403)),
            Op("GET", repo, self.get_repository, "Repository details", "repositories", P, response=RepositoryDetail),
            Op("PATCH", repo, self.update_repository, "Set description and visibility (admin role)", "repositories", RW, body=s.RepositoryUpdate, response=RepositoryDetail, errors=w),
            Op("DELETE", repo, self.delete_repository, "Delete a repository: its tags, manifests and links (admin role); blobs become garbage for GC", "repositories", RW, status=204, errors=w),
            Op("GET", repo + "/-/tags", self.list_tags, "Tags with digest, media type, platforms, size and times", "repositories", P, query=s.PageQuery, response=Page[TagInfo]),
            Op("DELETE", repo + "/-/tags/{tag}", self.delete_tag, "Delete a tag (delete right)", "repositories", RW, status=204, errors=w),
            Op("GET", repo + "/-/manifests/{reference}", self.get_image, "A manifest by tag or digest: layers, config, platforms, referrers", "repositories", P, response=ImageDetail),
            Op("DELETE", repo + "/-/manifests/{reference}", self.delete_manifest, "Delete a manifest and the tags pointing to it (delete right)", "repositories", RW, status=204, errors=w),
            Op("GET", repo + "/-/referrers/{digest}", self.referrers, "Artifacts (signatures, SBOMs, ...) referring to a digest", "repositories", P, query=s.ReferrerQuery, response=Page[Referrer]),
            Op("GET", repo + "/-/permissions", self.repo_permissions, "Roles granted on the repository (admin role)", "permissions", R, query=s.PageQuery, response=Page[Grant]),
            Op("PUT", repo + "/-/permissions/users/{username}", self.set_repo_user, "Grant a user a role on the repository", "permissions", RW, body=s.RoleBody, status=204, errors=w),
            Op("DELETE", repo + "/-/permissions/users/{username}", self.set_repo_user, "Revoke a user's role on the repository", "permissions", RW, status=204, errors=w),
            Op("PUT", repo + "/-/permissions/teams/{organization}/{team}", self.set_repo_team, "Grant a team a role on the repository", "permissions", RW, body=s.RoleBody, status=204, errors=w),
            Op("DELETE", repo + "/-/permissions/teams/{organization}/{team}", self.set_repo_team, "Revoke a team's role on the repository", "permissions", RW, status=204, errors=w),
            # organizations and teams
            Op("GET", "/organizations", self.list_orgs, "Organizations (all for administrators, else the caller's)", "organizations", R, query=s.PageQuery, response=Page[Organization], errors=(400, 401, 403)),
            Op("POST", "/organizations", self.create_org, "Create an organization (administrators)", "organizations", RW, body=s.OrganizationCreate, response=Organization, status=201, errors=w),
            Op("GET", org, self.get_org, "An organization", "organizations", R, response=Organization),
            Op("PATCH", org, self.update_org, "Set an organization's description (its admins)", "organizations", RW, body=s.DescriptionBody, response=Organization, errors=w),
            Op("DELETE", org, self.delete_org, "Delete an empty organization (administrators)", "organizations", RW, status=204, errors=w),
            Op("GET", org + "/permissions", self.org_permissions, "Roles granted on the organization (its admins)", "permissions", R, query=s.PageQuery, response=Page[Grant]),
            Op("PUT", org + "/permissions/users/{username}", self.set_org_user, "Grant a user a role on the organization", "permissions", RW, body=s.RoleBody, status=204, errors=w),
            Op("DELETE", org + "/permissions/users/{username}", self.set_org_user, "Revoke a user's role on the organization", "permissions", RW, status=204, errors=w),
            Op("PUT", org + "/permissions/teams/{team}", self.set_org_team, "Grant one of its teams a role on the organization", "permissions", RW, body=s.RoleBody, status=204, errors=w),
            Op("DELETE", org + "/permissions/teams/{team}", self.set_org_team, "Revoke a team's role on the organization", "permissions", RW, status=204, errors=w),
            Op("GET", org + "/teams", self.list_teams, "Teams of an organization", "teams", R, query=s.PageQuery, response=Page[Team]),
            Op("POST", org + "/teams", self.create_team, "Create a team (organization admins)", "teams", RW, body=s.TeamCreate, response=Team, status=201, errors=w),
            Op("GET", team, self.get_team, "A team and its members", "teams", R, response=Team),
            Op("PATCH", team, self.update_team, "Set a team's description", "teams", RW, body=s.DescriptionBody, response=Team, errors=w),
            Op("DELETE", team, self.delete_team, "Delete a team", "teams", RW, status=204, errors=w),
            Op("GET", team + "/permissions", self.team_permissions, "Roles the team holds on its organization and on repositories (organization admins); revoke them through the organization's or the repository's permissions", "permissions", R, query=s.PageQuery, response=Page[TeamGrant]),
            Op("PUT", team + "/members/{username}", self.add_member, "Add a member", "teams", RW, status=204, errors=w),
            Op("DELETE", team + "/members/{username}", self.remove_member, "Remove a member", "teams", RW, status=204, errors=w),
            # users and tokens
            Op("GET", "/users", self.list_users, "Users (administrators)", "users", R, query=s.UserQuery, response=Page[User], errors=(400, 401, 403)),
            Op("POST", "/users", self.create_user, "Create a local user (administrators)", "users", RW, body=s.UserCreate, response=User, status=201, errors=w),
            Op("GET", "/user", self.me, "The calling user", "users", R, response=User, errors=(401, 403, 404)),
            Op("GET", user, self.get_user, "A user (themselves or administrators)", "users", R, response=User),
            Op("PATCH", user, self.update_user, "Update a user (profile: themselves; rights, password, disabling: administrators)", "users", RW, body=s.UserUpdate, response=User, errors=w),
            Op("DELETE", user, self.delete_user, "Delete a user (administrators)", "users", RW, status=204, errors=w),
            Op("POST", user + "/password", self.change_password, "Change one's own password, with the old one", "users", RW, body=s.PasswordChange, status=204, errors=w),
            Op("GET", user + "/robots", self.robots_to_review, "Robots the user created or that live in their namespace: what to review after an account was recovered (the user or administrators)", "users", R, response=Page[Robot]),
            Op("GET", user + "/tokens", self.list_tokens, "Personal access tokens (the owner or administrators)", "tokens", R, query=s.PageQuery, response=Page[AccessToken]),
            Op("POST", user + "/tokens", self.create_token, "Create a personal access token (its text is shown once)", "tokens", RW, body=s.TokenCreate, response=AccessTokenWithSecret, status=201, errors=w),
            Op("DELETE", user + "/tokens/{token_id}", self.delete_token, "Revoke and delete a personal access token", "tokens", RW, status=204, errors=w),
            # robots
            Op("GET", "/robots", self.all_robots, "Every robot account, or one namespace's (administrators)", "robots", R, query=s.RobotQuery, response=Page[Robot], errors=(400, 401, 403)),
            Op("GET", "/namespaces/{namespace}/robots", self.list_robots, "Robot accounts of a namespace (its admins)", "robots", R, query=s.PageQuery, response=Page[Robot]),
            Op("POST", "/namespaces/{namespace}/robots", self.create_robot, "Create a robot account (the secret is shown once)", "robots", RW, body=s.RobotCreate, response=RobotWithSecret, status=201, errors=w),
            Op("GET", robot, self.get_robot, "A robot account", "robots", R, response=Robot),
            Op("PATCH", robot, self.update_robot, "Change a robot's description or access", "robots", RW, body=s.RobotUpdate, response=Robot, errors=w),
            Op("DELETE", robot, self.delete_robot, "Delete a robot account", "robots", RW, status=204, errors=w),
            Op("POST", robot + "/secret", self.regenerate_robot, "New secret (shown once); the old one stops working", "robots", RW, response=RobotWithSecret, errors=w),
            Op("POST", robot + "/revoke", self.revoke_robot, "Revoke a robot (regenerating its secret restores it)", "robots", RW, status=204, errors=w),
            # background jobs
            Op("GET", "/jobs", self.list_jobs, "Background jobs of every node, newest first, with progress (administrators)", "jobs", R, query=s.JobQuery, response=Page[Job], errors=(400, 401, 403)),
            Op("GET", "/jobs/{job_id}", self.get_job, "A background job: state, progress, result or error (administrators)", "jobs", R, response=Job),
            # audit
            Op("GET", "/audit", self.audit_query, "Query the audit log (administrators)", "audit", R, query=s.AuditQuery, response=s.AuditPage, errors=(400, 401, 403)),
            Op("GET", "/audit/export", self.audit_export, "Export the audit log as JSON lines or CSV (administrators)", "audit", R, query=s.AuditExportQuery, media_type="text/plain", errors=(400, 401, 403)),
        ]  # fmt: skip

    # --- background jobs --------------------------------------------------------------------

    async def list_jobs(self, c: Call) -> Any:
        q = c.query
        return await self.jobs.list(c.caller, q.state, q.kind, q.cursor, q.limit)

    async def get_job(self, c: Call) -> Any:
        raw = c.path["job_id"]
        if not raw.isdecimal() or len(raw) > 18:
            raise APIError(404, "NOT_FOUND", "no such job")
        return await self.jobs.get(c.caller, int(raw))

    # --- system -----------------------------------------------------------------------------

    async def health(self, c: Call) -> Health:
        return Health(status="ok", version=__version__)

    async def system_info(self, c: Call) -> SystemInfo:
        self._require_admin(c)
        return await self.catalog.system_info()

    async def dashboard(self, c: Call) -> Dashboard:
        return await self.catalog.dashboard(c.principal)

    async def openapi(self, c: Call) -> Response:
        if self._openapi is None:
            self._openapi = build_openapi(self.ops, PREFIX, __version__, list(STATIC))
        return JSONResponse(self._openapi)

    async def docs(self, c: Call) -> Response:
        return Response(
            DOCS_HTML,
            media_type="text/html",
            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
        )

    async def static(self, c: Call) -> Response:
        name = c.path["file"]
        if name not in STATIC:
            raise APIError(404, "NOT_FOUND", "no such file")
        data = (resources.files("moorage.api") / "static" / name).read_bytes()
        return Response(
            data,
            media_type=STATIC[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @staticmethod
    def _require_admin(c: Call) -> None:
        p = c.principal
        if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
            raise APIError(403, "DENIED", "system administrators only")

    # --- web sessions -----------------------------------------------------------------------

    async def login(self, c: Call) -> Response:
        b: s.LoginBody = c.body
        with _auth_errors("wrong username or password"):
            cookie, session = await self.m.login(
                b.username, b.password, client_addr(c.request), c.request.headers.get("user-agent")
            )
        info = s.SessionInfo(
            username=session.username, csrf_token=session.csrf_token, expires_at=session.expires_at
        )
        response = JSONResponse(info.model_dump(mode="json"), 201)
        max_age = int((session.expires_at - session.created_at).total_seconds())
        set_session_cookie(response, cookie, c.request.url.scheme == "https", max_age)
        return response

    async def logout(self, c: Call) -> Response:
        cookie = c.request.cookies.get(SESSION_COOKIE)
        if c.resolved.session is None or cookie is None:
            raise APIError(401, "UNAUTHORIZED", "no session: log out is for session cookies")
        await self.m.logout(c.caller, cookie)
        response = Response(status_code=204)
        clear_session_cookie(response, c.request.url.scheme == "https")
        return response

    # --- repositories -----------------------------------------------------------------------

    async def list_repositories(self, c: Call) -> Any:
        q: s.RepositoryQuery = c.query
        return await self.catalog.list_repositories(
            c.principal,
            query=q.q,
            namespace=q.namespace,
            visibility=q.visibility,
            cursor=q.cursor,
            limit=q.limit,
        )

    async def get_repository(self, c: Call) -> Any:
        return await self.catalog.repository(c.principal, c.path["repository"])

    async def update_repository(self, c: Call) -> Any:
        b: s.RepositoryUpdate = c.body
        name = c.path["repository"]
        actions = await self.access.allowed_actions(c.principal, name)
        if "admin" in actions and "pull" not in actions:
            # The answer is the repository's details, which this caller may not read: refuse
            # before changing anything rather than answer 403 after the change.
            raise APIError(
                403, "DENIED", f"this needs the pull right on {name} too (the answer shows it)"
            )
        await self.m.update_repository(
            c.caller, name, description=b.description, visibility=b.visibility
        )
        return await self.catalog.repository(c.principal, name)

    async def delete_repository(self, c: Call) -> None:
        await self.m.delete_repository(c.caller, c.path["repository"])

    async def list_tags(self, c: Call) -> Any:
        return await self.catalog.tags(
            c.principal, c.path["repository"], c.query.cursor, c.query.limit
        )

    async def delete_tag(self, c: Call) -> None:
        await self.m.delete_tag(c.caller, c.path["repository"], c.path["tag"])

    async def get_image(self, c: Call) -> Any:
        return await self.catalog.image(c.principal, c.path["repository"], c.path["reference"])

    async def delete_manifest(self, c: Call) -> None:
        ref = c.path["reference"]
        if not valid_digest(ref):
            raise APIError(
                400, "INVALID", "delete a manifest by digest (tags: /-/tags/)", "reference"
            )
        await self.m.delete_manifest(c.caller, c.path["repository"], ref)

    async def referrers(self, c: Call) -> Any:
        q: s.ReferrerQuery = c.query
        refs = await self.catalog.referrers(
            c.principal, c.path["repository"], c.path["digest"], q.artifact_type
        )
        items, nxt = _paged(refs, lambda r: r.digest, q)
        return Page[Referrer](items=items, next_cursor=nxt)

    async def repo_permissions(self, c: Call) -> Any:
        grants = await self.m.repository_permissions(c.caller, c.path["repository"])
        items, nxt = _paged(grants, _grant_key, c.query)
        return Page[Grant](items=items, next_cursor=nxt)

    def _role(self, c: Call) -> str | None:
        return None if c.request.method == "DELETE" else str(c.body.role)

    async def set_repo_user(self, c: Call) -> None:
        await self.m.set_repository_permission(
            c.caller, c.path["repository"], self._role(c), user=c.path["username"], team=None
        )

    async def set_repo_team(self, c: Call) -> None:
        team = f"{c.path['organization']}/{c.path['team']}"
        await self.m.set_repository_permission(
            c.caller, c.path["repository"], self._role(c), user=None, team=team
        )

    # --- organizations and teams ------------------------------------------------------------

    async def team_permissions(self, c: Call) -> Any:
        grants = await self.m.team_permissions(c.caller, c.path["organization"], c.path["team"])
        items, nxt = _paged(grants, _team_grant_key, c.query)
        return Page[TeamGrant](items=items, next_cursor=nxt)

    async def list_orgs(self, c: Call) -> Any:
        return await self.m.list_organizations(c.caller, c.query.cursor, c.query.limit)

    async def create_org(self, c: Call) -> Any:
        return await self.m.create_organization(c.caller, c.body.name, c.body.description)

    async def get_org(self, c: Call) -> Any:
        return await self.m.organization(c.caller, c.path["organization"])

    async def update_org(self, c: Call) -> Any:
        return await self.m.update_organization(
            c.caller, c.path["organization"], c.body.description
        )

    async def delete_org(self, c: Call) -> None:
        await self.m.delete_organization(c.caller, c.path["organization"])

    async def org_permissions(self, c: Call) -> Any:
        grants = await self.m.organization_permissions(c.caller, c.path["organization"])
        items, nxt = _paged(grants, _grant_key, c.query)
        return Page[Grant](items=items, next_cursor=nxt)

    async def set_org_user(self, c: Call) -> None:
        await self.m.set_organization_permission(
            c.caller, c.path["organization"], self._role(c), user=c.path["username"], team=None
        )

    async def set_org_team(self, c: Call) -> None:
        org = c.path["organization"]
        await self.m.set_organization_permission(
            c.caller, org, self._role(c), user=None, team=f"{org}/{c.path['team']}"
        )

    async def list_teams(self, c: Call) -> Any:
        return await self.m.list_teams(
            c.caller, c.path["organization"], c.query.cursor, c.query.limit
        )

    async def create_team(self, c: Call) -> Any:
        b: s.TeamCreate = c.body
        return await self.m.create_team(
            c.caller, c.path["organization"], b.name, b.description, b.members
        )

    async def get_team(self, c: Call) -> Any:
        return await self.m.team(c.caller, c.path["organization"], c.path["team"])

    async def update_team(self, c: Call) -> Any:
        return await self.m.update_team(
            c.caller, c.path["organization"], c.path["team"], c.body.description
        )

    async def delete_team(self, c: Call) -> None:
        await self.m.delete_team(c.caller, c.path["organization"], c.path["team"])

    async def add_member(self, c: Call) -> None:
        p = c.path
        await self.m.set_team_member(c.caller, p["organization"], p["team"], p["username"], True)

    async def remove_member(self, c: Call) -> None:
        p = c.path
        await self.m.set_team_member(c.caller, p["organization"], p["team"], p["username"], False)

    # --- users and tokens -------------------------------------------------------------------

    async def list_users(self, c: Call) -> Any:
        return await self.m.list_users(c.caller, c.query.q, c.query.cursor, c.query.limit)

    async def create_user(self, c: Call) -> Any:
        b: s.UserCreate = c.body
        return await self.m.create_user(
            c.caller,
            b.username,
            b.password,
            email=b.email,
            display_name=b.display_name,
            is_admin=b.is_admin,
        )

    async def me(self, c: Call) -> Any:
        if c.principal.kind != "user":
            raise APIError(404, "NOT_FOUND", "robots have no user profile")
        return await self.m.user(c.caller, c.principal.name)

    async def get_user(self, c: Call) -> Any:
        return await self.m.user(c.caller, c.path["username"])

    async def update_user(self, c: Call) -> Any:
        changes = c.body.model_dump(exclude_unset=True)
        for key in ("is_admin", "disabled", "password"):
            if changes.get(key, 0) is None:
                del changes[key]  # null: unchanged
        return await self.m.update_user(c.caller, c.path["username"], changes)

    async def delete_user(self, c: Call) -> None:
        await self.m.delete_user(c.caller, c.path["username"])

    async def change_password(self, c: Call) -> None:
        b: s.PasswordChange = c.body
        await self.m.change_password(c.caller, c.path["username"], b.old_password, b.new_password)

    async def robots_to_review(self, c: Call) -> Any:
        return await self.m.robots_to_review(c.caller, c.path["username"])

    async def list_tokens(self, c: Call) -> Any:
        return await self.m.list_tokens(c.caller, c.path["username"], c.query.cursor, c.query.limit)

    async def create_token(self, c: Call) -> Any:
        b: s.TokenCreate = c.body
        scopes = [str(x) for x in b.scopes] if b.scopes is not None else None
        return await self.m.create_token(
            c.caller, c.path["username"], b.name, scopes, b.expires_in_days
        )

    async def delete_token(self, c: Call) -> None:
        raw = c.path["token_id"]
        if not raw.isdecimal() or len(raw) > 18:
            raise APIError(400, "INVALID", "token_id is a number", "token_id")
        await self.m.delete_token(c.caller, c.path["username"], int(raw))

    # --- robots -----------------------------------------------------------------------------

    async def list_robots(self, c: Call) -> Any:
        return await self.m.list_robots(
            c.caller, c.path["namespace"], c.query.cursor, c.query.limit
        )

    @staticmethod
    def _access(items: list[Any]) -> list[dict[str, Any]]:
        return [a.model_dump(exclude_none=True) for a in items]

    async def all_robots(self, c: Call) -> Any:
        q: s.RobotQuery = c.query
        return await self.m.all_robots(c.caller, q.namespace, q.cursor, q.limit)

    async def create_robot(self, c: Call) -> Any:
        b: s.RobotCreate = c.body
        return await self.m.create_robot(
            c.caller,
            c.path["namespace"],
            b.name,
            self._access(b.access),
            description=b.description,
            expires_in_days=b.expires_in_days,
        )

    async def get_robot(self, c: Call) -> Any:
        return await self.m.robot(c.caller, c.path["namespace"], c.path["robot"])

    async def update_robot(self, c: Call) -> Any:
        b: s.RobotUpdate = c.body
        changes: dict[str, Any] = {}
        if b.description is not None:
            changes["description"] = b.description
        if b.access is not None:
            changes["access"] = self._access(b.access)
        return await self.m.update_robot(c.caller, c.path["namespace"], c.path["robot"], changes)

    async def delete_robot(self, c: Call) -> None:
        await self.m.delete_robot(c.caller, c.path["namespace"], c.path["robot"])

    async def regenerate_robot(self, c: Call) -> Any:
        return await self.m.regenerate_robot_secret(c.caller, c.path["namespace"], c.path["robot"])

    async def revoke_robot(self, c: Call) -> None:
        await self.m.revoke_robot(c.caller, c.path["namespace"], c.path["robot"])

    # --- audit ------------------------------------------------------------------------------

    @staticmethod
    def _filters(q: Any) -> AuditFilter:
        return AuditFilter(
            actor=q.actor,
            action=q.action,
            repository=q.repository,
            result=q.result,
            since=as_utc(q.since) if q.since else None,
            until=as_utc(q.until) if q.until else None,
        )

    async def audit_query(self, c: Call) -> Any:
        self._require_admin(c)
        q: s.AuditQuery = c.query
        f = self._filters(q)
        page = await query_events(
            self.ctx.engine,
            actor=f.actor,
            action=f.action,
            repository=f.repository,
            result=f.result,
            since=f.since,
            until=f.until,
            cursor=q.cursor,
            limit=q.limit or 100,
        )
        return s.AuditPage(events=[r.to_dict() for r in page.events], next_cursor=page.next_cursor)

    async def audit_export(self, c: Call) -> Response:
        self._require_admin(c)
        q: s.AuditExportQuery = c.query
        filters = self._filters(q)
        fmt = q.format

        async def body() -> Any:
            async for chunk in iter_export(self.ctx.engine, fmt, filters):
                yield chunk.encode()

        media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        return StreamingResponse(
            body(),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="audit.{fmt}"'},
        )


@contextmanager
def _auth_errors(failed: str) -> Iterator[None]:
    """AccessService's authentication outcomes as API errors (401, 429, 503)."""
    try:
        yield
    except AuthFailed:
        raise APIError(401, "UNAUTHORIZED", failed) from None
    except LockedOut as exc:
        raise APIError(429, "TOO_MANY_REQUESTS", str(exc)) from None
    except AuthUnavailable:
        raise APIError(503, "UNAVAILABLE", "directory unavailable; retry") from None


def _in_query(op: Op, field: str | None) -> bool:
    return bool(field) and op.query is not None and field in op.query.model_fields
