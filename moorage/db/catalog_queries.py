"""SQL for the management read models (repository lists, details, tags, statistics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .audit_schema import audit_events
from .queries import _aware, now
from .schema import (
    blobs,
    manifests,
    organizations,
    permissions,
    repositories,
    repository_blobs,
    robots,
    tags,
    team_members,
    teams,
    users,
)


@dataclass(frozen=True, slots=True)
class ReadScope:
    """Which repositories a caller may read: everything, or public ones (when ``public``) plus
    those in ``namespaces`` and those named in ``repositories``."""

    all: bool = False
    public: bool = False
    namespaces: frozenset[str] = frozenset()
    repositories: frozenset[str] = frozenset()


def _scope_filter(scope: ReadScope) -> Any:
    if scope.all:
        return sa.true()
    conds: list[Any] = []
    if scope.public:
        conds.append(repositories.c.visibility == "public")
    if scope.namespaces:
        conds.append(repositories.c.namespace.in_(sorted(scope.namespaces)))
    if scope.repositories:
        conds.append(repositories.c.name.in_(sorted(scope.repositories)))
    return sa.or_(*conds) if conds else sa.false()


async def registry_catalog(
    conn: AsyncConnection, scope: ReadScope, last: str | None, limit: int
) -> list[str]:
    """/v2/_catalog: repositories holding a manifest that *scope* may read, lexically after
    *last* — one query, whatever the caller may not see."""
    has_manifest = sa.exists().where(manifests.c.repository_id == repositories.c.id)
    q = sa.select(repositories.c.name).where(has_manifest, _scope_filter(scope))
    if last:
        q = q.where(repositories.c.name > last)
    rows = await conn.execute(q.order_by(repositories.c.name).limit(limit))
    return [r[0] for r in rows]


async def user_grant_targets(conn: AsyncConnection, user_id: int) -> tuple[set[str], set[str]]:
    """(organization names, repository names) on which the user holds any role, directly or
    through a team."""
    my_teams = sa.select(team_members.c.team_id).where(team_members.c.user_id == user_id)
    mine = sa.or_(permissions.c.user_id == user_id, permissions.c.team_id.in_(my_teams))
    orgs = await conn.execute(
        sa.select(organizations.c.name)
        .join(permissions, permissions.c.organization_id == organizations.c.id)
        .where(mine)
    )
    repos = await conn.execute(
        sa.select(repositories.c.name)
        .join(permissions, permissions.c.repository_id == repositories.c.id)
        .where(mine)
    )
    return {r[0] for r in orgs}, {r[0] for r in repos}


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    id: int
    name: str
    namespace: str
    visibility: str
    description: str
    created_at: datetime
    pull_count: int
    push_count: int
    last_push_at: datetime | None
    last_pull_at: datetime | None
    tag_count: int


_tag_count = (
    sa.select(sa.func.count())
    .where(tags.c.repository_id == repositories.c.id)
    .scalar_subquery()
    .label("tag_count")
)


def _repo(r: Any) -> RepositoryRow:
    return RepositoryRow(
        r.id,
        r.name,
        r.namespace,
        r.visibility,
        r.description or "",
        _aware(r.created_at) or now(),
        int(r.pull_count or 0),
        int(r.push_count or 0),
        _aware(r.last_push_at),
        _aware(r.last_pull_at),
        int(r.tag_count or 0),
    )


async def list_repositories(
    conn: AsyncConnection,
    scope: ReadScope,
    *,
    query: str | None,
    namespace: str | None,
    visibility: str | None,
    after: str | None,
    limit: int,
) -> list[RepositoryRow]:
    q = sa.select(repositories, _tag_count).where(_scope_filter(scope))
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(repositories.c.name.like(f"%{escaped}%", escape="\\"))
    if namespace is not None:
        q = q.where(repositories.c.namespace == namespace)
    if visibility is not None:
        q = q.where(repositories.c.visibility == visibility)
    if after:
        q = q.where(repositories.c.name > after)
    rows = await conn.execute(q.order_by(repositories.c.name).limit(limit))
    return [_repo(r) for r in rows]


async def repository(conn: AsyncConnection, name: str) -> RepositoryRow | None:
    r = (
        await conn.execute(sa.select(repositories, _tag_count).where(repositories.c.name == name))
    ).first()
    return _repo(r) if r else None


async def repository_size(conn: AsyncConnection, repository_id: int) -> int:
    """Sum of the distinct blobs linked into the repository."""
    q = (
        sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
        .select_from(repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id))
        .where(repository_blobs.c.repository_id == repository_id)
    )
    return int((await conn.execute(q)).scalar_one())


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    payload: bytes
    created_at: datetime
    updated_at: datetime


async def list_tags(
    conn: AsyncConnection, repository_id: int, after: str | None, limit: int
) -> list[TagRow]:
    q = (
        sa.select(
            tags.c.name,
            tags.c.created_at,
            tags.c.updated_at,
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.artifact_type,
            manifests.c.size,
            manifests.c.payload,
        )
        .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
        .where(tags.c.repository_id == repository_id)
    )
    if after:
        q = q.where(tags.c.name > after)
    rows = await conn.execute(q.order_by(tags.c.name).limit(limit))
    return [
        TagRow(
            r.name,
            r.digest,
            r.media_type,
            r.artifact_type,
            int(r.size),
            bytes(r.payload),
            _aware(r.created_at) or now(),
            _aware(r.updated_at) or now(),
        )
        for r in rows
    ]


async def tags_of_manifest(conn: AsyncConnection, repository_id: int, digest: str) -> list[str]:
    q = (
        sa.select(tags.c.name)
        .join(manifests, manifests.c.id == tags.c.manifest_id)
        .where(tags.c.repository_id == repository_id, manifests.c.digest == digest)
        .order_by(tags.c.name)
    )
    return [r[0] for r in await conn.execute(q)]


@dataclass(frozen=True, slots=True)
class ManifestDetailRow:
    digest: str
    media_type: str
    artifact_type: str | None
    subject_digest: str | None
    size: int
    payload: bytes
    created_at: datetime


async def manifests_by_digests(
    conn: AsyncConnection, repository_id: int, digests: Sequence[str]
) -> dict[str, ManifestDetailRow]:
    if not digests:
        return {}
    q = sa.select(manifests).where(
        manifests.c.repository_id == repository_id, manifests.c.digest.in_(list(digests))
    )
    return {
        r.digest: ManifestDetailRow(
            r.digest,
            r.media_type,
            r.artifact_type,
            r.subject_digest,
            int(r.size),
            bytes(r.payload),
            _aware(r.created_at) or now(),
        )
        for r in await conn.execute(q)
    }


async def delete_repository(conn: AsyncConnection, repository_id: int) -> None:
    """The repository and everything hanging off it (tags, manifests, references, links,
    uploads, permissions, history, by ON DELETE CASCADE where declared). Blobs stay: unlinked
    blobs are garbage for GC."""
    from .schema import manifest_references, tag_history, uploads

    ids = sa.select(manifests.c.id).where(manifests.c.repository_id == repository_id)
    await conn.execute(sa.delete(tags).where(tags.c.repository_id == repository_id))
    await conn.execute(
        sa.delete(manifest_references).where(manifest_references.c.manifest_id.in_(ids))
    )
    await conn.execute(sa.delete(manifests).where(manifests.c.repository_id == repository_id))
    await conn.execute(
        sa.delete(repository_blobs).where(repository_blobs.c.repository_id == repository_id)
    )
    await conn.execute(sa.delete(tag_history).where(tag_history.c.repository_id == repository_id))
    await conn.execute(sa.delete(uploads).where(uploads.c.repository_id == repository_id))
    await conn.execute(sa.delete(permissions).where(permissions.c.repository_id == repository_id))
    await conn.execute(sa.delete(repositories).where(repositories.c.id == repository_id))


async def set_description(conn: AsyncConnection, name: str, description: str) -> bool:
    res = await conn.execute(
        sa.update(repositories).where(repositories.c.name == name).values(description=description)
    )
    return bool(res.rowcount)


# --- statistics -----------------------------------------------------------------------------


async def counts(conn: AsyncConnection) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, table in (
        ("repositories", repositories),
        ("manifests", manifests),
        ("tags", tags),
        ("blobs", blobs),
        ("users", users),
        ("organizations", organizations),
        ("teams", teams),
        ("robots", robots),
    ):
        out[key] = int(
            (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
        )
    return out


async def storage_used(conn: AsyncConnection) -> int:
    q = sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
    return int((await conn.execute(q)).scalar_one())


async def storage_per_namespace(conn: AsyncConnection, scope: ReadScope) -> dict[str, int]:
    """Distinct bytes linked into each namespace's repositories (a blob shared by two
    repositories of one namespace counts once)."""
    pairs = (
        sa.select(repositories.c.namespace, blobs.c.id, blobs.c.size)
        .select_from(
            repositories.join(
                repository_blobs, repository_blobs.c.repository_id == repositories.c.id
            ).join(blobs, blobs.c.id == repository_blobs.c.blob_id)
        )
        .where(_scope_filter(scope))
        .distinct()
        .subquery()
    )
    q = sa.select(pairs.c.namespace, sa.func.sum(pairs.c.size)).group_by(pairs.c.namespace)
    return {r[0]: int(r[1] or 0) for r in await conn.execute(q)}


async def largest_repositories(
    conn: AsyncConnection, scope: ReadScope, limit: int
) -> list[tuple[str, int]]:
    total = sa.func.sum(blobs.c.size).label("total")
    q = (
        sa.select(repositories.c.name, total)
        .select_from(
            repositories.join(
                repository_blobs, repository_blobs.c.repository_id == repositories.c.id
            ).join(blobs, blobs.c.id == repository_blobs.c.blob_id)
        )
        .where(_scope_filter(scope))
        .group_by(repositories.c.name)
        .order_by(total.desc(), repositories.c.name)
        .limit(limit)
    )
    return [(r[0], int(r[1] or 0)) for r in await conn.execute(q)]


async def activity_per_day(
    conn: AsyncConnection, since: datetime, actions: Sequence[str], scope: ReadScope
) -> list[tuple[date, str, int]]:
    """(day, action, records) of successful *actions* on repositories in *scope* in the audit
    log since *since*."""
    col = audit_events.c.occurred_at
    day = sa.func.date(col) if conn.dialect.name == "sqlite" else sa.cast(col, sa.Date)
    q = (
        sa.select(day.label("day"), audit_events.c.action, sa.func.count())
        .where(col >= since, audit_events.c.action.in_(list(actions)))
        .where(audit_events.c.result == "success")
        .group_by(day, audit_events.c.action)
    )
    if not scope.all:
        q = q.join(repositories, repositories.c.name == audit_events.c.repository).where(
            _scope_filter(scope)
        )
    out: list[tuple[date, str, int]] = []
    for d, action, n in await conn.execute(q):
        out.append((d if isinstance(d, date) else date.fromisoformat(str(d)), action, int(n)))
    return out


async def bump_counters(
    conn: AsyncConnection,
    pulls: dict[str, tuple[int, datetime]],
    pushes: dict[str, tuple[int, datetime]],
) -> None:
    """Add batched pull/push counts to repositories (called from the audit flusher)."""
    for name, (n, at) in pulls.items():
        await conn.execute(
            sa.update(repositories)
            .where(repositories.c.name == name)
            .values(pull_count=repositories.c.pull_count + n, last_pull_at=at)
        )
    for name, (n, at) in pushes.items():
        await conn.execute(
            sa.update(repositories)
            .where(repositories.c.name == name)
            .values(push_count=repositories.c.push_count + n, last_push_at=at)
        )
