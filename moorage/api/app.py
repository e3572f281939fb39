"""/api/v1: audit log query and export, repository permissions.

Authentication is the registry's (Basic, or a bearer token from /auth/token); authorization uses
the same rules: the audit log is for system administrators, a repository's permissions for its
admins. Errors are ``{"error": {"code": ..., "message": ...}}`` with a fitting status.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, Router

from ..audit import AuditEvent, AuditLog
from ..audit.export import iter_export
from ..audit.store import AuditFilter, query_events
from ..auth.scopes import ADMIN, ROLES
from ..auth.service import AccessService, AuthFailed, LockedOut, Principal
from ..auth.service import Unavailable as AuthUnavailable
from ..db import access_queries as aq
from ..db import queries as q
from ..oci.names import namespace_of, valid_name
from ..services.context import ServiceContext


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="moorage"'} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*\Z")


class ManagementAPI:
    def __init__(self, ctx: ServiceContext, access: AccessService, audit: AuditLog) -> None:
        self.ctx = ctx
        self.access = access
        self.audit = audit
        perm = "/api/v1/repositories/{repo:path}/permissions"
        self.router = Router(
            routes=[
                Route("/api/v1/audit", self._wrap(self.audit_query), methods=["GET"]),
                Route("/api/v1/audit/export", self._wrap(self.audit_export), methods=["GET"]),
                Route(perm, self._wrap(self.list_permissions), methods=["GET"]),
                Route(
                    perm + "/users/{user}",
                    self._wrap(self.set_user_permission),
                    methods=["PUT", "DELETE"],
                ),
                Route(
                    perm + "/teams/{org}/{team}",
                    self._wrap(self.set_team_permission),
                    methods=["PUT", "DELETE"],
                ),
            ]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.router(scope, receive, send)

    def _wrap(
        self, handler: Callable[[Request, Principal], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = await self._principal(request)
                return await handler(request, principal)
            except APIError as exc:
                return _error(exc.status, exc.code, exc.message)

        return endpoint

    async def _principal(self, request: Request) -> Principal:
        client = request.client.host if request.client else "-"
        try:
            principal = await self.access.from_authorization(
                request.headers.get("authorization"), client
            )
        except AuthFailed:
            raise APIError(401, "UNAUTHORIZED", "authentication failed") from None
        except LockedOut as exc:
            raise APIError(429, "TOO_MANY_REQUESTS", str(exc)) from None
        except AuthUnavailable:
            raise APIError(503, "UNAVAILABLE", "directory unavailable; retry") from None
        if principal.anonymous:
            raise APIError(401, "UNAUTHORIZED", "authentication required")
        return principal

    def _event(self, request: Request, p: Principal, action: str, **fields: Any) -> AuditEvent:
        return AuditEvent(
            action,
            actor=p.name,
            actor_type=p.kind,  # type: ignore[arg-type]
            client_addr=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            **fields,
        )

    # --- audit ------------------------------------------------------------------------------

    @staticmethod
    def _require_admin(p: Principal) -> None:
        if not (p.kind == "user" and p.is_admin):
            raise APIError(403, "DENIED", "system administrators only")

    @staticmethod
    def _filters(request: Request) -> AuditFilter:
        qp = request.query_params

        def when(name: str) -> datetime | None:
            raw = qp.get(name)
            if not raw:
                return None
            try:
                return datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise APIError(400, "INVALID", f"{name} must be an ISO 8601 time") from None

        result = qp.get("result")
        if result is not None and result not in ("success", "failure", "denied"):
            raise APIError(400, "INVALID", "result is success, failure or denied")
        return AuditFilter(
            actor=qp.get("actor"),
            action=qp.get("action"),
            repository=qp.get("repository"),
            result=result,
            since=when("since"),
            until=when("until"),
        )

    async def audit_query(self, request: Request, p: Principal) -> Response:
        self._require_admin(p)
        f = self._filters(request)
        qp = request.query_params
        try:
            limit = int(qp.get("limit", "100"))
            cursor = int(qp["cursor"]) if qp.get("cursor") else None
        except ValueError:
            raise APIError(400, "INVALID", "limit and cursor are integers") from None
        if not 1 <= limit <= 1000:
            raise APIError(400, "INVALID", "limit is 1 to 1000")
        page = await query_events(
            self.ctx.engine,
            actor=f.actor,
            action=f.action,
            repository=f.repository,
            result=f.result,
            since=f.since,
            until=f.until,
            cursor=cursor,
            limit=limit,
        )
        return JSONResponse(
            {"events": [r.to_dict() for r in page.events], "next_cursor": page.next_cursor}
        )

    async def audit_export(self, request: Request, p: Principal) -> Response:
        self._require_admin(p)
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise APIError(400, "INVALID", "format is jsonl or csv")
        filters = self._filters(request)

        async def body() -> Any:
            async for chunk in iter_export(self.ctx.engine, fmt, filters):  # type: ignore[arg-type]
                yield chunk.encode()

        media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        return StreamingResponse(
            body(),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="audit.{fmt}"'},
        )

    # --- repository permissions -------------------------------------------------------------

    async def _manageable(self, p: Principal, repo: str) -> None:
        if not valid_name(repo):
            raise APIError(400, "NAME_INVALID", "invalid repository name")
        if ADMIN not in await self.access.role_actions(p, repo):
            raise APIError(403, "DENIED", "managing permissions needs the admin role")

    async def list_permissions(self, request: Request, p: Principal) -> Response:
        repo = request.path_params["repo"]
        await self._manageable(p, repo)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.repository_permissions(conn, repo)
        return JSONResponse({"repository": repo, "permissions": rows})

    async def _role(self, request: Request) -> str | None:
        if request.method == "DELETE":
            return None
        try:
            body = await request.json()
        except ValueError:
            raise APIError(400, "INVALID", 'body must be JSON: {"role": ...}') from None
        role = body.get("role") if isinstance(body, dict) else None
        if role not in ROLES:
            raise APIError(400, "INVALID", f"role must be one of {', '.join(ROLES)}")
        return str(role)

    async def set_user_permission(self, request: Request, p: Principal) -> Response:
        repo, user = request.path_params["repo"], request.path_params["user"]
        await self._manageable(p, repo)
        role = await self._role(request)
        async with self.ctx.write_engine.begin() as conn:
            row = await aq.user_by_name(conn, user) if _NAME.match(user) else None
            if row is None:
                raise APIError(404, "NOT_FOUND", f"no user {user}")
            await self._apply(conn, repo, role, user_id=row.id)
        await self._audited(request, p, repo, role, f"user:{user}")
        return Response(status_code=204)

    async def set_team_permission(self, request: Request, p: Principal) -> Response:
        repo = request.path_params["repo"]
        org, team = request.path_params["org"], request.path_params["team"]
        await self._manageable(p, repo)
        role = await self._role(request)
        async with self.ctx.write_engine.begin() as conn:
            org_id = await aq.org_by_name(conn, org) if _NAME.match(org) else None
            tid = await aq.team_id(conn, org_id, team) if org_id and _NAME.match(team) else None
            if tid is None:
                raise APIError(404, "NOT_FOUND", f"no team {org}/{team}")
            await self._apply(conn, repo, role, team_id=tid)
        await self._audited(request, p, repo, role, f"team:{org}/{team}")
        return Response(status_code=204)

    async def _apply(self, conn: Any, repo: str, role: str | None, **subject: int) -> None:
        repo_id = await q.ensure_repository(conn, repo, namespace_of(repo))
        if role is None:
            await aq.revoke(conn, repository_id=repo_id, **subject)
        else:
            await aq.grant(conn, role, repository_id=repo_id, **subject)

    async def _audited(
        self, request: Request, p: Principal, repo: str, role: str | None, subject: str
    ) -> None:
        action = "permission.revoke" if role is None else "permission.grant"
        await self.audit.record_now(
            self._event(
                request, p, action, repository=repo, details={"subject": subject, "role": role}
            )
        )
