"""Shared by every management service: who calls (Caller), audit, transactions and the
authorization helpers. A capability's own management service subclasses AdminService.
See the package docstring for the authorization rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...audit import AuditEvent, AuditLog
from ...auth import admin
from ...auth.scopes import ADMIN
from ...auth.service import AccessService, Principal
from ...auth.sessions import SessionStore
from ...db import access_queries as aq
from ...db import management_queries as mq
from ...db.engine import writer
from ..context import ServiceContext
from ..errors import Denied, Invalid, Missing
from ..manifests import ManifestService
from ..rules import Requester

MAX_DESCRIPTION = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, and from where (for the audit record)."""

    principal: Principal
    client_addr: str | None = None
    user_agent: str | None = None
    session_id: str | None = None  # the web session making the call, if any


def _text(value: Any, field: str, limit: int = MAX_DESCRIPTION) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid(field, f"{field} is text of at most {limit} characters")
    if "\x00" in value:
        raise Invalid(field, f"{field} must not contain NUL characters")
    return value


def _optional_text(value: Any, field: str, limit: int) -> str | None:
    return None if value is None else _text(value, field, limit)


class AdminService:
    def __init__(
        self,
        ctx: ServiceContext,
        access: AccessService,
        audit: AuditLog,
        sessions: SessionStore | None = None,
    ) -> None:
        self.ctx = ctx
        self.access = access
        self.audit = audit
        self.sessions = sessions or SessionStore(ctx.write_engine, access.config.session)
        self.manifests = ManifestService(ctx)

    # --- plumbing ---------------------------------------------------------------------------

    async def _audit(self, c: Caller, action: str, **fields: Any) -> None:
        p = c.principal
        await self.audit.record_now(
            AuditEvent(
                action,
                actor=p.name,
                actor_type=p.kind,  # type: ignore[arg-type]
                client_addr=c.client_addr,
                user_agent=c.user_agent,
                **fields,
            )
        )

    def requester(self, c: Caller, repository: str) -> Requester:
        """The caller as the content rules see it (services/rules.py)."""
        p, access = c.principal, self.access

        async def may(action: str) -> bool:
            return action in await access.allowed_actions(p, repository)

        return Requester(p.name, p.kind, p.kind == "user" and p.is_admin, may)

    def _tx(self) -> Any:
        return writer(self.ctx.write_engine).begin()

    @staticmethod
    def _sysadmin(c: Caller) -> None:
        p = c.principal
        if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
            raise Denied("system administrators only")
        if not p.may_use_api(write=True):
            raise Denied("this token lacks the api:write scope")

    async def _repo_action(self, c: Caller, repo: str, action: str) -> None:
        admin.validate_repository(repo)
        actions = await self.access.allowed_actions(c.principal, repo)
        if action not in actions:
            raise Denied(f"this needs the {action} right on {repo}")

    async def _org_admin(self, c: Caller, org: str) -> None:
        actions = await self.access.organization_actions(c.principal, org)
        if ADMIN not in actions:
            raise Denied(f"this needs the admin role on organization {org}")

    async def _org_reader(self, c: Caller, org: str) -> None:
        p = c.principal
        if await self.access.organization_actions(p, org):
            return
        if p.kind == "user" and p.id is not None:
            async with self.ctx.engine.connect() as conn:
                if org in await mq.user_org_names(conn, p.id):
                    return
        raise Denied(f"organization {org} is visible to its members only")

    async def _set_grant(
        self,
        c: Caller,
        target: str,
        role: str | None,
        *,
        user: str | None,
        team: str | None,
        **where: str,
    ) -> None:
        """Organization and repository admins must name whom they grant, so they learn whether
        a username exists (as in Harbor and Quay), but no more: a disabled account answers like
        a missing one, and teams are those of the target's own organization (Quay's rule),
        never another organization's. System administrators see everything anyway."""
        p = c.principal
        sysadmin = p.kind == "user" and p.is_admin and p.token_scopes is None
        if team is not None and not sysadmin:
            home = target.split("/", 1)[0]
            if team.partition("/")[0] != home:
                raise Invalid("team", f"a team of {home} ({home}/TEAM) only")
        async with self._tx() as conn:
            if user is not None and not sysadmin:
                row = await aq.user_by_name(conn, user)
                if role is None and row is None:
                    return  # nothing to revoke: as for an account that holds no grant here
                if role is not None and (row is None or row.disabled):
                    raise Missing(f"no user {user}")
            await admin.grant_role_in(conn, role, user=user, team=team, target=target)
        action = "permission.revoke" if role is None else "permission.grant"
        subject = f"user:{user}" if user is not None else f"team:{team}"
        details = {"subject": subject, "role": role, **where}
        await self._audit(c, action, repository=where.get("repository"), details=details)

    def _self_or_admin(self, c: Caller, username: str, write: bool) -> bool:
        """True for a system administrator; False for the user themselves; Denied otherwise."""
        p = c.principal
        if p.token_scopes is not None or not p.may_use_api(write):
            raise Denied("this credential may not manage accounts")
        if p.kind == "user" and p.is_admin:
            return True
        if p.kind == "user" and p.name == username:
            return False
        raise Denied("only the user themselves or a system administrator")

    @staticmethod
    def _sysadmin_read(c: Caller) -> None:
        p = c.principal
        if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
            raise Denied("system administrators only")
        if not p.may_use_api(write=False):
            raise Denied("this token lacks the api:read scope")
