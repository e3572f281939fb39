"""Administrative operations shared by the command line, the REST API and the web UI.

Each ``*_in`` function validates its input and changes the database inside the caller's
transaction; the command line wraps them in a short-lived engine, the management service
(moorage/services/management.py) adds authorization and audit. Errors are ValueErrors that also
say what went wrong (services.errors: Invalid — with the field —, Conflict, Missing).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..config import Config
from ..db import access_queries as aq
from ..db import queries as q
from ..db.engine import create_engine, writer
from ..oci.names import namespace_of, valid_name
from ..services.errors import Conflict, Invalid, Missing
from .passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password, hash_secret
from .passwords import new_secret as _new_secret
from .scopes import ROLES
from .tokens import TokenService

# A username is also a personal namespace: one repository-name path component.
USERNAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
NAME_RULE = "2-64 lowercase letters and digits, separated by '.', '_' or '-'"
ROBOT_ACTIONS = ("pull", "push", "delete")


def validate_username(name: str, field: str = "username") -> None:
    if not isinstance(name, str) or not (2 <= len(name) <= 64) or not USERNAME_RE.match(name):
        raise Invalid(field, f"{field} must be {NAME_RULE}")


def validate_password(password: str, field: str = "password") -> None:
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise Invalid(
            field, f"{field} must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )


def validate_role(role: str) -> None:
    if role not in ROLES:
        raise Invalid("role", f"role must be one of {', '.join(ROLES)}")


def validate_repository(name: str, field: str = "repository") -> None:
    if not valid_name(name) or "/" not in name:
        raise Invalid(field, f"invalid repository name {name!r} (namespace/name, OCI grammar)")


# --- in the caller's transaction --------------------------------------------------------------


async def create_user_in(
    conn: AsyncConnection,
    name: str,
    password: str | None,
    *,
    is_admin: bool = False,
    email: str | None = None,
    display_name: str | None = None,
) -> int:
    validate_username(name)
    if password is not None:
        validate_password(password)
    if await aq.user_by_name(conn, name) is not None:
        raise Conflict(f"user {name} already exists")
    if await aq.org_by_name(conn, name) is not None:
        raise Conflict(f"{name} is an organization's namespace")
    return await aq.create_user(
        conn,
        name,
        hash_password(password) if password is not None else None,
        is_admin=is_admin,
        email=email,
        display_name=display_name,
    )


async def create_org_in(conn: AsyncConnection, name: str, description: str = "") -> int:
    validate_username(name, "name")
    if await aq.org_by_name(conn, name) is not None or await aq.user_by_name(conn, name):
        raise Conflict(f"namespace {name} is taken")
    return await aq.create_org(conn, name, description)


async def org_id_in(conn: AsyncConnection, org: str) -> int:
    org_id = await aq.org_by_name(conn, org) if USERNAME_RE.match(org) else None
    if org_id is None:
        raise Missing(f"no organization {org}")
    return org_id


async def team_id_in(conn: AsyncConnection, org: str, team: str) -> int:
    org_id = await org_id_in(conn, org)
    tid = await aq.team_id(conn, org_id, team) if USERNAME_RE.match(team) else None
    if tid is None:
        raise Missing(f"no team {org}/{team}")
    return tid


async def user_in(conn: AsyncConnection, name: str) -> aq.UserRow:
    row = await aq.user_by_name(conn, name) if USERNAME_RE.match(name) else None
    if row is None:
        raise Missing(f"no user {name}")
    return row


async def create_team_in(
    conn: AsyncConnection,
    org: str,
    team: str,
    members: list[str],
    *,
    description: str = "",
    exist_ok: bool = True,
) -> int:
    validate_username(team, "name")
    org_id = await org_id_in(conn, org)
    tid = await aq.team_id(conn, org_id, team)
    if tid is not None and not exist_ok:
        raise Conflict(f"team {org}/{team} exists")
    if tid is None:
        tid = await aq.create_team(conn, org_id, team, description=description)
    for member in members:
        await aq.add_team_member(conn, tid, (await user_in(conn, member)).id)
    return tid


async def grant_role_in(
    conn: AsyncConnection, role: str | None, *, user: str | None, team: str | None, target: str
) -> None:
    """Grant *role* (None: revoke) to a user or a team (``org/team``) on *target*: an
    organization name, or a repository (``ns/name``; created empty if it does not exist yet)."""
    if role is not None:
        validate_role(role)
    if (user is None) == (team is None):
        raise Invalid("subject", "give exactly one of user or team")
    subject: dict[str, int] = {}
    if user is not None:
        subject["user_id"] = (await user_in(conn, user)).id
    else:
        assert team is not None
        org_name, _, team_name = team.partition("/")
        subject["team_id"] = await team_id_in(conn, org_name, team_name)
    if "/" in target:
        validate_repository(target)
        where: dict[str, int] = {
            "repository_id": await q.ensure_repository(conn, target, namespace_of(target))
        }
    else:
        where = {"organization_id": await org_id_in(conn, target)}
    if role is None:
        await aq.revoke(conn, **where, **subject)
    else:
        await aq.grant(conn, role, **where, **subject)


def validate_robot_access(namespace: str, access: Any) -> list[dict[str, Any]]:
    """``[{"repository": "ns/x" | "organization": "ns", "actions": [...]}]`` inside *namespace*."""
    if not isinstance(access, list) or len(access) > 100:
        raise Invalid("access", "access is a list of at most 100 entries")
    out: list[dict[str, Any]] = []
    for entry in access:
        if not isinstance(entry, dict):
            raise Invalid("access", "each access entry is an object")
        target = entry.get("repository") or entry.get("organization")
        if not isinstance(target, str) or not (
            target == namespace or target.startswith(namespace + "/")
        ):
            raise Invalid("access", "a robot's access must stay inside its namespace")
        if "repository" in entry:
            validate_repository(str(entry["repository"]), "access")
        actions = entry.get("actions", [])
        if (
            not isinstance(actions, list)
            or not actions
            or any(a not in ROBOT_ACTIONS for a in actions)
        ):
            raise Invalid("access", f"actions are a non-empty list of {', '.join(ROBOT_ACTIONS)}")
        key = "repository" if "repository" in entry else "organization"
        out.append({key: target, "actions": sorted(set(actions))})
    return out


async def create_robot_in(
    conn: AsyncConnection,
    namespace: str,
    name: str,
    access: list[dict[str, Any]],
    expires_in_days: int | None,
    created_by: str | None = None,
    description: str = "",
) -> tuple[str, str]:
    """Create ``<namespace>+<name>``; returns (full name, secret). The secret is shown once."""
    validate_username(name, "name")
    access = validate_robot_access(namespace, access)
    full = f"{namespace}+{name}"
    secret = _new_secret()
    expires = q.now() + timedelta(days=expires_in_days) if expires_in_days else None
    if await aq.robot_by_name(conn, full) is not None:
        raise Conflict(f"robot {full} exists")
    await aq.create_robot(
        conn, full, namespace, hash_secret(secret), access, expires, created_by, description
    )
    return full, secret


async def set_visibility_in(conn: AsyncConnection, repository: str, visibility: str) -> None:
    if visibility not in ("public", "private"):
        raise Invalid("visibility", "visibility is public or private")
    validate_repository(repository)
    await q.ensure_repository(conn, repository, namespace_of(repository))
    await aq.set_visibility(conn, repository, visibility)


# --- command line: one short-lived engine per command -----------------------------------------


class _Admin:
    """A short-lived database handle for one administrative command."""

    def __init__(self, config: Config) -> None:
        self.engine = create_engine(config.database_url, 2)

    async def __aenter__(self) -> _Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.dispose()


async def create_user(
    config: Config, name: str, password: str, *, is_admin: bool = False, email: str | None = None
) -> int:
    validate_username(name)
    validate_password(password)
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        return await create_user_in(conn, name, password, is_admin=is_admin, email=email)


async def rotate_keys(config: Config) -> str:
    """Start signing with a new key (the previous one verifies on for its overlap)."""
    async with _Admin(config) as a:
        return await TokenService.from_config(writer(a.engine), config.auth.token).rotate()


async def create_org(config: Config, name: str, description: str = "") -> int:
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        return await create_org_in(conn, name, description)


async def create_team(config: Config, org: str, team: str, members: list[str]) -> int:
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        return await create_team_in(conn, org, team, members)


async def grant_role(
    config: Config, role: str, *, user: str | None, team: str | None, target: str
) -> None:
    """Grant *role* to a user or a team (``org/team``) on *target*: an organization name, or a
    repository (``ns/name``; it is created empty if it does not exist yet)."""
    validate_role(role)
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        await grant_role_in(conn, role, user=user, team=team, target=target)


async def create_robot(
    config: Config,
    namespace: str,
    name: str,
    access: list[dict[str, object]],
    expires_in_days: int | None,
    created_by: str | None = None,
) -> tuple[str, str]:
    """Create ``<namespace>+<name>``; returns (full name, secret). The secret is shown once."""
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        return await create_robot_in(conn, namespace, name, access, expires_in_days, created_by)


async def revoke_robot(config: Config, name: str) -> bool:
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        return await aq.revoke_robot(conn, name)


async def set_visibility(config: Config, repository: str, visibility: str) -> None:
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        await set_visibility_in(conn, repository, visibility)
