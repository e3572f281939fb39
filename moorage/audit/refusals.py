"""Refused requests as audit events (issue 9 "audit of refusals", issue 11 "audit gaps").

Every 401, 403 and 429 that /v2 or /api/v1 answers becomes an event here, built after the
response from what the request left in its ASGI scope on the way: the principal the policy or the
resolver authenticated (``moorage.principal`` / ``moorage.resolved``), the /v2 route
(``moorage.route``) or the API operation (``moorage.api_op``). Three kinds:

* credentials that did not authenticate (a Basic guess, a bad PAT, a bad or foreign bearer
  token): ``login.failed``, one record per attempt as on /auth/token, the name tried in
  ``details.attempted_actor`` — never in ``actor``, which only ever names a verified identity;
* refusals of a throttled login (429): ``login.throttled``;
* everything else (an authenticated caller without the right, an anonymous caller challenged):
  the route's action (``manifest.push``, ``blob.pull``, ``api.update_repository``, ...) with
  ``result=denied`` and the status.

The last two go through ``AuditLog.record_refusal``: one record per actor x repository x
action (x status, x name tried) per ``refusal_aggregate_seconds`` with a count, so a client
hammering a repository cannot flood the log; they are never sampled or dropped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .events import AuditEvent

REFUSAL_STATUSES = frozenset({401, 403, 429})

_NAME_LIMIT = 200


def _header(scope: Any, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return bytes(v).decode("latin-1")
    return None


def attempted_actor(authorization: str | None) -> str | None:
    """The user name a Basic header claims (unverified: for ``attempted_actor`` only)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    name, sep, _ = raw.partition(":")
    return name[:_NAME_LIMIT] if sep and name else None


def _principal(scope: Any) -> Any:
    principal = scope.get("moorage.principal")
    if principal is None:
        resolved = scope.get("moorage.resolved")
        principal = getattr(resolved, "principal", None)
    return principal


def _v2_action(scope: Any) -> tuple[str, str | None, dict[str, Any]]:
    """(action, repository, details) of a /v2 request from its matched route."""
    method = str(scope.get("method", ""))
    route = scope.get("moorage.route")
    path = str(scope.get("path", ""))
    if route is None:
        if path.rstrip("/") == "/v2":
            return "registry.base", None, {}
        if path.rstrip("/") == "/v2/_catalog":
            return "catalog.list", None, {}
        return "registry.request", None, {}
    kind, params = route
    repository = params.get("name")
    details: dict[str, Any] = {}
    if kind == "manifest":
        ref = str(params.get("ref", ""))
        if method in ("GET", "HEAD"):
            action = "manifest.pull"
        elif method == "PUT":
            action = "manifest.push"
        else:
            action = "manifest.delete" if ":" in ref else "tag.delete"
    elif kind == "blob":
        action = "blob.delete" if method == "DELETE" else "blob.pull"
    elif kind in ("uploads", "upload"):
        action = "blob.push"
    elif kind == "tags":
        action = "tag.list"
    elif kind == "referrers":
        action = "referrers.list"
    else:
        action = f"registry.{kind}"
    return action, repository, details


def _api_action(scope: Any) -> tuple[str, str | None, dict[str, Any]]:
    found = scope.get("moorage.api_op")
    if found is None:
        return "api.request", None, {}
    op, params = found
    name = getattr(getattr(op, "handler", None), "__name__", "") or "request"
    details: dict[str, Any] = {"operation": f"{op.method} {op.path}"}
    for key in ("organization", "namespace", "team", "user", "robot"):
        if key in params:
            details[key] = str(params[key])[:200]
    return f"api.{name}", params.get("repository"), details


def refusal(scope: Any, status: int) -> tuple[str, AuditEvent] | None:
    """The audit event for a refused /v2 or /api/v1 request, and how to record it:
    ``"each"`` (a failed login: one record per attempt) or ``"aggregate"``; None when the
    request is none of these (or was audited where it was refused)."""
    if status not in REFUSAL_STATUSES:
        return None
    path = str(scope.get("path", ""))
    if path == "/v2" or path.startswith("/v2/"):
        area = "v2"
        action, repository, details = _v2_action(scope)
    elif path == "/api/v1" or path.startswith("/api/v1/"):
        area = "api"
        found = scope.get("moorage.api_op")
        if found is not None and getattr(found[0], "auth", "") == "none" and status != 429:
            return None  # the operation audits itself (POST /session: login.failed)
        action, repository, details = _api_action(scope)
    else:
        return None
    client = scope.get("client")
    common: dict[str, Any] = {
        "client_addr": client[0] if client else None,
        "user_agent": _header(scope, b"user-agent"),
        "repository": repository,
    }
    details = {"status": status, "method": str(scope.get("method", "")), "via": area, **details}
    principal = _principal(scope)
    authorization = _header(scope, b"authorization")
    if principal is None and authorization:
        # The credentials sent did not authenticate (or their owner is being throttled).
        details["scheme"] = authorization.partition(" ")[0].lower()[:20]
        tried = attempted_actor(authorization)
        if tried:
            details["attempted_actor"] = tried
        if status == 429:
            details["action"] = action
            event = AuditEvent(
                "login.throttled", actor="", result="denied", details=details, **common
            )
            return "aggregate", event
        if status == 401:
            details["action"] = action
            return "each", AuditEvent(
                "login.failed", actor="", result="failure", details=details, **common
            )
    if principal is None or getattr(principal, "anonymous", False):
        actor, actor_type = "anonymous", "anonymous"
    else:
        actor, actor_type = str(principal.name), str(principal.kind)
    event = AuditEvent(
        action,
        actor=actor,
        actor_type=actor_type,  # type: ignore[arg-type]
        result="denied",
        details=details,
        **common,
    )
    return "aggregate", event
