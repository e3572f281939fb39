"""Who is calling, and what may they do: authentication, lockout and role resolution.

This is the one place where access is decided. The registry protocol asks through
:class:`moorage.auth.policy.RBACPolicy`; the token endpoint asks :meth:`AccessService.grant`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db import access_queries as aq
from ..db import catalog_queries as cq
from ..db import management_queries as mq
from ..db.catalog_queries import ReadScope
from ..db.queries import now
from ..oci.names import namespace_of
from .config import AuthConfig
from .passwords import recently_verified, secret_matches, verify_password
from .pat import PersonalTokens, looks_like_pat
from .scopes import ADMIN, DELETE, PULL, PUSH, ROLE_ACTIONS, Scope
from .throttle import LoginThrottle, Throttled
from .tokens import InvalidToken, TokenClaims, TokenService

log = logging.getLogger("moorage.auth")
# How often a user's last login time is written, at most (per process).
TOUCH_LOGIN_SECONDS = 60.0

ALL_ACTIONS = frozenset({PULL, PUSH, DELETE, ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # anonymous | user | robot | system (a scanner adapter's token)
    name: str
    id: int | None = None
    is_admin: bool = False
    robot_access: tuple[tuple[str, str, frozenset[str]], ...] = ()  # (kind, name, actions)
    # Set when the caller presented a bearer token: what the token grants, nothing more.
    token_scopes: tuple[Scope, ...] | None = None
    token_id: str | None = None
    # Set when the caller presented a personal access token (directly, or through a bearer
    # token issued for one): its scopes (moorage.auth.pat) and its id.
    pat_scopes: frozenset[str] | None = None
    pat_id: int | None = None
    # The account's credential epoch (users/robots.token_version) as read when it
    # authenticated: tokens issued to it carry it, and a password change, a (dis|en)abling, a
    # robot's new secret or revocation make them stale.
    token_version: int = 0
    # The account's creation time (access_queries.account_stamp), carried by its tokens: a
    # later account of the same name cannot use them.
    created: int | None = None

    def may_use_api(self, write: bool) -> bool:
        """Whether a personal access token's scopes allow this REST call (others: yes)."""
        if self.pat_scopes is None:
            return True
        return ("api:write" if write else "api:read") in self.pat_scopes

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal("anonymous", "anonymous")


class AuthFailed(Exception):
    """Credentials were presented and are wrong (one message for every reason)."""


# Too many failures for this account or address: the attempt was not checked; retry after
# ``exc.retry_after`` seconds (moorage.auth.throttle).
LockedOut = Throttled


class Unavailable(Exception):
    """The directory (LDAP) could not be reached."""


class DirectoryIdentity(Protocol):
    username: str
    email: str | None
    display_name: str | None
    dn: str
    teams: list[tuple[str, str]]


class Directory(Protocol):
    async def authenticate(self, username: str, password: str) -> DirectoryIdentity | None: ...


@dataclass
class LoginContext:
    client: str = "-"
    user_agent: str = "-"
    request_id: str = "-"
    events: list[dict[str, object]] = field(default_factory=list)


class AccessService:
    def __init__(
        self,
        engine: AsyncEngine,
        write_engine: AsyncEngine,
        config: AuthConfig,
        tokens: TokenService,
        directory: Directory | None = None,
    ) -> None:
        self.engine = engine
        self.write_engine = write_engine
        self.config = config
        self.tokens = tokens
        self.directory = directory
        self.pats = PersonalTokens(write_engine)
        self.throttle = LoginThrottle(write_engine, config.lockout)
        self._touched: dict[int, float] = {}  # user id -> when its login time was written

    # --- authentication ---------------------------------------------------------------------

    async def from_authorization(self, header: str | None, client: str) -> Principal:
        """Principal for an ``Authorization`` header (Basic or Bearer); anonymous when absent."""
        if not header:
            return ANONYMOUS
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            username, password = decode_basic(value)
            return await self.login(username, password, client)
        if scheme == "bearer":
            if looks_like_pat(value.strip()):
                return await self.from_pat(value.strip())
            return await self.from_token(value.strip())
        raise AuthFailed("unsupported authorization scheme")

    async def from_pat(self, token: str, username: str | None = None) -> Principal:
        """A personal access token (Bearer, or the password of Basic with its owner's name).
        No lockout counting: a 256-bit secret cannot be guessed, and a miss costs one read."""
        owner = await self.pats.verify(token)
        if owner is None or (username is not None and username.strip() != owner.username):
            raise AuthFailed("invalid credentials")
        return Principal(
            "user",
            owner.username,
            owner.user_id,
            owner.is_admin,
            pat_scopes=owner.scopes,
            pat_id=owner.token_id,
            token_version=owner.token_version,
            created=owner.created,
        )

    async def from_token(self, token: str) -> Principal:
        try:
            claims = await self.tokens.verify(token)
        except InvalidToken as exc:
            raise AuthFailed(f"invalid token: {exc}") from None
        return await self.from_token_claims(claims)

    async def from_token_claims(self, claims: TokenClaims) -> Principal:
        """The principal behind verified claims, re-checked against the account's state."""
        base = await self._current(claims.kind, claims.principal_id, claims.subject)
        if base is None:
            raise AuthFailed("the token's account is disabled, revoked or gone")
        if not base.anonymous and _issued_to_another_account(claims, base.created):
            # Issued to an earlier account of this name (deleted, then made again).
            raise AuthFailed("the token's account is gone")
        if not base.anonymous and claims.version != base.token_version:
            # Issued before a password change or reset, a disabling, or (robots) before the
            # secret was regenerated or the robot revoked.
            raise AuthFailed("the token predates a change of the account's credentials")
        pat_scopes: frozenset[str] | None = None
        if claims.pat_id is not None:
            # Issued for a personal access token: it lives no longer than that token, and
            # never does more than its scopes (a refresh keeps them too).
            if base.kind != "user" or base.id is None:
                raise AuthFailed("malformed token")
            pat_scopes = await self.pats.current_scopes(base.id, claims.pat_id)
            if pat_scopes is None:
                raise AuthFailed("the token's personal access token is revoked or expired")
        return Principal(
            base.kind,
            base.name,
            base.id,
            base.is_admin,
            base.robot_access,
            token_scopes=claims.access,
            token_id=claims.jti,
            pat_scopes=pat_scopes,
            pat_id=claims.pat_id,
            token_version=base.token_version,
            created=base.created,
        )

    async def _current(self, kind: str, pid: int | None, name: str) -> Principal | None:
        """Re-read the account behind a token: revocations and disabling apply at once."""
        if kind == "anonymous":
            return ANONYMOUS
        if kind == "system" and name.startswith("scanner:"):
            # minted by the registry itself for an external scanner adapter (moorage/scan/
            # external.py): no account behind it, only the token's own scopes
            return Principal("system", name)
        if pid is None:
            return None
        async with self.engine.connect() as conn:
            if kind == "robot":
                robot = await aq.robot_by_id(conn, pid)
                if robot is None or robot.name != name or not robot.usable(now()):
                    return None
                return _robot_principal(robot)
            user = await aq.user_by_id(conn, pid)
        if user is None or user.disabled or user.username != name:
            return None
        return _user_principal(user)

    async def login(self, username: str, password: str, client: str) -> Principal:
        """Check a username/password (or robot name/secret, or username/personal access
        token); raise AuthFailed, or LockedOut when throttled (moorage.auth.throttle: only
        passwords are throttled, and a correct one is never refused for long)."""
        if looks_like_pat(password):
            return await self.from_pat(password, username)
        username = username.strip()
        if not username or not password or len(username) > 200:
            raise AuthFailed("invalid credentials")
        if "+" in username:
            # A robot's 256-bit secret cannot be guessed: no counting, no throttle (else an
            # outsider could stop CI by failing logins with the robot's name).
            robot = await self._robot_login(username, password)
            if robot is None:
                raise AuthFailed("invalid credentials")
            return robot
        account = username.lower()
        # Throttled first: the verification cache below must not become an unthrottled
        # oracle for a guesser while the owner's correct password sits in it.
        throttled, _ = await self.throttle.throttled_keys(account, client)
        if not throttled:
            known = await self._known_good(username, password)
            if known is not None:
                # Credentials that passed a full check moments ago (clients sending Basic on
                # every request): no guess to count, no argon2, no write.
                return known
        async with self.throttle.gate(account):
            throttled, rows = await self.throttle.throttled_keys(account, client)
            if throttled:
                await self.throttle.claim(throttled, rows)
            else:
                known = await self._known_good(username, password)
                if known is not None:  # verified by a parallel request while this one waited
                    return known
            principal = await self._check_credentials(username, password)
            if principal is None:
                await self.throttle.failed(account, client)
                raise AuthFailed("invalid credentials")
            await self.throttle.succeeded(account, client)
        if principal.kind == "user" and principal.id is not None:
            await self._touch_login(principal.id)
        return principal

    async def _touch_login(self, user_id: int) -> None:
        """Record the login time, at most once a minute per user and process: a client that
        logs in on every request (32 parallel token requests of one CI job) would otherwise
        queue a write transaction per login behind every other writer."""
        at = time.monotonic()
        if at - self._touched.get(user_id, float("-inf")) < TOUCH_LOGIN_SECONDS:
            return
        self._touched[user_id] = at
        if len(self._touched) > 10_000:
            self._touched = {u: t for u, t in self._touched.items() if at - t < TOUCH_LOGIN_SECONDS}
        async with self.write_engine.begin() as conn:
            await aq.touch_login(conn, user_id)

    async def _known_good(self, username: str, password: str) -> Principal | None:
        if "+" in username:
            return None
        async with self.engine.connect() as conn:
            user = await aq.user_by_name(conn, username)
        if (
            user is not None
            and user.source == "local"
            and not user.disabled
            and recently_verified(user.password_hash, password, username)
        ):
            return _user_principal(user)
        return None

    async def _robot_login(self, name: str, secret: str) -> Principal | None:
        async with self.engine.connect() as conn:
            robot = await aq.robot_by_name(conn, name)
        ok = secret_matches(robot.secret_hash if robot else None, secret)
        if robot is None or not ok or not robot.usable(now()):
            return None
        return _robot_principal(robot)

    async def _check_credentials(self, username: str, password: str) -> Principal | None:
        async with self.engine.connect() as conn:
            user = await aq.user_by_name(conn, username)
        if user is not None and user.source == "local":
            ok = await verify_password(user.password_hash, password, username)
            if not ok or user.disabled:
                return None
            return _user_principal(user)
        if self.directory is not None:
            return await self._directory_login(username, password)
        await verify_password(None, password, username)  # same effort as a real check
        return None

    async def _directory_login(self, username: str, password: str) -> Principal | None:
        assert self.directory is not None
        from .ldap import LDAPUnavailable

        try:
            ident = await self.directory.authenticate(username, password)
        except LDAPUnavailable as exc:
            raise Unavailable("directory unavailable") from exc
        if ident is None:
            return None
        async with self.write_engine.begin() as conn:
            user = await aq.user_by_name(conn, ident.username)
            if user is None and (
                await aq.org_by_name(conn, ident.username) is not None
                or await mq.namespace_has_repositories(conn, ident.username)
            ):
                # A user owns the namespace of their name: a directory account named like an
                # organization, or like a namespace holding repositories, would get every
                # right on those repositories.
                log.warning("directory user %s names a taken namespace: refused", ident.username)
                return None
            if user is None:
                uid = await aq.create_user(
                    conn,
                    ident.username,
                    None,
                    email=ident.email,
                    source="ldap",
                    external_id=ident.dn,
                    display_name=ident.display_name,
                )
                user = await aq.user_by_id(conn, uid)
                assert user is not None
            elif user.source != "ldap" or user.disabled:
                return None
            await self._sync_directory_teams(conn, user.id, ident.teams, self._mapped_teams())
        return _user_principal(user)

    def _mapped_teams(self) -> list[tuple[str, str]]:
        out = []
        for value in self.config.ldap.group_team_map.values():
            org, _, team = value.partition("/")
            if org and team:
                out.append((org, team))
        return out

    @staticmethod
    async def _sync_directory_teams(
        conn: AsyncConnection,
        user_id: int,
        teams: list[tuple[str, str]],
        managed: list[tuple[str, str]],
        source: str = "ldap",
    ) -> None:
        """Directory-managed teams (LDAP's, or an OpenID provider's: *source*) mirror the
        user's groups at each login."""
        wanted: set[int] = set()
        for org_name, team_name in teams:
            org_id = await aq.org_by_name(conn, org_name)
            if org_id is None:
                log.warning("directory group maps to unknown organization %s", org_name)
                continue
            tid = await aq.team_id(conn, org_id, team_name)
            if tid is None:
                tid = await aq.create_team(conn, org_id, team_name, source=source)
            wanted.add(tid)
        # Teams the directory manages: those it created, and every team the group map names
        # (an operator may create and grant a mapped team before anyone logs in).
        current = await aq.user_team_ids(conn, user_id, source=source)
        for org_name, team_name in managed:
            org_id = await aq.org_by_name(conn, org_name)
            tid = await aq.team_id(conn, org_id, team_name) if org_id is not None else None
            if tid is not None and tid in await aq.user_team_ids(conn, user_id):
                current.add(tid)
        for tid in wanted - current:
            await aq.add_team_member(conn, tid, user_id)
        for tid in current - wanted:
            await aq.remove_team_member(conn, tid, user_id)

    # --- authorization ----------------------------------------------------------------------

    async def allowed_actions(self, principal: Principal, repository: str) -> frozenset[str]:
        """What *principal* may do on *repository* right now."""
        if principal.token_scopes is not None:
            granted: set[str] = set()
            for s in principal.token_scopes:
                if s.type == "repository" and s.name == repository:
                    granted |= s.actions
            return frozenset(granted)
        return await self.role_actions(principal, repository)

    async def role_actions(self, principal: Principal, repository: str) -> frozenset[str]:
        """Actions from roles, robot scopes and visibility (ignores any bearer JWT), limited by
        a personal access token's scopes."""
        actions = await self._role_actions(principal, repository)
        if principal.pat_scopes is None:
            return actions
        allowed = {a for a in (PULL, PUSH, DELETE) if f"registry:{a}" in principal.pat_scopes}
        if "api:write" in principal.pat_scopes:
            allowed.add(ADMIN)
        return actions & frozenset(allowed)

    async def _role_actions(self, principal: Principal, repository: str) -> frozenset[str]:
        if principal.kind == "user" and principal.is_admin:
            return ALL_ACTIONS
        ns = namespace_of(repository)
        actions: set[str] = set()
        async with self.engine.connect() as conn:
            visibility = await aq.repository_visibility(conn, repository)
            if visibility == "public" and (not principal.anonymous or self.config.anonymous_access):
                actions.add(PULL)
            if principal.kind == "user" and principal.id is not None:
                if ns and ns == principal.name:
                    return ALL_ACTIONS
                for role in await aq.roles_for_user(conn, principal.id, ns, repository):
                    actions |= ROLE_ACTIONS.get(role, frozenset())
        if principal.kind == "robot":
            for kind, name, acts in principal.robot_access:
                if (kind == "repository" and name == repository) or (
                    kind == "organization" and ns and name == ns
                ):
                    actions |= acts
        return frozenset(actions)

    async def organization_actions(self, principal: Principal, org: str) -> frozenset[str]:
        """Actions on an organization itself (its teams, members, robots, permissions):
        system admins and holders of a role on it; robots and bearer JWTs none."""
        if principal.token_scopes is not None or principal.kind != "user":
            return frozenset()
        if principal.is_admin:
            actions: frozenset[str] = ALL_ACTIONS
        else:
            assert principal.id is not None
            got: set[str] = set()
            async with self.engine.connect() as conn:
                for role in await aq.org_roles_for_user(conn, principal.id, org):
                    got |= ROLE_ACTIONS.get(role, frozenset())
            actions = frozenset(got)
        if principal.pat_scopes is not None and "api:write" not in principal.pat_scopes:
            actions &= frozenset({PULL})
        return actions

    async def read_scope(self, principal: Principal, use_token: bool = True) -> ReadScope:
        """The repositories *principal* may pull, as a filter for listings (the same rules as
        ``allowed_actions``: admin, personal namespace, roles, robot access, visibility; with
        *use_token* False, as ``role_actions``: a bearer JWT's scopes do not narrow it)."""
        public = not principal.anonymous or self.config.anonymous_access
        if principal.token_scopes is not None and use_token:
            names = {
                s.name
                for s in principal.token_scopes
                if s.type == "repository" and PULL in s.actions
            }
            return ReadScope(repositories=frozenset(names))
        if principal.pat_scopes is not None and "registry:pull" not in principal.pat_scopes:
            return ReadScope()  # as role_actions: reading content needs registry:pull
        if principal.kind == "user" and principal.is_admin:
            return ReadScope(all=True)
        if principal.kind == "robot":
            ns = {n for k, n, a in principal.robot_access if k == "organization" and PULL in a}
            repos = {n for k, n, a in principal.robot_access if k == "repository" and PULL in a}
            return ReadScope(False, public, frozenset(ns), frozenset(repos))
        if principal.kind == "user" and principal.id is not None:
            async with self.engine.connect() as conn:
                orgs, repos = await cq.user_grant_targets(conn, principal.id)
            orgs.add(principal.name)
            return ReadScope(False, public, frozenset(orgs), frozenset(repos))
        return ReadScope(public=public)

    async def grant(self, principal: Principal, requested: list[Scope]) -> list[Scope]:
        """The token grant: for each requested scope, requested ∩ allowed — never more."""
        out: list[Scope] = []
        for scope in requested:
            if scope.type == "registry":
                if not principal.anonymous:
                    out.append(Scope("registry", "catalog", frozenset({"*"})))
                continue
            allowed = await self.role_actions(principal, scope.name)
            granted = scope.actions & allowed
            out.append(Scope("repository", scope.name, granted))
        return out


def _user_principal(user: aq.UserRow) -> Principal:
    return Principal(
        "user",
        user.username,
        user.id,
        user.is_admin,
        token_version=user.token_version,
        created=user.created,
    )


def _robot_principal(robot: aq.RobotRow) -> Principal:
    access: list[tuple[str, str, frozenset[str]]] = []
    for entry in robot.access:
        acts = frozenset(a for a in entry.get("actions", []) if a in ALL_ACTIONS)
        if entry.get("repository"):
            access.append(("repository", str(entry["repository"]), acts))
        elif entry.get("organization"):
            access.append(("organization", str(entry["organization"]), acts))
    return Principal(
        "robot",
        robot.name,
        robot.id,
        False,
        tuple(access),
        token_version=robot.token_version,
        created=robot.created,
    )


def decode_basic(value: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthFailed("malformed basic credentials") from None
    username, sep, password = raw.partition(":")
    if not sep:
        raise AuthFailed("malformed basic credentials")
    return username, password


def _issued_to_another_account(claims: TokenClaims, created: int | None) -> bool:
    """Whether a token belongs to an earlier account of the same name and id. Tokens carry the
    account's creation time (``ct``); tokens without it (issued by a node of the previous
    release during a rolling upgrade) are judged by their issue time instead — a token issued
    before the account existed cannot be the account's — so an upgrade does not log every
    client out while old and new nodes serve side by side."""
    if claims.created is not None:
        return claims.created != created
    return created is not None and int(claims.issued_at) * 1_000_000 < created - 1_000_000
