"""Administrative operations shared by the command line and (later) the REST API."""

from __future__ import annotations

import re

from ..config import Config
from ..db import access_queries as aq
from ..db.engine import create_engine, writer
from ..services.context import ServiceContext
from .passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password

# A username is also a personal namespace: one repository-name path component.
USERNAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def validate_username(name: str) -> None:
    if not (2 <= len(name) <= 64) or not USERNAME_RE.match(name):
        raise ValueError(
            "username must be 2-64 lowercase letters and digits, separated by '.', '_' or '-'"
        )


def validate_password(password: str) -> None:
    if not (MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH):
        raise ValueError(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )


async def create_user(
    config: Config, name: str, password: str, *, is_admin: bool = False, email: str | None = None
) -> int:
    validate_username(name)
    validate_password(password)
    engine = create_engine(config.database_url, 2)
    try:
        async with writer(engine).begin() as conn:
            if await aq.user_by_name(conn, name) is not None:
                raise ValueError(f"user {name} already exists")
            if await aq.org_by_name(conn, name) is not None:
                raise ValueError(f"{name} is an organization's namespace")
            return await aq.create_user(
                conn, name, hash_password(password), is_admin=is_admin, email=email
            )
    finally:
        await engine.dispose()


async def rotate_keys(config: Config) -> str:
    from ..app import build_access_service, make_storage
    from ..db.hotpath import hot_reads_for

    engine = create_engine(config.database_url, 2)
    try:
        ctx = ServiceContext(
            config,
            engine,
            writer(engine),
            make_storage(config),
            hot_reads_for(config.database_url, 1),
        )
        return await build_access_service(config, ctx).tokens.rotate()
    finally:
        await engine.dispose()


class _Admin:
    """A short-lived database handle for one administrative command."""

    def __init__(self, config: Config) -> None:
        self.engine = create_engine(config.database_url, 2)

    async def __aenter__(self) -> _Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.dispose()


async def create_org(config: Config, name: str, description: str = "") -> int:
    validate_username(name)
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        if await aq.org_by_name(conn, name) is not None or await aq.user_by_name(conn, name):
            raise ValueError(f"namespace {name} is taken")
        return await aq.create_org(conn, name, description)


async def create_team(config: Config, org: str, team: str, members: list[str]) -> int:
    validate_username(team)
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        org_id = await aq.org_by_name(conn, org)
        if org_id is None:
            raise ValueError(f"no organization {org}")
        tid = await aq.team_id(conn, org_id, team) or await aq.create_team(conn, org_id, team)
        for member in members:
            user = await aq.user_by_name(conn, member)
            if user is None:
                raise ValueError(f"no user {member}")
            await aq.add_team_member(conn, tid, user.id)
        return tid


async def grant_role(
    config: Config, role: str, *, user: str | None, team: str | None, target: str
) -> None:
    """Grant *role* to a user or a team (``org/team``) on *target*: an organization name, or a
    repository (``ns/name``; it is created empty if it does not exist yet)."""
    from ..db import queries as q
    from ..oci.names import namespace_of, valid_name
    from .scopes import ROLES

    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if (user is None) == (team is None):
        raise ValueError("give exactly one of user or team")
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        subject: dict[str, int] = {}
        if user is not None:
            row = await aq.user_by_name(conn, user)
            if row is None:
                raise ValueError(f"no user {user}")
            subject["user_id"] = row.id
        else:
            assert team is not None
            org_name, _, team_name = team.partition("/")
            org_id = await aq.org_by_name(conn, org_name)
            tid = await aq.team_id(conn, org_id, team_name) if org_id is not None else None
            if tid is None:
                raise ValueError(f"no team {team}")
            subject["team_id"] = tid
        if "/" in target:
            if not valid_name(target):
                raise ValueError(f"invalid repository name {target}")
            repo_id = await q.ensure_repository(conn, target, namespace_of(target))
            await aq.grant(conn, role, repository_id=repo_id, **subject)
        else:
            org_id = await aq.org_by_name(conn, target)
            if org_id is None:
                raise ValueError(f"no organization {target}")
            await aq.grant(conn, role, organization_id=org_id, **subject)


async def create_robot(
    config: Config,
    namespace: str,
    name: str,
    access: list[dict[str, object]],
    expires_in_days: int | None,
    created_by: str | None = None,
) -> tuple[str, str]:
    """Create ``<namespace>+<name>``; returns (full name, secret). The secret is shown once."""
    from datetime import timedelta

    from ..db.queries import now
    from .passwords import hash_secret, new_secret

    validate_username(name)
    full = f"{namespace}+{name}"
    for entry in access:
        target = entry.get("repository") or entry.get("organization")
        if not isinstance(target, str) or not (
            target == namespace or target.startswith(namespace + "/")
        ):
            raise ValueError("a robot's access must stay inside its namespace")
    secret = new_secret()
    expires = now() + timedelta(days=expires_in_days) if expires_in_days else None
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        if await aq.robot_by_name(conn, full) is not None:
            raise ValueError(f"robot {full} exists")
        await aq.create_robot(
            conn, full, namespace, hash_secret(secret), access, expires, created_by
        )
    return full, secret


async def revoke_robot(config: Config, name: str) -> bool:
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        return await aq.revoke_robot(conn, name)


async def set_visibility(config: Config, repository: str, visibility: str) -> None:
    from ..db import queries as q
    from ..oci.names import namespace_of, valid_name

    if visibility not in ("public", "private"):
        raise ValueError("visibility is public or private")
    if not valid_name(repository):
        raise ValueError(f"invalid repository name {repository}")
    async with _Admin(config) as a, writer(a.engine).begin() as conn:
        await q.ensure_repository(conn, repository, namespace_of(repository))
        await aq.set_visibility(conn, repository, visibility)
