"""The token endpoint (``/auth/token``): Docker registry token auth and its OAuth2 form.

GET  /auth/token?service=…&scope=…[&offline_token=true]   Basic credentials or anonymous
POST /auth/token  grant_type=password|refresh_token …      (form body, as docker/containerd send)

The issued token's ``access`` is, scope by scope, the intersection of what was asked and what the
caller may do — never more. An anonymous caller gets a token too (granting only what anonymous
access allows), so that clients pulling public repositories follow the usual flow.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from .scopes import Scope, parse_scopes
from .service import (
    ANONYMOUS,
    AccessService,
    AuthFailed,
    LockedOut,
    Principal,
    Unavailable,
    decode_basic,
)
from .tokens import InvalidToken

log = logging.getLogger("moorage.auth")

AuditHook = Callable[[Request, Principal | None, str, str, dict[str, Any]], Awaitable[None]]


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data).encode(),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _error(status: int, code: str, message: str, oauth: str | None = None) -> Response:
    body: dict[str, Any] = {"errors": [{"code": code, "message": message}]}
    if oauth:
        body["error"] = oauth
        body["error_description"] = message
    headers = {"WWW-Authenticate": 'Basic realm="moorage"'} if status == 401 else None
    return _json(body, status, headers)


class TokenEndpoint:
    def __init__(self, access: AccessService, audit: AuditHook | None = None) -> None:
        self.access = access
        self.audit = audit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        if scope["path"] == "/auth/jwks.json":
            response = _json(await self.access.tokens.public_jwks())
        elif request.method == "GET":
            response = await self.get(request)
        elif request.method == "POST":
            response = await self.post(request)
        else:
            response = _error(405, "UNSUPPORTED", "use GET or POST")
        await response(scope, receive, send)

    def _client(self, request: Request) -> str:
        return (request.client.host if request.client else "-") or "-"

    async def _event(
        self,
        request: Request,
        principal: Principal | None,
        action: str,
        result: str,
        details: dict[str, Any],
    ) -> None:
        if self.audit is not None:
            await self.audit(request, principal, action, result, details)

    async def _login(self, request: Request, username: str, password: str) -> Principal | Response:
        try:
            principal = await self.access.login(username, password, self._client(request))
        except AuthFailed:
            await self._event(
                request, None, "login.failed", "failure", {"username": username[:200]}
            )
            return _error(401, "UNAUTHORIZED", "invalid username or password", "invalid_grant")
        except LockedOut as exc:
            await self._event(
                request,
                None,
                "login.failed",
                "denied",
                {"username": username[:200], "reason": "locked"},
            )
            response = _error(429, "TOOMANYREQUESTS", str(exc))
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except Unavailable:
            return _error(503, "UNAVAILABLE", "the directory service is unavailable; retry")
        await self._event(request, principal, "login", "success", {})
        return principal

    async def get(self, request: Request) -> Response:
        header = request.headers.get("authorization")
        principal: Principal = ANONYMOUS
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return _error(401, "UNAUTHORIZED", "use Basic credentials here")
            try:
                username, password = decode_basic(value)
            except AuthFailed:
                return _error(401, "UNAUTHORIZED", "malformed Basic credentials")
            result = await self._login(request, username, password)
            if isinstance(result, Response):
                return result
            principal = result
        if principal.anonymous and not self.access.config.anonymous_access:
            return _error(401, "UNAUTHORIZED", "anonymous access is disabled; log in")
        offline = request.query_params.get("offline_token", "").lower() == "true"
        return await self._issue(
            request,
            principal,
            request.query_params.getlist("scope"),
            offline and not principal.anonymous,
        )

    async def post(self, request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > 16384:
                return _error(400, "UNSUPPORTED", "request too large", "invalid_request")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "UNSUPPORTED", "malformed form body", "invalid_request")

        def first(name: str) -> str:
            return fields.get(name, [""])[0]

        grant = first("grant_type")
        scopes = fields.get("scope", [])
        offline = first("access_type") == "offline"
        if grant == "password":
            result = await self._login(request, first("username"), first("password"))
            if isinstance(result, Response):
                return result
            return await self._issue(request, result, scopes, offline, oauth=True)
        if grant == "refresh_token":
            try:
                claims = await self.access.tokens.verify(
                    first("refresh_token"), token_type="refresh"
                )
                principal = await self.access.from_token_claims(claims)
                if principal.kind != "user":
                    raise AuthFailed("robots re-authenticate with their secret")
            except (InvalidToken, AuthFailed):
                await self._event(request, None, "token.refresh", "failure", {})
                return _error(401, "UNAUTHORIZED", "invalid refresh token", "invalid_grant")
            return await self._issue(request, principal, scopes, False, oauth=True)
        return _error(
            400,
            "UNSUPPORTED",
            "grant_type must be password or refresh_token",
            "unsupported_grant_type",
        )

    async def _issue(
        self,
        request: Request,
        principal: Principal,
        raw_scopes: list[str],
        offline: bool,
        oauth: bool = False,
    ) -> Response:
        requested = parse_scopes(raw_scopes)
        granted = await self.access.grant(principal, requested)
        token, lifetime = await self.access.tokens.issue(
            principal.name,
            principal.kind,
            principal.id,
            granted,
            pat_id=principal.pat_id,
            version=principal.token_version,
            created=principal.created,
        )
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": issued,
        }
        if oauth:
            body["scope"] = " ".join(str(s) for s in granted if s.actions)
            body["token_type"] = "Bearer"
        # A refresh token carries no personal access token's scopes: a token made from a
        # narrow PAT would mint full-rights access tokens. PAT holders re-send the PAT instead.
        # Robots get none either: CI re-authenticates with its secret, and a second long-lived
        # credential would only widen what a leak or a missed rotation leaves behind (docker
        # then stores the secret, as for any registry without identity tokens).
        if offline and principal.pat_scopes is None and principal.kind == "user":
            refresh, _ = await self.access.tokens.issue(
                principal.name,
                principal.kind,
                principal.id,
                [],
                token_type="refresh",
                pat_id=principal.pat_id,
                version=principal.token_version,
                created=principal.created,
            )
            body["refresh_token"] = refresh
        await self._event(
            request,
            principal,
            "token.issue",
            grant_result(requested, granted),
            {
                "requested": [str(s) for s in requested],
                "scopes": [str(s) for s in granted if s.actions],
            },
        )
        return _json(body)


def grant_result(requested: list[Scope], granted: list[Scope]) -> str:
    """``success`` when every action asked for was granted (or nothing was asked), ``denied``
    when none was, ``partial`` in between: what an auditor reads off a token request that a
    client followed with a refused push."""
    asked = {(s.type, s.name, a) for s in requested for a in s.actions}
    if not asked:
        return "success"
    given = {(s.type, s.name, a) for s in granted for a in s.actions}
    if given >= asked:
        return "success"
    return "partial" if given & asked else "denied"
