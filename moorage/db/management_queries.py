"""SQL for the management layer's lists and edits of identities (users, organizations, teams,
robots, grants). Creation and grants are in access_queries (shared with the command line)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .queries import _aware, now
from .schema import (
    api_tokens,
    organizations,
    permissions,
    repositories,
    robots,
    team_members,
    teams,
    users,
    web_sessions,
)


def _after(col: Any, after: str | None) -> Any:
    return col > after if after else sa.true()


# --- users ----------------------------------------------------------------------------------


async def list_users(
    conn: AsyncConnection, query: str | None, after: str | None, limit: int
) -> list[Any]:
    q = sa.select(users).where(_after(users.c.username, after))
    if query:
        q = q.where(users.c.username.contains(query, autoescape=True))
    return list(await conn.execute(q.order_by(users.c.username).limit(limit)))


async def user_full(conn: AsyncConnection, username: str) -> Any:
    return (await conn.execute(sa.select(users).where(users.c.username == username))).first()


async def update_user(conn: AsyncConnection, user_id: int, values: dict[str, Any]) -> None:
    await conn.execute(
        sa.update(users).where(users.c.id == user_id).values(**values, updated_at=now())
    )


async def end_credentials(
    conn: AsyncConnection, user_id: int, keep_session: str | None = None
) -> int:
    """After a password change or reset, or a disabling: every bearer and refresh token issued
    before is refused (a new credential epoch), every personal access token is revoked (a
    thief's token must not outlive the recovery) and every web session ends but
    *keep_session* (the one that made the change). Returns how many tokens were revoked."""
    await conn.execute(
        sa.update(users)
        .where(users.c.id == user_id)
        .values(token_version=users.c.token_version + 1)
    )
    revoked = await conn.execute(
        sa.update(api_tokens)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    ended = sa.delete(web_sessions).where(web_sessions.c.user_id == user_id)
    if keep_session is not None:
        ended = ended.where(web_sessions.c.id != keep_session)
    await conn.execute(ended)
    return int(revoked.rowcount or 0)


async def robots_to_review(conn: AsyncConnection, username: str) -> list[Any]:
    """Robots a user may have made while their account was in someone else's hands: those
    they created (in any namespace) and those of their personal namespace, by name."""
    q = (
        sa.select(robots)
        .where(sa.or_(robots.c.created_by == username, robots.c.namespace == username))
        .order_by(robots.c.name)
        .limit(1000)
    )
    return list(await conn.execute(q))


async def delete_user(conn: AsyncConnection, user_id: int, username: str) -> None:
    """The user, their grants, memberships, tokens, sessions and the robots of their personal
    namespace (a later account of the same name must inherit nothing)."""
    await conn.execute(sa.delete(robots).where(robots.c.namespace == username))
    await conn.execute(sa.delete(api_tokens).where(api_tokens.c.user_id == user_id))
    await conn.execute(sa.delete(web_sessions).where(web_sessions.c.user_id == user_id))
    await conn.execute(sa.delete(permissions).where(permissions.c.user_id == user_id))
    await conn.execute(sa.delete(team_members).where(team_members.c.user_id == user_id))
    await conn.execute(sa.delete(users).where(users.c.id == user_id))


async def count_admins(conn: AsyncConnection) -> int:
    q = sa.select(sa.func.count()).where(users.c.is_admin.is_(True), users.c.disabled.is_(False))
    return int((await conn.execute(q)).scalar_one())


# --- organizations --------------------------------------------------------------------------


def _org_select() -> Any:
    team_count = (
        sa.select(sa.func.count())
        .where(teams.c.organization_id == organizations.c.id)
        .scalar_subquery()
    )
    repo_count = (
        sa.select(sa.func.count())
        .where(repositories.c.namespace == organizations.c.name)
        .scalar_subquery()
    )
    return sa.select(
        organizations, team_count.label("team_count"), repo_count.label("repository_count")
    )


async def list_orgs(
    conn: AsyncConnection, names: frozenset[str] | None, after: str | None, limit: int
) -> list[Any]:
    """Organizations (only *names* unless None), by name."""
    q = _org_select().where(_after(organizations.c.name, after))
    if names is not None:
        q = q.where(organizations.c.name.in_(sorted(names)))
    return list(await conn.execute(q.order_by(organizations.c.name).limit(limit)))


async def org_full(conn: AsyncConnection, name: str) -> Any:
    return (await conn.execute(_org_select().where(organizations.c.name == name))).first()


async def user_org_names(conn: AsyncConnection, user_id: int) -> frozenset[str]:
    """Organizations the user belongs to: a team member there, or holding a role on it."""
    via_team = (
        sa.select(organizations.c.name)
        .join(teams, teams.c.organization_id == organizations.c.id)
        .join(team_members, team_members.c.team_id == teams.c.id)
        .where(team_members.c.user_id == user_id)
    )
    direct = (
        sa.select(organizations.c.name)
        .join(permissions, permissions.c.organization_id == organizations.c.id)
        .where(permissions.c.user_id == user_id)
    )
    rows = await conn.execute(sa.union(via_team, direct))
    return frozenset(r[0] for r in rows)


async def update_org(conn: AsyncConnection, org_id: int, description: str) -> None:
    await conn.execute(
        sa.update(organizations).where(organizations.c.id == org_id).values(description=description)
    )


async def delete_org(conn: AsyncConnection, org_id: int, name: str) -> None:
    """The organization, its teams, memberships, grants and robots (a later organization of
    the same name must inherit nothing)."""
    await conn.execute(sa.delete(robots).where(robots.c.namespace == name))
    tids = sa.select(teams.c.id).where(teams.c.organization_id == org_id)
    await conn.execute(sa.delete(permissions).where(permissions.c.team_id.in_(tids)))
    await conn.execute(sa.delete(team_members).where(team_members.c.team_id.in_(tids)))
    await conn.execute(sa.delete(teams).where(teams.c.organization_id == org_id))
    await conn.execute(sa.delete(permissions).where(permissions.c.organization_id == org_id))
    await conn.execute(sa.delete(organizations).where(organizations.c.id == org_id))


async def namespace_has_repositories(conn: AsyncConnection, namespace: str) -> bool:
    q = sa.select(repositories.c.id).where(repositories.c.namespace == namespace).limit(1)
    return (await conn.execute(q)).first() is not None


# --- teams ----------------------------------------------------------------------------------


async def list_teams(
    conn: AsyncConnection, org_id: int, after: str | None, limit: int
) -> list[Any]:
    q = sa.select(teams).where(teams.c.organization_id == org_id, _after(teams.c.name, after))
    return list(await conn.execute(q.order_by(teams.c.name).limit(limit)))


async def team_row(conn: AsyncConnection, team_id: int) -> Any:
    return (await conn.execute(sa.select(teams).where(teams.c.id == team_id))).first()


async def team_members_of(conn: AsyncConnection, team_ids: list[int]) -> dict[int, list[str]]:
    if not team_ids:
        return {}
    q = (
        sa.select(team_members.c.team_id, users.c.username)
        .join(users, users.c.id == team_members.c.user_id)
        .where(team_members.c.team_id.in_(team_ids))
        .order_by(users.c.username)
    )
    out: dict[int, list[str]] = {tid: [] for tid in team_ids}
    for tid, name in await conn.execute(q):
        out[tid].append(name)
    return out


async def update_team(conn: AsyncConnection, team_id: int, description: str) -> None:
    await conn.execute(
        sa.update(teams).where(teams.c.id == team_id).values(description=description)
    )


async def delete_team(conn: AsyncConnection, team_id: int) -> None:
    await conn.execute(sa.delete(permissions).where(permissions.c.team_id == team_id))
    await conn.execute(sa.delete(team_members).where(team_members.c.team_id == team_id))
    await conn.execute(sa.delete(teams).where(teams.c.id == team_id))


# --- robots ---------------------------------------------------------------------------------


async def list_robots(
    conn: AsyncConnection, namespace: str | None, after: str | None, limit: int
) -> list[Any]:
    """Robots of *namespace* (None: of every namespace), by name."""
    q = sa.select(robots).where(_after(robots.c.name, after))
    if namespace is not None:
        q = q.where(robots.c.namespace == namespace)
    return list(await conn.execute(q.order_by(robots.c.name).limit(limit)))


async def robot_full(conn: AsyncConnection, name: str) -> Any:
    return (await conn.execute(sa.select(robots).where(robots.c.name == name))).first()


async def update_robot(conn: AsyncConnection, robot_id: int, values: dict[str, Any]) -> None:
    await conn.execute(sa.update(robots).where(robots.c.id == robot_id).values(**values))


async def new_robot_secret(conn: AsyncConnection, robot_id: int, secret_hash: str) -> None:
    """A new secret, un-revoked, in a new credential epoch: every token issued before (with the
    old secret, or before a revocation) is refused."""
    await conn.execute(
        sa.update(robots)
        .where(robots.c.id == robot_id)
        .values(
            secret_hash=secret_hash,
            revoked_at=None,
            token_version=robots.c.token_version + 1,
        )
    )


async def delete_robot(conn: AsyncConnection, robot_id: int) -> None:
    await conn.execute(sa.delete(robots).where(robots.c.id == robot_id))


def aware(value: Any) -> Any:
    return _aware(value)
