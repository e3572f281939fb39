"""SQL for identities and access: users, organizations, teams, permissions, robots, keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .queries import _aware, _insert, insert_ignore, now
from .schema import (
    auth_failures,
    organizations,
    permissions,
    repositories,
    robots,
    signing_keys,
    team_members,
    teams,
    users,
)


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    email: str | None
    password_hash: str | None
    is_admin: bool
    source: str
    disabled: bool
    token_version: int = 0  # credential epoch (schema.users)
    created: int = 0  # created_at in microseconds since the epoch: tokens are bound to it


def account_stamp(created_at: datetime | None) -> int:
    """An account's creation time as whole microseconds since 1970 (exact integer arithmetic):
    tokens carry it, so that a later account of the same name and id cannot use them."""
    ts = _aware(created_at)
    if ts is None:
        return 0
    return (ts - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _user(r: Any) -> UserRow:
    return UserRow(
        r.id,
        r.username,
        r.email,
        r.password_hash,
        bool(r.is_admin),
        r.source,
        bool(r.disabled),
        int(r.token_version),
        account_stamp(r.created_at),
    )


async def user_by_name(conn: AsyncConnection, username: str) -> UserRow | None:
    r = (await conn.execute(sa.select(users).where(users.c.username == username))).first()
    return _user(r) if r else None


async def user_by_external_id(
    conn: AsyncConnection, source: str, external_id: str
) -> UserRow | None:
    """The account a directory (``ldap``, ``oidc``) links to one of its identities."""
    r = (
        await conn.execute(
            sa.select(users).where(users.c.source == source, users.c.external_id == external_id)
        )
    ).first()
    return _user(r) if r else None


async def user_by_id(conn: AsyncConnection, user_id: int) -> UserRow | None:
    r = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    return _user(r) if r else None


async def count_users(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one())


async def create_user(
    conn: AsyncConnection,
    username: str,
    password_hash: str | None,
    *,
    is_admin: bool = False,
    email: str | None = None,
    source: str = "local",
    external_id: str | None = None,
    display_name: str | None = None,
) -> int:
    ts = now()
    res = await conn.execute(
        sa.insert(users)
        .values(
            username=username,
            password_hash=password_hash,
            is_admin=is_admin,
            email=email,
            source=source,
            external_id=external_id,
            display_name=display_name,
            created_at=ts,
            updated_at=ts,
        )
        .returning(users.c.id)
    )
    return int(res.scalar_one())


async def touch_login(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(sa.update(users).where(users.c.id == user_id).values(last_login_at=now()))


async def org_by_name(conn: AsyncConnection, name: str) -> int | None:
    return (
        await conn.execute(sa.select(organizations.c.id).where(organizations.c.name == name))
    ).scalar()


async def create_org(conn: AsyncConnection, name: str, description: str = "") -> int:
    res = await conn.execute(
        sa.insert(organizations)
        .values(name=name, description=description, created_at=now())
        .returning(organizations.c.id)
    )
    return int(res.scalar_one())


async def team_id(conn: AsyncConnection, org_id: int, name: str) -> int | None:
    return (
        await conn.execute(
            sa.select(teams.c.id).where(teams.c.organization_id == org_id, teams.c.name == name)
        )
    ).scalar()


async def create_team(
    conn: AsyncConnection, org_id: int, name: str, source: str = "local", description: str = ""
) -> int:
    res = await conn.execute(
        sa.insert(teams)
        .values(
            organization_id=org_id,
            name=name,
            source=source,
            description=description,
            created_at=now(),
        )
        .returning(teams.c.id)
    )
    return int(res.scalar_one())


async def add_team_member(conn: AsyncConnection, team: int, user_id: int) -> None:
    await insert_ignore(
        conn,
        team_members,
        {"team_id": team, "user_id": user_id, "created_at": now()},
        ["team_id", "user_id"],
    )


async def remove_team_member(conn: AsyncConnection, team: int, user_id: int) -> bool:
    res = await conn.execute(
        sa.delete(team_members).where(
            team_members.c.team_id == team, team_members.c.user_id == user_id
        )
    )
    return bool(res.rowcount)


async def user_team_ids(conn: AsyncConnection, user_id: int, source: str | None = None) -> set[int]:
    q = sa.select(team_members.c.team_id).where(team_members.c.user_id == user_id)
    if source is not None:
        q = q.join(teams, teams.c.id == team_members.c.team_id).where(teams.c.source == source)
    return {r[0] for r in await conn.execute(q)}


async def grant(
    conn: AsyncConnection,
    role: str,
    *,
    organization_id: int | None = None,
    repository_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
) -> None:
    """Set the role of a user or team on an organization or repository (replacing any other)."""
    await revoke(
        conn,
        organization_id=organization_id,
        repository_id=repository_id,
        user_id=user_id,
        team_id=team_id,
    )
    await conn.execute(
        sa.insert(permissions).values(
            role=role,
            organization_id=organization_id,
            repository_id=repository_id,
            user_id=user_id,
            team_id=team_id,
            created_at=now(),
        )
    )


async def revoke(
    conn: AsyncConnection,
    *,
    organization_id: int | None = None,
    repository_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
) -> bool:
    cond = [
        permissions.c.organization_id.is_(None)
        if organization_id is None
        else permissions.c.organization_id == organization_id,
        permissions.c.repository_id.is_(None)
        if repository_id is None
        else permissions.c.repository_id == repository_id,
        permissions.c.user_id.is_(None) if user_id is None else permissions.c.user_id == user_id,
        permissions.c.team_id.is_(None) if team_id is None else permissions.c.team_id == team_id,
    ]
    res = await conn.execute(sa.delete(permissions).where(*cond))
    return bool(res.rowcount)


async def roles_for_user(
    conn: AsyncConnection, user_id: int, namespace: str, repository: str
) -> list[str]:
    """Roles the user holds, directly or through teams, on the namespace's organization or on
    the repository itself."""
    my_teams = sa.select(team_members.c.team_id).where(team_members.c.user_id == user_id)
    org_id = sa.select(organizations.c.id).where(organizations.c.name == namespace)
    repo_id = sa.select(repositories.c.id).where(repositories.c.name == repository)
    q = sa.select(permissions.c.role).where(
        sa.or_(
            permissions.c.organization_id == org_id.scalar_subquery(),
            permissions.c.repository_id == repo_id.scalar_subquery(),
        ),
        sa.or_(permissions.c.user_id == user_id, permissions.c.team_id.in_(my_teams)),
    )
    return [r[0] for r in await conn.execute(q)]


async def org_roles_for_user(conn: AsyncConnection, user_id: int, org: str) -> list[str]:
    """Roles the user holds on the organization itself, directly or through teams."""
    my_teams = sa.select(team_members.c.team_id).where(team_members.c.user_id == user_id)
    org_id = sa.select(organizations.c.id).where(organizations.c.name == org)
    q = sa.select(permissions.c.role).where(
        permissions.c.organization_id == org_id.scalar_subquery(),
        sa.or_(permissions.c.user_id == user_id, permissions.c.team_id.in_(my_teams)),
    )
    return [r[0] for r in await conn.execute(q)]


async def repository_visibility(conn: AsyncConnection, name: str) -> str | None:
    return (
        await conn.execute(sa.select(repositories.c.visibility).where(repositories.c.name == name))
    ).scalar()


async def set_visibility(conn: AsyncConnection, name: str, visibility: str) -> bool:
    res = await conn.execute(
        sa.update(repositories).where(repositories.c.name == name).values(visibility=visibility)
    )
    return bool(res.rowcount)


# --- robots ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RobotRow:
    id: int
    name: str
    namespace: str
    secret_hash: str
    access: list[dict[str, Any]]
    expires_at: datetime | None
    revoked_at: datetime | None
    token_version: int = 0  # credential epoch (schema.robots)
    created: int = 0  # account_stamp(created_at)

    def usable(self, at: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)


def _robot(r: Any) -> RobotRow:
    return RobotRow(
        r.id,
        r.name,
        r.namespace,
        r.secret_hash,
        list(r.access or []),
        _aware(r.expires_at),
        _aware(r.revoked_at),
        int(r.token_version),
        account_stamp(r.created_at),
    )


async def robot_by_name(conn: AsyncConnection, name: str) -> RobotRow | None:
    r = (await conn.execute(sa.select(robots).where(robots.c.name == name))).first()
    return _robot(r) if r else None


async def robot_by_id(conn: AsyncConnection, robot_id: int) -> RobotRow | None:
    r = (await conn.execute(sa.select(robots).where(robots.c.id == robot_id))).first()
    return _robot(r) if r else None


async def create_robot(
    conn: AsyncConnection,
    name: str,
    namespace: str,
    secret_hash: str,
    access: list[dict[str, Any]],
    expires_at: datetime | None,
    created_by: str | None,
    description: str = "",
) -> int:
    res = await conn.execute(
        sa.insert(robots)
        .values(
            name=name,
            namespace=namespace,
            secret_hash=secret_hash,
            access=access,
            expires_at=expires_at,
            created_by=created_by,
            description=description,
            created_at=now(),
        )
        .returning(robots.c.id)
    )
    return int(res.scalar_one())


async def revoke_robot(conn: AsyncConnection, name: str) -> bool:
    """Revoke, and start a new credential epoch: a later regeneration (which un-revokes) must
    not revive the tokens issued before."""
    res = await conn.execute(
        sa.update(robots)
        .where(robots.c.name == name, robots.c.revoked_at.is_(None))
        .values(revoked_at=now(), token_version=robots.c.token_version + 1)
    )
    return bool(res.rowcount)


# --- signing keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRow:
    kid: str
    algorithm: str
    private_pem: str
    public_pem: str
    created_at: datetime
    superseded_at: datetime | None


async def signing_keys_all(conn: AsyncConnection) -> list[KeyRow]:
    rows = await conn.execute(sa.select(signing_keys).order_by(signing_keys.c.id))
    return [
        KeyRow(
            r.kid,
            r.algorithm,
            r.private_pem,
            r.public_pem,
            _aware(r.created_at) or now(),
            _aware(r.superseded_at),
        )
        for r in rows
    ]


async def set_signing_key_private(conn: AsyncConnection, kid: str, private_pem: str) -> None:
    await conn.execute(
        sa.update(signing_keys).where(signing_keys.c.kid == kid).values(private_pem=private_pem)
    )


async def add_signing_key(
    conn: AsyncConnection, kid: str, algorithm: str, private_pem: str, public_pem: str
) -> None:
    ts = now()
    await conn.execute(
        sa.update(signing_keys)
        .where(signing_keys.c.superseded_at.is_(None))
        .values(superseded_at=ts)
    )
    await conn.execute(
        sa.insert(signing_keys).values(
            kid=kid,
            algorithm=algorithm,
            private_pem=private_pem,
            public_pem=public_pem,
            created_at=ts,
        )
    )


# --- login throttling (moorage.auth.throttle) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterRow:
    key: str
    window_start: datetime
    count: int
    next_check_at: datetime | None  # column locked_until: while throttled, the next free slot


async def counters(conn: AsyncConnection, keys: list[str]) -> dict[str, CounterRow]:
    t = auth_failures
    rows = await conn.execute(sa.select(t).where(t.c.key.in_(keys)))
    out: dict[str, CounterRow] = {}
    for r in rows:
        m = r._mapping  # (Row.count is the tuple method)
        out[m["key"]] = CounterRow(
            m["key"], _aware(m["window_start"]) or now(), int(m["count"]), _aware(m["locked_until"])
        )
    return out


async def count_failure(conn: AsyncConnection, key: str, window: timedelta) -> None:
    """One more failed login for *key* in its window (a new window when the old one is over),
    atomically: parallel failures each count."""
    ts = now()
    t = auth_failures
    expired = t.c.window_start < ts - window
    stmt = _insert(conn, t).values(key=key, window_start=ts, count=1, locked_until=None)
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "count": sa.case((expired, 1), else_=t.c.count + 1),
            "window_start": sa.case((expired, ts), else_=t.c.window_start),
            "locked_until": sa.case((expired, None), else_=t.c.locked_until),
        },
    )
    await conn.execute(stmt)


async def claim_check_slot(conn: AsyncConnection, key: str, interval: timedelta) -> bool:
    """While *key* is throttled, one password check per *interval*: take the slot if it is free
    (one UPDATE, so two nodes cannot both take it)."""
    ts = now()
    t = auth_failures
    res = await conn.execute(
        sa.update(t)
        .where(t.c.key == key, sa.or_(t.c.locked_until.is_(None), t.c.locked_until <= ts))
        .values(locked_until=ts + interval)
    )
    return bool(res.rowcount)


async def mark_good(conn: AsyncConnection, key: str) -> None:
    """Remember a successful login (an account from an address): window_start is when."""
    ts = now()
    t = auth_failures
    stmt = _insert(conn, t).values(key=key, window_start=ts, count=0, locked_until=None)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["key"], set_={"window_start": ts})
    )


async def clear_failures(conn: AsyncConnection, key: str) -> None:
    await conn.execute(sa.delete(auth_failures).where(auth_failures.c.key == key))


async def purge_counters(
    conn: AsyncConnection, counters_before: datetime, marks_before: datetime
) -> int:
    """Forget failure counters whose window started before *counters_before* (and whose
    throttle slot is past), and success marks (``good:`` keys) older than *marks_before*."""
    t = auth_failures
    mark = t.c.key.startswith("good:")
    stale_counter = sa.and_(
        sa.not_(mark),
        t.c.window_start < counters_before,
        sa.or_(t.c.locked_until.is_(None), t.c.locked_until < now()),
    )
    stale_mark = sa.and_(mark, t.c.window_start < marks_before)
    res = await conn.execute(sa.delete(t).where(sa.or_(stale_counter, stale_mark)))
    return int(res.rowcount or 0)


async def repository_permissions(conn: AsyncConnection, repo: str) -> list[dict[str, Any]]:
    """Who holds which role on *repo* (directly on the repository)."""
    return await _grants(
        conn,
        permissions.join(repositories, repositories.c.id == permissions.c.repository_id),
        repositories.c.name == repo,
    )


async def organization_permissions(conn: AsyncConnection, org_id: int) -> list[dict[str, Any]]:
    """Who holds which role on the organization itself."""
    return await _grants(conn, permissions, permissions.c.organization_id == org_id)


async def team_permissions(conn: AsyncConnection, team_id: int) -> list[dict[str, Any]]:
    """The roles a team holds: [{"organization": name, "role"} | {"repository": name, "role"}],
    organization roles first, then repositories by name."""
    q = (
        sa.select(permissions.c.role, organizations.c.name, repositories.c.name)
        .select_from(
            permissions.outerjoin(
                organizations, organizations.c.id == permissions.c.organization_id
            ).outerjoin(repositories, repositories.c.id == permissions.c.repository_id)
        )
        .where(permissions.c.team_id == team_id)
    )
    out: list[dict[str, Any]] = []
    for role, org, repo in await conn.execute(q):
        if org is not None:
            out.append({"organization": org, "role": role})
        elif repo is not None:
            out.append({"repository": repo, "role": role})
    return sorted(
        out, key=lambda d: ("organization" not in d, d.get("organization") or d.get("repository"))
    )


async def _grants(conn: AsyncConnection, base: Any, where: Any) -> list[dict[str, Any]]:
    """[{"user": name, "role"} | {"team": "org/team", "role"}] of the permission rows
    selected by *where* over *base* (``permissions`` or a join of it)."""
    team_org = organizations.alias("team_org")
    q = (
        sa.select(permissions.c.role, users.c.username, teams.c.name, team_org.c.name)
        .select_from(
            base.outerjoin(users, users.c.id == permissions.c.user_id)
            .outerjoin(teams, teams.c.id == permissions.c.team_id)
            .outerjoin(team_org, team_org.c.id == teams.c.organization_id)
        )
        .where(where)
    )
    out: list[dict[str, Any]] = []
    for role, username, team, org in await conn.execute(q):
        if username is not None:
            out.append({"user": username, "role": role})
        else:
            out.append({"team": f"{org}/{team}", "role": role})
    return sorted(out, key=lambda d: (d.get("user") or "", d.get("team") or ""))
