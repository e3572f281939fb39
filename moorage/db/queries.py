"""Every SQL statement the registry runs lives here (services call these inside transactions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .schema import (
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tag_history,
    tags,
    uploads,
)


def now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# Statements of the push path built once, their values bound at execution: SQLAlchemy then
# finds the compiled form by the statement's memoized cache key instead of building the
# statement and its key again (~0.1-0.2 ms a statement on the SQLite writer thread).
_built: dict[tuple[str, str, tuple[str, ...], bool], Any] = {}


def insert_ignore_stmt(
    conn: AsyncConnection, table: sa.Table, keys: Sequence[str], returning_id: bool = False
) -> Any:
    """``INSERT … ON CONFLICT (keys) DO NOTHING [RETURNING id]`` for *table*, built once per
    dialect; execute it with the row's values as parameters."""
    key = (conn.dialect.name, table.name, tuple(keys), returning_id)
    stmt = _built.get(key)
    if stmt is None:
        stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=list(keys))
        if returning_id:
            stmt = stmt.returning(table.c.id)
        _built[key] = stmt
    return stmt


async def insert_ignore(
    conn: AsyncConnection, table: sa.Table, values: dict[str, Any], keys: Sequence[str]
) -> None:
    """INSERT that leaves an existing row (same *keys*) alone: concurrent twins are harmless.
    *values* are plain values (bound as parameters), not SQL expressions."""
    await conn.execute(insert_ignore_stmt(conn, table, keys), values)


# --- repositories ---------------------------------------------------------------------------


_REPOSITORY_ID = sa.select(repositories.c.id).where(repositories.c.name == sa.bindparam("name"))


async def repository_id(conn: AsyncConnection, name: str) -> int | None:
    return (await conn.execute(_REPOSITORY_ID, {"name": name})).scalar()


async def ensure_repository(conn: AsyncConnection, name: str, namespace: str) -> int:
    repo_id = await repository_id(conn, name)
    if repo_id is not None:
        return repo_id
    await insert_ignore(
        conn,
        repositories,
        {"name": name, "namespace": namespace, "created_at": now()},
        ["name"],
    )
    repo_id = await repository_id(conn, name)
    assert repo_id is not None
    return repo_id


async def catalog(conn: AsyncConnection, last: str | None, limit: int) -> list[str]:
    """Repositories that hold at least one manifest, lexically after *last*."""
    has_manifest = sa.exists().where(manifests.c.repository_id == repositories.c.id)
    q = sa.select(repositories.c.name).where(has_manifest)
    if last:
        q = q.where(repositories.c.name > last)
    rows = await conn.execute(q.order_by(repositories.c.name).limit(limit))
    return [r[0] for r in rows]


# --- blobs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobRow:
    id: int
    digest: str
    size: int


async def blob_in_repository(conn: AsyncConnection, repo: str, digest: str) -> BlobRow | None:
    """The blob, only when it is linked into *repo* (the repository security boundary)."""
    q = (
        sa.select(blobs.c.id, blobs.c.digest, blobs.c.size)
        .select_from(
            repositories.join(
                repository_blobs, repository_blobs.c.repository_id == repositories.c.id
            ).join(blobs, blobs.c.id == repository_blobs.c.blob_id)
        )
        .where(repositories.c.name == repo, blobs.c.digest == digest)
    )
    row = (await conn.execute(q)).first()
    return BlobRow(row.id, row.digest, row.size) if row else None


async def blob_by_digest(conn: AsyncConnection, digest: str) -> BlobRow | None:
    row = (
        await conn.execute(
            sa.select(blobs.c.id, blobs.c.digest, blobs.c.size).where(blobs.c.digest == digest)
        )
    ).first()
    return BlobRow(row.id, row.digest, row.size) if row else None


async def add_blob(conn: AsyncConnection, digest: str, size: int) -> int:
    await insert_ignore(
        conn, blobs, {"digest": digest, "size": size, "created_at": now()}, ["digest"]
    )
    row = await blob_by_digest(conn, digest)
    assert row is not None
    return row.id


async def link_blob(conn: AsyncConnection, repository_id: int, blob_id: int) -> None:
    await insert_ignore(
        conn,
        repository_blobs,
        {"repository_id": repository_id, "blob_id": blob_id, "created_at": now()},
        ["repository_id", "blob_id"],
    )


async def unlink_blob(conn: AsyncConnection, repository_id: int, blob_id: int) -> bool:
    res = await conn.execute(
        sa.delete(repository_blobs).where(
            repository_blobs.c.repository_id == repository_id,
            repository_blobs.c.blob_id == blob_id,
        )
    )
    return bool(res.rowcount)


async def linked_digests(
    conn: AsyncConnection, repository_id: int, digests: Sequence[str]
) -> set[str]:
    if not digests:
        return set()
    params = {"repository_id": repository_id, "digests": list(digests)}
    return {r[0] for r in await conn.execute(_LINKED_DIGESTS, params)}


_LINKED_DIGESTS = (
    sa.select(blobs.c.digest)
    .select_from(repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id))
    .where(
        repository_blobs.c.repository_id == sa.bindparam("repository_id"),
        blobs.c.digest.in_(sa.bindparam("digests", expanding=True)),
    )
)


# --- manifests and tags ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestRow:
    id: int
    digest: str
    media_type: str
    payload: bytes


_MANIFEST_COLS = (manifests.c.id, manifests.c.digest, manifests.c.media_type, manifests.c.payload)


async def manifest_by_tag(conn: AsyncConnection, repo: str, tag: str) -> ManifestRow | None:
    q = (
        sa.select(*_MANIFEST_COLS)
        .select_from(
            repositories.join(tags, tags.c.repository_id == repositories.c.id).join(
                manifests, manifests.c.id == tags.c.manifest_id
            )
        )
        .where(repositories.c.name == repo, tags.c.name == tag)
    )
    row = (await conn.execute(q)).first()
    return ManifestRow(row.id, row.digest, row.media_type, row.payload) if row else None


async def manifest_by_digest(conn: AsyncConnection, repo: str, digest: str) -> ManifestRow | None:
    q = (
        sa.select(*_MANIFEST_COLS)
        .select_from(repositories.join(manifests, manifests.c.repository_id == repositories.c.id))
        .where(repositories.c.name == repo, manifests.c.digest == digest)
    )
    row = (await conn.execute(q)).first()
    return ManifestRow(row.id, row.digest, row.media_type, row.payload) if row else None


async def manifest_digests_in(
    conn: AsyncConnection, repository_id: int, digests: Sequence[str]
) -> set[str]:
    if not digests:
        return set()
    params = {"repository_id": repository_id, "digests": list(digests)}
    return {r[0] for r in await conn.execute(_MANIFEST_DIGESTS_IN, params)}


_MANIFEST_DIGESTS_IN = sa.select(manifests.c.digest).where(
    manifests.c.repository_id == sa.bindparam("repository_id"),
    manifests.c.digest.in_(sa.bindparam("digests", expanding=True)),
)
_MANIFEST_ID = sa.select(manifests.c.id).where(
    manifests.c.repository_id == sa.bindparam("repository_id"),
    manifests.c.digest == sa.bindparam("digest"),
)


async def index_listing(conn: AsyncConnection, repository: str, child: str) -> str | None:
    """The digest of an index of *repository* that lists the manifest *child* (which may be
    absent: a sparse index), or None. Asked only when *child* is not found."""
    q = (
        sa.select(manifests.c.digest)
        .select_from(
            manifest_references.join(manifests, manifests.c.id == manifest_references.c.manifest_id)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
        )
        .where(
            manifest_references.c.digest == child,
            manifest_references.c.kind == "manifest",
            repositories.c.name == repository,
        )
        .limit(1)
    )
    return (await conn.execute(q)).scalar_one_or_none()


async def insert_manifest(
    conn: AsyncConnection,
    repository_id: int,
    *,
    digest: str,
    media_type: str,
    artifact_type: str | None,
    subject_digest: str | None,
    config_digest: str | None,
    annotations: dict[str, str] | None,
    payload: bytes,
    references: Sequence[tuple[str, str]],
) -> int:
    await insert_ignore(
        conn,
        manifests,
        {
            "repository_id": repository_id,
            "digest": digest,
            "media_type": media_type,
            "artifact_type": artifact_type,
            "subject_digest": subject_digest,
            "config_digest": config_digest,
            "annotations": annotations,
            "size": len(payload),
            "payload": payload,
            "created_at": now(),
        },
        ["repository_id", "digest"],
    )
    params = {"repository_id": repository_id, "digest": digest}
    manifest_id = (await conn.execute(_MANIFEST_ID, params)).scalar_one()
    refs = [
        {"manifest_id": manifest_id, "digest": ref_digest, "kind": kind}
        for ref_digest, kind in dict.fromkeys(references)
    ]
    if refs:  # one executemany
        stmt = insert_ignore_stmt(conn, manifest_references, ["manifest_id", "digest", "kind"])
        await conn.execute(stmt, refs)
    return int(manifest_id)


async def set_tag(
    conn: AsyncConnection, repository_id: int, name: str, manifest_id: int, digest: str
) -> str | None:
    """Point *name* at the manifest, recording what it pointed to before; returns that digest
    when the tag moved (None for a new tag or one that already pointed here).

    The tag row is locked (PostgreSQL) before it is read, so two pushes moving one tag at once
    take turns and each records what it really replaced (garbage collection reviews that
    manifest and the time machine lists it); a tag created by a concurrent push is then moved."""
    ts = now()
    key = {"repository_id": repository_id, "name": name}
    for _ in range(3):
        previous = (await conn.execute(_TAG_FOR_UPDATE, key)).first()
        if previous is None:
            created = await conn.execute(
                insert_ignore_stmt(conn, tags, ["repository_id", "name"], returning_id=True),
                {**key, "manifest_id": manifest_id, "created_at": ts, "updated_at": ts},
            )
            if created.first() is not None:
                return None
            continue  # created by a concurrent push meanwhile: lock it and move it
        if previous.digest == digest:
            return None
        await conn.execute(
            sa.update(tags)
            .where(tags.c.id == previous.id)
            .values(manifest_id=manifest_id, updated_at=ts)
        )
        await conn.execute(
            sa.insert(tag_history).values(
                repository_id=repository_id,
                name=name,
                manifest_digest=previous.digest,
                replaced_at=ts,
            )
        )
        return str(previous.digest)
    raise RuntimeError(f"tag {name} kept changing while it was set")


_TAG_FOR_UPDATE = (
    sa.select(tags.c.id, manifests.c.digest)
    .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
    .where(
        tags.c.repository_id == sa.bindparam("repository_id"), tags.c.name == sa.bindparam("name")
    )
    .with_for_update(of=tags)
)


async def delete_tag(conn: AsyncConnection, repository_id: int, name: str) -> str | None:
    """Delete a tag; returns the digest it pointed to, or None when there was no such tag."""
    row = (
        await conn.execute(
            sa.select(tags.c.id, manifests.c.digest)
            .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
            .where(tags.c.repository_id == repository_id, tags.c.name == name)
            .with_for_update(of=tags)
        )
    ).first()
    if row is None:
        return None
    await conn.execute(sa.delete(tags).where(tags.c.id == row.id))
    await conn.execute(
        sa.insert(tag_history).values(
            repository_id=repository_id, name=name, manifest_digest=row.digest, replaced_at=now()
        )
    )
    return str(row.digest)


async def delete_manifest(
    conn: AsyncConnection, repository_id: int, digest: str
) -> list[str] | None:
    """Delete a manifest and the tags that point to it (as Distribution does); returns those
    tags, or None when the manifest was not there."""
    manifest_id = (
        await conn.execute(
            sa.select(manifests.c.id).where(
                manifests.c.repository_id == repository_id, manifests.c.digest == digest
            )
        )
    ).scalar()
    if manifest_id is None:
        return None
    ts = now()
    tag_rows = (
        await conn.execute(sa.select(tags.c.name).where(tags.c.manifest_id == manifest_id))
    ).all()
    for (tag_name,) in tag_rows:
        await conn.execute(
            sa.insert(tag_history).values(
                repository_id=repository_id,
                name=tag_name,
                manifest_digest=digest,
                replaced_at=ts,
            )
        )
    await conn.execute(sa.delete(tags).where(tags.c.manifest_id == manifest_id))
    await conn.execute(
        sa.delete(manifest_references).where(manifest_references.c.manifest_id == manifest_id)
    )
    await conn.execute(sa.delete(manifests).where(manifests.c.id == manifest_id))
    return [str(name) for (name,) in tag_rows]


async def tag_names(
    conn: AsyncConnection, repository_id: int, last: str | None, limit: int
) -> list[str]:
    q = sa.select(tags.c.name).where(tags.c.repository_id == repository_id)
    if last:
        q = q.where(tags.c.name > last)
    rows = await conn.execute(q.order_by(tags.c.name).limit(limit))
    return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class ReferrerRow:
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    annotations: dict[str, str] | None


async def referrers(
    conn: AsyncConnection, repository_id: int, subject: str, artifact_type: str | None
) -> list[ReferrerRow]:
    q = sa.select(
        manifests.c.digest,
        manifests.c.media_type,
        manifests.c.artifact_type,
        manifests.c.size,
        manifests.c.annotations,
    ).where(manifests.c.repository_id == repository_id, manifests.c.subject_digest == subject)
    if artifact_type is not None:
        q = q.where(manifests.c.artifact_type == artifact_type)
    rows = await conn.execute(q.order_by(manifests.c.created_at, manifests.c.id))
    return [
        ReferrerRow(r.digest, r.media_type, r.artifact_type, r.size, r.annotations) for r in rows
    ]


# --- uploads --------------------------------------------------------------------------------


@dataclass(slots=True)
class UploadRow:
    id: str
    repository_id: int
    size: int
    hash_algorithm: str
    hash_state: bytes | None
    storage_state: dict[str, Any]
    lease_token: str | None
    lease_expires_at: datetime | None
    created_at: datetime


async def create_upload(
    conn: AsyncConnection,
    upload_id: str,
    repository_id: int,
    algorithm: str,
    storage_state: dict[str, Any],
    hash_state: bytes | None,
) -> None:
    ts = now()
    await conn.execute(
        sa.insert(uploads).values(
            id=upload_id,
            repository_id=repository_id,
            size=0,
            hash_algorithm=algorithm,
            hash_state=hash_state,
            storage_state=storage_state,
            created_at=ts,
            updated_at=ts,
        )
    )


async def get_upload(conn: AsyncConnection, repo: str, upload_id: str) -> UploadRow | None:
    q = (
        sa.select(uploads)
        .select_from(uploads.join(repositories, repositories.c.id == uploads.c.repository_id))
        .where(uploads.c.id == upload_id, repositories.c.name == repo)
    )
    r = (await conn.execute(q)).first()
    return _upload_row(r) if r is not None else None


def _upload_row(r: Any) -> UploadRow:
    return UploadRow(
        r.id,
        r.repository_id,
        r.size,
        r.hash_algorithm,
        r.hash_state,
        r.storage_state,
        r.lease_token,
        _aware(r.lease_expires_at),
        _aware(r.created_at) or now(),
    )


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite returns naive UTC
        return ts.replace(tzinfo=UTC)
    return ts


async def claim_upload(
    conn: AsyncConnection, repo: str, upload_id: str, token: str, expires_at: datetime
) -> UploadRow | None:
    """Take the session of *repo*'s upload for one request, in one statement; None when it is
    unknown there or busy (see :func:`get_upload` to tell which)."""
    repo_id = sa.select(repositories.c.id).where(repositories.c.name == repo).scalar_subquery()
    res = await conn.execute(
        sa.update(uploads)
        .where(
            uploads.c.id == upload_id,
            uploads.c.repository_id == repo_id,
            sa.or_(uploads.c.lease_token.is_(None), uploads.c.lease_expires_at < now()),
        )
        .values(lease_token=token, lease_expires_at=expires_at)
        .returning(*uploads.c)
    )
    r = res.first()
    return _upload_row(r) if r is not None else None


async def renew_upload_lease(
    conn: AsyncConnection, upload_id: str, token: str, expires_at: datetime
) -> bool:
    res = await conn.execute(
        sa.update(uploads)
        .where(uploads.c.id == upload_id, uploads.c.lease_token == token)
        .values(lease_expires_at=expires_at)
    )
    return bool(res.rowcount)


async def save_upload_progress(
    conn: AsyncConnection,
    upload_id: str,
    token: str,
    size: int,
    hash_state: bytes | None,
    storage_state: dict[str, Any],
    release: bool = True,
) -> bool:
    """Record progress (and release the lease); False when the lease was lost meanwhile."""
    values: dict[str, Any] = {
        "size": size,
        "hash_state": hash_state,
        "storage_state": storage_state,
        "updated_at": now(),
    }
    if release:
        values.update(lease_token=None, lease_expires_at=None)
    res = await conn.execute(
        sa.update(uploads)
        .where(uploads.c.id == upload_id, uploads.c.lease_token == token)
        .values(**values)
    )
    return bool(res.rowcount)


async def release_upload_lease(conn: AsyncConnection, upload_id: str, token: str) -> None:
    await conn.execute(
        sa.update(uploads)
        .where(uploads.c.id == upload_id, uploads.c.lease_token == token)
        .values(lease_token=None, lease_expires_at=None)
    )


async def delete_upload(conn: AsyncConnection, upload_id: str) -> None:
    await conn.execute(sa.delete(uploads).where(uploads.c.id == upload_id))


async def delete_stale_uploads(conn: AsyncConnection, before: datetime) -> int:
    """Drop upload sessions without progress since *before* that no live request holds."""
    result = await conn.execute(
        sa.delete(uploads).where(
            uploads.c.updated_at < before,
            sa.or_(uploads.c.lease_token.is_(None), uploads.c.lease_expires_at < now()),
        )
    )
    return int(result.rowcount or 0)


async def blob_sizes(conn: AsyncConnection, digests: Sequence[str]) -> dict[str, int]:
    if not digests:
        return {}
    rows = await conn.execute(_BLOB_SIZES, {"digests": list(digests)})
    return {r.digest: r.size for r in rows}


_BLOB_SIZES = sa.select(blobs.c.digest, blobs.c.size).where(
    blobs.c.digest.in_(sa.bindparam("digests", expanding=True))
)
