"""Changes made through the REST API and the web UI: each authorized and audited here, once.

Authorization asks AccessService (the registry's rules): repository changes need the role's
action on the repository (delete a tag or manifest: ``delete``; description, visibility,
permissions, delete the repository: ``admin``); an organization's teams, members, robots and
permissions need the admin role on the organization; organizations and users are created by
system administrators; a user manages their own profile, password and personal access tokens.
Validation and the database changes reuse moorage/auth/admin.py (shared with the command line).
Every change is written to the audit log before the call returns (``AuditLog.record_now``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..audit import AuditEvent, AuditLog
from ..auth import admin
from ..auth.passwords import hash_password, hash_secret, new_secret
from ..auth.pat import PAT_SCOPES, expiry, looks_like_pat
from ..auth.scopes import ADMIN, DELETE
from ..auth.service import ANONYMOUS, AccessService, AuthFailed, LockedOut, Principal
from ..auth.sessions import Session, SessionStore
from ..db import access_queries as aq
from ..db import catalog_queries as cq
from ..db import management_queries as mq
from ..db import session_queries as sq
from ..db.engine import writer
from ..oci.names import valid_tag
from .catalog import check_limit, decode_cursor, page_of, valid_digest
from .context import ServiceContext
from .errors import Conflict, Denied, Invalid, ManifestUnknown, Missing
from .manifests import ManifestService
from .models import (
    AccessToken,
    AccessTokenWithSecret,
    Grant,
    Organization,
    Page,
    Robot,
    RobotAccess,
    RobotWithSecret,
    Team,
    TeamGrant,
    User,
)

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


class ManagementService:
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

    # --- web sessions (the UI's login form) -------------------------------------------------

    async def login(
        self, username: str, password: str, client_addr: str, user_agent: str | None
    ) -> tuple[str, Session]:
        """Check a user's password (with the registry's lockout) and open a web session:
        (cookie value for SESSION_COOKIE, session). Robots and tokens cannot open sessions.
        Raises AuthFailed / LockedOut / Unavailable (moorage.auth.service). Audited."""

        anonymous = Caller(ANONYMOUS, client_addr, user_agent)
        try:
            if "+" in username or looks_like_pat(password):
                raise AuthFailed("web sessions are for users and their passwords")
            principal = await self.access.login(username, password, client_addr)
        except AuthFailed:
            await self._audit(
                anonymous,
                "login.failed",
                result="failure",
                details={"username": username[:200], "via": "web"},
            )
            raise
        assert principal.id is not None
        cookie, session = await self.sessions.create(principal.id, client_addr, user_agent)
        await self._audit(
            Caller(principal, client_addr, user_agent), "login", details={"via": "web"}
        )
        return cookie, session

    async def logout(self, c: Caller, cookie_value: str) -> None:
        if await self.sessions.delete(cookie_value):
            await self._audit(c, "logout", details={"via": "web"})

    # --- repositories -----------------------------------------------------------------------

    async def update_repository(
        self, c: Caller, repo: str, *, description: str | None, visibility: str | None
    ) -> None:
        await self._repo_action(c, repo, ADMIN)
        changes: dict[str, Any] = {}
        async with self._tx() as conn:
            if await cq.repository(conn, repo) is None:
                raise Missing(f"no repository {repo}")
            if description is not None:
                changes["description"] = _text(description, "description")
                await cq.set_description(conn, repo, changes["description"])
            if visibility is not None:
                await admin.set_visibility_in(conn, repo, visibility)
                changes["visibility"] = visibility
        if changes:
            await self._audit(c, "repository.update", repository=repo, details=changes)

    async def delete_tag(self, c: Caller, repo: str, tag: str) -> None:
        if not valid_tag(tag):
            raise Invalid("tag", "invalid tag")
        await self._repo_action(c, repo, DELETE)
        await self._delete_reference(repo, tag)
        await self._audit(c, "tag.delete", repository=repo, tag=tag)

    async def delete_manifest(self, c: Caller, repo: str, digest: str) -> None:
        if not valid_digest(digest):
            raise Invalid("digest", "digest is <algorithm>:<hex>")
        await self._repo_action(c, repo, DELETE)
        await self._delete_reference(repo, digest)
        await self._audit(c, "manifest.delete", repository=repo, digest=digest)

    async def _delete_reference(self, repo: str, reference: str) -> None:
        try:
            await self.manifests.delete(repo, reference)
        except ManifestUnknown:
            raise Missing(f"no {reference} in {repo}") from None
        except Exception as exc:  # NameUnknown
            if getattr(exc, "code", "") == "NAME_UNKNOWN":
                raise Missing(f"no repository {repo}") from None
            raise

    async def delete_repository(self, c: Caller, repo: str) -> None:
        """The repository, its tags, manifests, links, uploads and direct permissions; its
        blobs become garbage for GC once no other repository links them."""
        await self._repo_action(c, repo, ADMIN)
        async with self._tx() as conn:
            row = await cq.repository(conn, repo)
            if row is None:
                raise Missing(f"no repository {repo}")
            await cq.delete_repository(conn, row.id)
        await self._audit(c, "repository.delete", repository=repo)

    async def repository_permissions(self, c: Caller, repo: str) -> list[Grant]:
        await self._repo_action(c, repo, ADMIN)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.repository_permissions(conn, repo)
        return [Grant(**r) for r in rows]

    async def set_repository_permission(
        self, c: Caller, repo: str, role: str | None, *, user: str | None, team: str | None
    ) -> None:
        """Grant (or with role None revoke) a role on a repository to a user or org/team."""
        await self._repo_action(c, repo, ADMIN)
        await self._set_grant(c, repo, role, user=user, team=team, repository=repo)

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

    # --- organizations ----------------------------------------------------------------------

    async def list_organizations(
        self, c: Caller, cursor: str | None = None, limit: int | None = None
    ) -> Page[Organization]:
        n = check_limit(limit)
        p = c.principal
        async with self.ctx.engine.connect() as conn:
            names: frozenset[str] | None = None
            if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
                names = (
                    await mq.user_org_names(conn, p.id)
                    if p.kind == "user" and p.id is not None
                    else frozenset()
                )
            rows = await mq.list_orgs(conn, names, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[Organization](items=[_org(r) for r in items], next_cursor=nxt)

    async def organization(self, c: Caller, org: str) -> Organization:
        await self._org_reader(c, org)  # before existence: outsiders learn no names
        async with self.ctx.engine.connect() as conn:
            await admin.org_id_in(conn, org)
            return _org(await mq.org_full(conn, org))

    async def create_organization(
        self, c: Caller, name: str, description: str = ""
    ) -> Organization:
        self._sysadmin(c)
        description = _text(description, "description")
        async with self._tx() as conn:
            await admin.create_org_in(conn, name, description)
            row = await mq.org_full(conn, name)
        await self._audit(c, "organization.create", details={"organization": name})
        return _org(row)

    async def update_organization(self, c: Caller, org: str, description: str) -> Organization:
        description = _text(description, "description")
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            await mq.update_org(conn, await admin.org_id_in(conn, org), description)
            row = await mq.org_full(conn, org)
        await self._audit(c, "organization.update", details={"organization": org})
        return _org(row)

    async def delete_organization(self, c: Caller, org: str) -> None:
        self._sysadmin(c)
        async with self._tx() as conn:
            org_id = await admin.org_id_in(conn, org)
            if await mq.namespace_has_repositories(conn, org):
                raise Conflict(f"organization {org} still has repositories; delete them first")
            await mq.delete_org(conn, org_id, org)
        await self._audit(c, "organization.delete", details={"organization": org})

    async def organization_permissions(self, c: Caller, org: str) -> list[Grant]:
        await self._existing_org_admin(c, org)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.organization_permissions(conn, await admin.org_id_in(conn, org))
        return [Grant(**r) for r in rows]

    async def set_organization_permission(
        self, c: Caller, org: str, role: str | None, *, user: str | None, team: str | None
    ) -> None:
        await self._existing_org_admin(c, org)
        await self._set_grant(c, org, role, user=user, team=team, organization=org)

    async def _existing_org_admin(self, c: Caller, org: str) -> None:
        """The admin role on *org*, asked before its existence: to anyone else an existing
        organization and a missing one look the same (403)."""
        await self._org_admin(c, org)
        async with self.ctx.engine.connect() as conn:
            await admin.org_id_in(conn, org)

    # --- teams ------------------------------------------------------------------------------

    async def list_teams(
        self, c: Caller, org: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[Team]:
        n = check_limit(limit)
        await self._org_reader(c, org)
        async with self.ctx.engine.connect() as conn:
            org_id = await admin.org_id_in(conn, org)
            rows = await mq.list_teams(conn, org_id, decode_cursor(cursor), n + 1)
            items, nxt = page_of(rows, [r.name for r in rows], n)
            members = await mq.team_members_of(conn, [r.id for r in items])
        return Page[Team](
            items=[_team(org, r, members.get(r.id, [])) for r in items], next_cursor=nxt
        )

    async def team(self, c: Caller, org: str, team: str) -> Team:
        await self._org_reader(c, org)
        async with self.ctx.engine.connect() as conn:
            tid = await admin.team_id_in(conn, org, team)
        return await self._team_model(org, tid)

    async def team_permissions(self, c: Caller, org: str, team: str) -> list[TeamGrant]:
        """The roles *org/team* holds (organization and repository grants): its org's admins,
        as for the organization's own permissions."""
        await self._existing_org_admin(c, org)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.team_permissions(conn, await admin.team_id_in(conn, org, team))
        return [TeamGrant(**r) for r in rows]

    async def _team_model(self, org: str, tid: int) -> Team:
        async with self.ctx.engine.connect() as conn:
            row = await mq.team_row(conn, tid)
            members = await mq.team_members_of(conn, [tid])
        return _team(org, row, members[tid])

    async def create_team(
        self,
        c: Caller,
        org: str,
        name: str,
        description: str = "",
        members: list[str] | None = None,
    ) -> Team:
        await self._existing_org_admin(c, org)
        description = _text(description, "description")
        async with self._tx() as conn:
            tid = await admin.create_team_in(
                conn, org, name, members or [], description=description, exist_ok=False
            )
        await self._audit(
            c, "team.create", details={"team": f"{org}/{name}", "members": members or []}
        )
        return await self._team_model(org, tid)

    async def update_team(self, c: Caller, org: str, team: str, description: str) -> Team:
        description = _text(description, "description")
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            tid = await admin.team_id_in(conn, org, team)
            await mq.update_team(conn, tid, description)
        await self._audit(c, "team.update", details={"team": f"{org}/{team}"})
        return await self._team_model(org, tid)

    async def delete_team(self, c: Caller, org: str, team: str) -> None:
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            await mq.delete_team(conn, await admin.team_id_in(conn, org, team))
        await self._audit(c, "team.delete", details={"team": f"{org}/{team}"})

    async def set_team_member(
        self, c: Caller, org: str, team: str, user: str, member: bool
    ) -> None:
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            tid = await admin.team_id_in(conn, org, team)
            row = await mq.team_row(conn, tid)
            if row.source == "ldap":
                raise Conflict("this team's members come from the directory (LDAP)")
            uid = (await admin.user_in(conn, user)).id
            if member:
                await aq.add_team_member(conn, tid, uid)
            elif not await aq.remove_team_member(conn, tid, uid):
                raise Missing(f"{user} is not a member of {org}/{team}")
        action = "team.member.add" if member else "team.member.remove"
        await self._audit(c, action, details={"team": f"{org}/{team}", "user": user})

    # --- users ------------------------------------------------------------------------------

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

    async def list_users(
        self,
        c: Caller,
        query: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[User]:
        self._sysadmin_read(c)
        n = check_limit(limit)
        if query is not None and len(query) > 64:
            raise Invalid("q", "q is at most 64 characters")
        async with self.ctx.engine.connect() as conn:
            rows = await mq.list_users(conn, query or None, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.username for r in rows], n)
        return Page[User](items=[_user(r) for r in items], next_cursor=nxt)

    @staticmethod
    def _sysadmin_read(c: Caller) -> None:
        p = c.principal
        if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
            raise Denied("system administrators only")
        if not p.may_use_api(write=False):
            raise Denied("this token lacks the api:read scope")

    async def user(self, c: Caller, username: str) -> User:
        self._self_or_admin(c, username, write=False)
        async with self.ctx.engine.connect() as conn:
            row = await mq.user_full(conn, username)
        if row is None:
            raise Missing(f"no user {username}")
        return _user(row)

    async def create_user(
        self,
        c: Caller,
        username: str,
        password: str | None,
        *,
        email: str | None = None,
        display_name: str | None = None,
        is_admin: bool = False,
    ) -> User:
        self._sysadmin(c)
        email = _optional_text(email, "email", 255)
        display_name = _optional_text(display_name, "display_name", 255)
        if password is None:
            raise Invalid("password", "password is required")
        async with self._tx() as conn:
            await admin.create_user_in(
                conn, username, password, is_admin=is_admin, email=email, display_name=display_name
            )
            row = await mq.user_full(conn, username)
        await self._audit(c, "user.create", details={"user": username, "is_admin": is_admin})
        return _user(row)

    async def update_user(self, c: Caller, username: str, changes: dict[str, Any]) -> User:
        """Profile fields (email, display_name) by the user or an admin; is_admin, disabled and
        password (without the old one) by a system administrator only."""
        is_admin = self._self_or_admin(c, username, write=True)
        values: dict[str, Any] = {}
        for key in ("email", "display_name"):
            if key in changes:
                values[key] = _optional_text(changes[key], key, 255)
        for key in ("is_admin", "disabled"):
            if key in changes:
                if not is_admin:
                    raise Denied(f"only a system administrator may change {key}")
                if not isinstance(changes[key], bool):
                    raise Invalid(key, f"{key} is true or false")
                values[key] = changes[key]
        if "password" in changes:
            if not is_admin or username == c.principal.name:
                raise Denied("change your own password with the old one (POST .../password)")
            admin.validate_password(changes["password"])
            values["password_hash"] = hash_password(changes["password"])
        async with self._tx() as conn:
            row = await admin.user_in(conn, username)
            if row.id == c.principal.id and (
                values.get("is_admin") is False or values.get("disabled") is True
            ):
                raise Conflict(
                    "you cannot remove your own administrator rights or disable yourself"
                )
            if "password_hash" in values and row.source != "local":
                raise Conflict("a directory (LDAP) user's password is kept by the directory")
            if values:
                await mq.update_user(conn, row.id, values)
            if "disabled" in values or "password_hash" in values:
                # Disabling ends everything; re-enabling must not revive the tokens issued
                # before the disabling; a reset password voids what the old one obtained.
                await mq.end_credentials(conn, row.id)
            full = await mq.user_full(conn, username)
        if values:
            fields = sorted(k if k != "password_hash" else "password" for k in values)
            await self._audit(c, "user.update", details={"user": username, "fields": fields})
        return _user(full)

    async def change_password(self, c: Caller, username: str, old: str, new: str) -> None:
        """A user changes their own password, proving the old one; their other sessions and
        every token issued for the old password end (the session making the change stays)."""
        if self._self_or_admin(c, username, write=True) and c.principal.name != username:
            raise Denied("set another user's password with PATCH /users/{username}")
        if not isinstance(old, str) or not old:
            raise Invalid("old_password", "old_password is required")
        admin.validate_password(new, "new_password")
        async with self.ctx.engine.connect() as conn:
            row = await admin.user_in(conn, username)
        if row.source != "local":
            raise Conflict("a directory (LDAP) user's password is kept by the directory")
        # Checked as a login (counted, locked out): else a session or an api:write token
        # could guess the password here without limit.
        try:
            if looks_like_pat(old):
                raise AuthFailed("a token is not a password")
            await self.access.login(username, old, c.client_addr or "-")
        except AuthFailed:
            raise Invalid("old_password", "the old password is wrong") from None
        except LockedOut:
            raise Denied("too many failed attempts; try again later") from None
        async with self._tx() as conn:
            await mq.update_user(conn, row.id, {"password_hash": hash_password(new)})
            await mq.end_credentials(conn, row.id, keep_session=c.session_id)
        await self._audit(c, "user.update", details={"user": username, "fields": ["password"]})

    async def delete_user(self, c: Caller, username: str) -> None:
        self._sysadmin(c)
        async with self._tx() as conn:
            row = await admin.user_in(conn, username)
            if row.id == c.principal.id:
                raise Conflict("you cannot delete your own account")
            if await mq.namespace_has_repositories(conn, username):
                raise Conflict(f"{username} still has repositories; delete them first")
            await mq.delete_user(conn, row.id, username)
        await self._audit(c, "user.delete", details={"user": username})

    # --- robots -----------------------------------------------------------------------------

    async def _namespace_admin(self, c: Caller, namespace: str) -> None:
        """Robots of a namespace are managed by its organization's admins, or by the user
        whose personal namespace it is (and system administrators)."""
        admin.validate_username(namespace, "namespace")
        p = c.principal
        if p.token_scopes is not None or not p.may_use_api(write=True) or p.kind != "user":
            raise Denied("this credential may not manage robot accounts")
        if p.is_admin or p.name == namespace:
            return
        async with self.ctx.engine.connect() as conn:
            is_org = await aq.org_by_name(conn, namespace) is not None
        if not is_org:
            raise Denied(f"robots of {namespace} are managed by {namespace} only")
        await self._org_admin(c, namespace)

    @staticmethod
    def _no_token_minting(c: Caller) -> None:
        """A robot secret is a credential: like tokens, personal access tokens cannot mint
        them (else a narrow or later revoked token leaves a wider robot behind)."""
        if c.principal.pat_scopes is not None:
            raise Denied("personal access tokens cannot create robot secrets; log in instead")

    async def list_robots(
        self, c: Caller, namespace: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[Robot]:
        n = check_limit(limit)
        await self._namespace_admin(c, namespace)
        async with self.ctx.engine.connect() as conn:
            rows = await mq.list_robots(conn, namespace, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[Robot](items=[_robot(r) for r in items], next_cursor=nxt)

    async def all_robots(
        self,
        c: Caller,
        namespace: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Robot]:
        """Every robot account, or those of one namespace (system administrators)."""
        n = check_limit(limit)
        self._sysadmin_read(c)
        if namespace is not None:
            admin.validate_username(namespace, "namespace")
        async with self.ctx.engine.connect() as conn:
            rows = await mq.list_robots(conn, namespace, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[Robot](items=[_robot(r) for r in items], next_cursor=nxt)

    async def robot(self, c: Caller, namespace: str, name: str) -> Robot:
        await self._namespace_admin(c, namespace)
        async with self.ctx.engine.connect() as conn:
            row = await mq.robot_full(conn, f"{namespace}+{name}")
        if row is None:
            raise Missing(f"no robot {namespace}+{name}")
        return _robot(row)

    async def create_robot(
        self,
        c: Caller,
        namespace: str,
        name: str,
        access: Any,
        *,
        description: str = "",
        expires_in_days: int | None = None,
    ) -> RobotWithSecret:
        await self._namespace_admin(c, namespace)
        self._no_token_minting(c)
        description = _text(description, "description")
        if expires_in_days is not None and not (
            isinstance(expires_in_days, int) and 1 <= expires_in_days <= 3650
        ):
            raise Invalid("expires_in_days", "expires_in_days is 1 to 3650")
        async with self._tx() as conn:
            full, secret = await admin.create_robot_in(
                conn,
                namespace,
                name,
                access,
                expires_in_days,
                c.principal.name,
                description,
            )
            row = await mq.robot_full(conn, full)
        await self._audit(
            c,
            "robot.create",
            details={"robot": full, "access": row.access, "expires_in_days": expires_in_days},
        )
        return RobotWithSecret(**_robot(row).model_dump(), secret=secret)

    async def update_robot(
        self, c: Caller, namespace: str, name: str, changes: dict[str, Any]
    ) -> Robot:
        await self._namespace_admin(c, namespace)
        values: dict[str, Any] = {}
        if "description" in changes:
            values["description"] = _text(changes["description"], "description")
        if "access" in changes:
            values["access"] = admin.validate_robot_access(namespace, changes["access"])
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            if values:
                await mq.update_robot(conn, row.id, values)
            row = await mq.robot_full(conn, row.name)
        if values:
            await self._audit(
                c, "robot.update", details={"robot": row.name, "fields": sorted(values)}
            )
        return _robot(row)

    @staticmethod
    async def _robot_row(conn: Any, namespace: str, name: str) -> Any:
        row = await mq.robot_full(conn, f"{namespace}+{name}")
        if row is None:
            raise Missing(f"no robot {namespace}+{name}")
        return row

    async def regenerate_robot_secret(
        self, c: Caller, namespace: str, name: str
    ) -> RobotWithSecret:
        """A new secret (shown once); the old one stops working at once. Also un-revokes."""
        await self._namespace_admin(c, namespace)
        self._no_token_minting(c)
        secret = new_secret()
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            await mq.update_robot(
                conn, row.id, {"secret_hash": hash_secret(secret), "revoked_at": None}
            )
            row = await mq.robot_full(conn, row.name)
        await self._audit(c, "robot.regenerate", details={"robot": row.name})
        return RobotWithSecret(**_robot(row).model_dump(), secret=secret)

    async def revoke_robot(self, c: Caller, namespace: str, name: str) -> None:
        await self._namespace_admin(c, namespace)
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            await aq.revoke_robot(conn, row.name)
        await self._audit(c, "robot.revoke", details={"robot": row.name})

    async def delete_robot(self, c: Caller, namespace: str, name: str) -> None:
        await self._namespace_admin(c, namespace)
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            await mq.delete_robot(conn, row.id)
        await self._audit(c, "robot.delete", details={"robot": row.name})

    # --- personal access tokens -------------------------------------------------------------

    def _token_owner(self, c: Caller, username: str, write: bool) -> None:
        p = c.principal
        if p.pat_scopes is not None and write:
            raise Denied("personal access tokens cannot manage personal access tokens")
        self._self_or_admin(c, username, write)

    async def list_tokens(
        self, c: Caller, username: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[AccessToken]:
        n = check_limit(limit)
        self._token_owner(c, username, write=False)
        after = decode_cursor(cursor)
        if after is not None and not after.isdigit():
            raise Invalid("cursor", "cursor is not one this server issued")
        async with self.ctx.engine.connect() as conn:
            uid = (await admin.user_in(conn, username)).id
            rows = await sq.user_tokens(conn, uid, int(after) if after else None, n + 1)
        items, nxt = page_of(rows, [str(r.id) for r in rows], n)
        return Page[AccessToken](items=[_token(r) for r in items], next_cursor=nxt)

    async def create_token(
        self,
        c: Caller,
        username: str,
        name: str,
        scopes: list[str] | None = None,
        expires_in_days: int | None = None,
    ) -> AccessTokenWithSecret:
        """A new token for the user themselves (administrators cannot mint tokens for others:
        a token acts as its owner)."""
        self._token_owner(c, username, write=True)
        if c.principal.name != username:
            raise Denied("tokens are created by their owner only")
        admin.validate_username(name, "name")
        scopes = list(PAT_SCOPES) if scopes is None else scopes
        if not isinstance(scopes, list) or not scopes or any(s not in PAT_SCOPES for s in scopes):
            raise Invalid("scopes", f"scopes is a non-empty list of {', '.join(PAT_SCOPES)}")
        if expires_in_days is not None and not (
            isinstance(expires_in_days, int) and 1 <= expires_in_days <= 3650
        ):
            raise Invalid("expires_in_days", "expires_in_days is 1 to 3650")
        async with self.ctx.engine.connect() as conn:
            uid = (await admin.user_in(conn, username)).id
            if await sq.token_name_taken(conn, uid, name):
                raise Conflict(f"you already have a token named {name}")
        token, row = await self.access.pats.create(
            uid, name, sorted(set(scopes)), expiry(expires_in_days)
        )
        await self._audit(
            c,
            "token.create",
            details={"user": username, "token": name, "prefix": row.prefix, "scopes": row.scopes},
        )
        return AccessTokenWithSecret(**_token(row).model_dump(), token=token)

    async def delete_token(self, c: Caller, username: str, token_id: int) -> None:
        """Revoke and remove a token (the owner or a system administrator)."""
        self._token_owner(c, username, write=True)
        async with self._tx() as conn:
            uid = (await admin.user_in(conn, username)).id
            row = await sq.token_by_id(conn, uid, token_id)
            if row is None:
                raise Missing(f"no token {token_id} of {username}")
            await sq.delete_token(conn, uid, token_id)
        await self._audit(
            c, "token.delete", details={"user": username, "token": row.name, "prefix": row.prefix}
        )


# --- row → model ------------------------------------------------------------------------------


def _org(r: Any) -> Organization:
    return Organization(
        name=r.name,
        description=r.description or "",
        created_at=mq.aware(r.created_at),
        team_count=int(r.team_count or 0),
        repository_count=int(r.repository_count or 0),
    )


def _team(org: str, r: Any, members: list[str]) -> Team:
    return Team(
        organization=org,
        name=r.name,
        description=r.description or "",
        source="ldap" if r.source == "ldap" else "local",
        created_at=mq.aware(r.created_at),
        members=members,
    )


def _user(r: Any) -> User:
    return User(
        username=r.username,
        email=r.email,
        display_name=r.display_name,
        is_admin=bool(r.is_admin),
        source=r.source,
        disabled=bool(r.disabled),
        created_at=mq.aware(r.created_at),
        last_login_at=mq.aware(r.last_login_at),
    )


def _robot(r: Any) -> Robot:
    access = []
    for entry in r.access or []:
        acts = [a for a in entry.get("actions", []) if a in admin.ROBOT_ACTIONS]
        access.append(
            RobotAccess(
                repository=entry.get("repository"),
                organization=entry.get("organization"),
                actions=acts,
            )
        )
    return Robot(
        name=r.name,
        namespace=r.namespace,
        description=r.description or "",
        access=access,
        expires_at=mq.aware(r.expires_at),
        revoked_at=mq.aware(r.revoked_at),
        created_by=r.created_by,
        created_at=mq.aware(r.created_at),
        last_used_at=mq.aware(r.last_used_at),
    )


def _token(r: sq.TokenRow) -> AccessToken:
    return AccessToken(
        id=r.id,
        name=r.name,
        prefix=r.prefix,
        scopes=r.scopes,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        created_at=r.created_at,
        last_used_at=r.last_used_at,
    )


__all__ = ["Caller", "ManagementService"]
