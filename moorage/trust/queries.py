"""Every SQL statement of content trust (tables in tables.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.queries import _insert
from ..db.schema import blobs, manifest_references, manifests, repositories, repository_blobs, tags
from .tables import (
    trust_artifacts,
    trust_entries,
    trust_namespaces,
    trust_policies,
    trust_results,
    trust_state,
)


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC): label them."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _at(value: datetime) -> datetime:
    return _aware(value) or value




# --- the verdict-cache generation -----------------------------------------------------------


async def generation(conn: AsyncConnection) -> int:
    value = await conn.scalar(sa.select(trust_state.c.generation).where(trust_state.c.id == 1))
    return int(value or 0)


async def bump_generation(conn: AsyncConnection) -> None:
    """Every node drops its cached verdicts when it next looks (within the refresh interval)."""
    stmt = (
        _insert(conn, trust_state)
        .values(id=1, generation=1)
        .on_conflict_do_update(
            index_elements=[trust_state.c.id],
            set_={"generation": trust_state.c.generation + 1},
        )
    )
    await conn.execute(stmt)


# --- namespaces and entries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamespaceRow:
    namespace: str
    version: int
    sigstore_trusted_root: str | None
    notation_policy: str | None
    require_tlog_for_keys: bool | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EntryRow:
    id: int
    namespace: str
    kind: str
    name: str
    spec: dict[str, Any]
    created_at: datetime
    created_by: str


async def namespace_versions(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(sa.select(trust_namespaces.c.namespace, trust_namespaces.c.version))
    return {r.namespace: int(r.version) for r in rows}


async def namespace_rows(conn: AsyncConnection, names: Iterable[str]) -> dict[str, NamespaceRow]:
    t = trust_namespaces
    rows = await conn.execute(sa.select(t).where(t.c.namespace.in_(list(names))))
    return {
        r.namespace: NamespaceRow(
            r.namespace,
            int(r.version),
            r.sigstore_trusted_root,
            r.notation_policy,
            r.require_tlog_for_keys,
            _at(r.updated_at),
        )
        for r in rows
    }


async def all_namespaces(conn: AsyncConnection) -> list[str]:
    """Namespaces with trust settings or entries, ``*`` first."""
    a = sa.select(trust_namespaces.c.namespace)
    b = sa.select(trust_entries.c.namespace)
    names = {r[0] for r in await conn.execute(sa.union(a, b))}
    return sorted(names, key=lambda n: (n != "*", n))


async def bump_namespace(conn: AsyncConnection, namespace: str, **changes: Any) -> int:
    """Raise the namespace's configuration version (and set *changes*); returns the new one."""
    t = trust_namespaces
    ts = now()
    values = {"namespace": namespace, "version": 1, "updated_at": ts, **changes}
    stmt = (
        _insert(conn, t)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[t.c.namespace],
            set_={"version": t.c.version + 1, "updated_at": ts, **changes},
        )
    )
    await conn.execute(stmt)
    version = await conn.scalar(sa.select(t.c.version).where(t.c.namespace == namespace))
    await bump_generation(conn)
    return int(version or 0)


async def entries(conn: AsyncConnection, namespaces: Sequence[str]) -> list[EntryRow]:
    t = trust_entries
    rows = await conn.execute(
        sa.select(t).where(t.c.namespace.in_(list(namespaces))).order_by(t.c.kind, t.c.name)
    )
    return [
        EntryRow(r.id, r.namespace, r.kind, r.name, dict(r.spec), _at(r.created_at), r.created_by)
        for r in rows
    ]


async def add_entry(
    conn: AsyncConnection, namespace: str, kind: str, name: str, spec: dict[str, Any], by: str
) -> bool:
    """False when an entry of that kind and name is already there."""
    t = trust_entries
    stmt = (
        _insert(conn, t)
        .values(namespace=namespace, kind=kind, name=name, spec=spec, created_at=now(), created_by=by)
        .on_conflict_do_nothing(index_elements=[t.c.namespace, t.c.kind, t.c.name])
    )
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def remove_entry(conn: AsyncConnection, namespace: str, kinds: Sequence[str], name: str) -> int:
    t = trust_entries
    result = await conn.execute(
        sa.delete(t).where(t.c.namespace == namespace, t.c.kind.in_(list(kinds)), t.c.name == name)
    )
    return int(result.rowcount or 0)


# --- pull policies ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyRow:
    target: str
    require_signature: bool
    signers: tuple[str, ...]
    require_all: bool
    docker_reference: str | None
    updated_at: datetime
    updated_by: str


def _policy(r: Any) -> PolicyRow:
    signers = tuple(str(s) for s in (r.signers or []))
    return PolicyRow(
        r.target,
        bool(r.require_signature),
        signers,
        bool(r.require_all),
        r.docker_reference,
        _at(r.updated_at),
        r.updated_by,
    )


async def all_policies(conn: AsyncConnection) -> dict[str, PolicyRow]:
    rows = await conn.execute(sa.select(trust_policies))
    return {r.target: _policy(r) for r in rows}


async def set_policy(
    conn: AsyncConnection,
    target: str,
    *,
    require_signature: bool,
    signers: Sequence[str],
    require_all: bool,
    docker_reference: str | None,
    by: str,
) -> None:
    t = trust_policies
    values = {
        "require_signature": require_signature,
        "signers": list(signers),
        "require_all": require_all,
        "docker_reference": docker_reference,
        "updated_at": now(),
        "updated_by": by,
    }
    stmt = (
        _insert(conn, t)
        .values(target=target, **values)
        .on_conflict_do_update(index_elements=[t.c.target], set_=values)
    )
    await conn.execute(stmt)
    await bump_generation(conn)


async def delete_policy(conn: AsyncConnection, target: str) -> bool:
    result = await conn.execute(sa.delete(trust_policies).where(trust_policies.c.target == target))
    await bump_generation(conn)
    return bool(result.rowcount)


# --- signature artifacts ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    id: int
    repository_id: int
    repository: str
    manifest_id: int
    signature_digest: str
    subject_digest: str
    form: str
    tag: str | None
    created_at: datetime


_ARTIFACT_COLS = (
    trust_artifacts.c.id,
    trust_artifacts.c.repository_id,
    repositories.c.name.label("repository"),
    trust_artifacts.c.manifest_id,
    trust_artifacts.c.signature_digest,
    trust_artifacts.c.subject_digest,
    trust_artifacts.c.form,
    trust_artifacts.c.tag,
    trust_artifacts.c.created_at,
)
_ARTIFACT_FROM = trust_artifacts.join(
    repositories, repositories.c.id == trust_artifacts.c.repository_id
)


def _artifact(r: Any) -> ArtifactRow:
    return ArtifactRow(
        r.id,
        r.repository_id,
        r.repository,
        r.manifest_id,
        r.signature_digest,
        r.subject_digest,
        r.form,
        r.tag,
        _at(r.created_at),
    )


async def add_artifact(
    conn: AsyncConnection,
    repository_id: int,
    manifest_id: int,
    signature_digest: str,
    subject_digest: str,
    form: str,
    tag: str | None,
) -> int | None:
    """The new artifact's id; None when it was already known."""
    t = trust_artifacts
    stmt = (
        _insert(conn, t)
        .values(
            repository_id=repository_id,
            manifest_id=manifest_id,
            signature_digest=signature_digest,
            subject_digest=subject_digest,
            form=form,
            tag=tag,
            created_at=now(),
        )
        .on_conflict_do_nothing(
            index_elements=[t.c.repository_id, t.c.signature_digest, t.c.subject_digest]
        )
        .returning(t.c.id)
    )
    value = (await conn.execute(stmt)).scalar()
    return int(value) if value is not None else None


async def remove_tagged_artifacts(
    conn: AsyncConnection, repository_id: int, signature_digest: str, tag: str
) -> int:
    """A cosign ``.sig`` tag moved or was deleted: its old manifest no longer signs."""
    t = trust_artifacts
    result = await conn.execute(
        sa.delete(t).where(
            t.c.repository_id == repository_id,
            t.c.signature_digest == signature_digest,
            t.c.tag == tag,
        )
    )
    return int(result.rowcount or 0)


async def remove_artifacts_of_manifest(
    conn: AsyncConnection, repository_id: int, signature_digest: str
) -> int:
    t = trust_artifacts
    result = await conn.execute(
        sa.delete(t).where(
            t.c.repository_id == repository_id, t.c.signature_digest == signature_digest
        )
    )
    return int(result.rowcount or 0)


async def artifact(conn: AsyncConnection, artifact_id: int) -> ArtifactRow | None:
    row = (
        await conn.execute(
            sa.select(*_ARTIFACT_COLS)
            .select_from(_ARTIFACT_FROM)
            .where(trust_artifacts.c.id == artifact_id)
        )
    ).first()
    return _artifact(row) if row else None


async def artifacts_for_subjects(
    conn: AsyncConnection, repository_id: int, subjects: Sequence[str], limit: int = 1000
) -> list[ArtifactRow]:
    if not subjects:
        return []
    rows = await conn.execute(
        sa.select(*_ARTIFACT_COLS)
        .select_from(_ARTIFACT_FROM)
        .where(
            trust_artifacts.c.repository_id == repository_id,
            trust_artifacts.c.subject_digest.in_(list(subjects)),
        )
        .order_by(trust_artifacts.c.id)
        .limit(limit)
    )
    return [_artifact(r) for r in rows]


def _namespace_filter(namespace: str | None) -> list[Any]:
    if namespace is None or namespace == "*":
        return []
    return [repositories.c.namespace == namespace]


async def artifacts_after(
    conn: AsyncConnection, namespace: str | None, after_id: int, limit: int
) -> list[ArtifactRow]:
    """Artifacts in repositories of *namespace* (every one for ``*``/None), by id."""
    rows = await conn.execute(
        sa.select(*_ARTIFACT_COLS)
        .select_from(_ARTIFACT_FROM)
        .where(trust_artifacts.c.id > after_id, *_namespace_filter(namespace))
        .order_by(trust_artifacts.c.id)
        .limit(limit)
    )
    return [_artifact(r) for r in rows]


async def count_artifacts(conn: AsyncConnection, namespace: str | None) -> int:
    value = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(_ARTIFACT_FROM)
        .where(*_namespace_filter(namespace))
    )
    return int(value or 0)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultRow:
    artifact_id: int
    config_version: str
    position: int
    kind: str
    verified: bool
    reason: str
    signer: dict[str, Any] | None
    matched: tuple[str, ...]
    warnings: tuple[str, ...]
    signed_at: datetime | None
    docker_reference: str | None
    verified_at: datetime


async def results(
    conn: AsyncConnection, artifact_ids: Sequence[int], versions: Sequence[str]
) -> dict[tuple[int, str], list[ResultRow]]:
    """Results by (artifact id, config version), in signature order."""
    if not artifact_ids:
        return {}
    t = trust_results
    rows = await conn.execute(
        sa.select(t)
        .where(t.c.artifact_id.in_(list(artifact_ids)), t.c.config_version.in_(list(versions)))
        .order_by(t.c.artifact_id, t.c.position)
    )
    out: dict[tuple[int, str], list[ResultRow]] = {}
    for r in rows:
        out.setdefault((r.artifact_id, r.config_version), []).append(
            ResultRow(
                r.artifact_id,
                r.config_version,
                r.position,
                r.kind,
                bool(r.verified),
                r.reason,
                dict(r.signer) if r.signer else None,
                tuple(r.matched or ()),
                tuple(r.warnings or ()),
                _aware(r.signed_at),
                r.docker_reference,
                _at(r.verified_at),
            )
        )
    return out


async def replace_results(
    conn: AsyncConnection, artifact_id: int, version: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Store one verification of an artifact under *version*; results of other versions of the
    same artifact are dropped (they describe a configuration that is gone)."""
    t = trust_results
    await conn.execute(sa.delete(t).where(t.c.artifact_id == artifact_id))
    if rows:
        ts = now()
        await conn.execute(
            sa.insert(t),
            [
                {"artifact_id": artifact_id, "config_version": version, "position": i, "verified_at": ts, **row}
                for i, row in enumerate(rows)
            ],
        )


# --- the registry's own rows that trust reads -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    id: int
    repository_id: int
    digest: str
    media_type: str
    size: int
    subject_digest: str | None
    payload: bytes


async def repository_id(conn: AsyncConnection, name: str) -> int | None:
    value = await conn.scalar(sa.select(repositories.c.id).where(repositories.c.name == name))
    return int(value) if value is not None else None


async def manifest_info(
    conn: AsyncConnection, repository_id: int, digest: str, *, payload: bool = True
) -> ManifestInfo | None:
    m = manifests
    cols = [m.c.id, m.c.repository_id, m.c.digest, m.c.media_type, m.c.size, m.c.subject_digest]
    if payload:
        cols.append(m.c.payload)
    row = (
        await conn.execute(
            sa.select(*cols).where(m.c.repository_id == repository_id, m.c.digest == digest)
        )
    ).first()
    if row is None:
        return None
    return ManifestInfo(
        row.id,
        row.repository_id,
        row.digest,
        row.media_type,
        int(row.size),
        row.subject_digest,
        bytes(row.payload) if payload else b"",
    )


async def parent_indexes(
    conn: AsyncConnection, repository_id: int, digest: str, limit: int = 16
) -> list[str]:
    """Digests of the indexes in this repository that list *digest* as a child."""
    rows = await conn.execute(
        sa.select(manifests.c.digest)
        .select_from(
            manifest_references.join(manifests, manifests.c.id == manifest_references.c.manifest_id)
        )
        .where(
            manifest_references.c.digest == digest,
            manifest_references.c.kind == "manifest",
            manifests.c.repository_id == repository_id,
        )
        .limit(limit)
    )
    return [r.digest for r in rows]


async def tags_of(conn: AsyncConnection, repository_id: int, manifest_id: int) -> list[str]:
    rows = await conn.execute(
        sa.select(tags.c.name)
        .where(tags.c.repository_id == repository_id, tags.c.manifest_id == manifest_id)
        .limit(50)
    )
    return [r.name for r in rows]


async def is_signature_manifest(conn: AsyncConnection, repository_id: int, digest: str) -> bool:
    t = trust_artifacts
    value = await conn.scalar(
        sa.select(t.c.id)
        .where(t.c.repository_id == repository_id, t.c.signature_digest == digest)
        .limit(1)
    )
    return value is not None


async def linked_blob_size(conn: AsyncConnection, repository_id: int, digest: str) -> int | None:
    """The size of a blob linked into the repository (the repository boundary), else None."""
    value = await conn.scalar(
        sa.select(blobs.c.size)
        .select_from(repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id))
        .where(repository_blobs.c.repository_id == repository_id, blobs.c.digest == digest)
    )
    return int(value) if value is not None else None


async def tags_page(
    conn: AsyncConnection, repository_id: int, after: str | None, limit: int
) -> list[tuple[str, str]]:
    """(tag, digest) in tag order."""
    q = (
        sa.select(tags.c.name, manifests.c.digest)
        .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
        .where(tags.c.repository_id == repository_id)
        .order_by(tags.c.name)
        .limit(limit)
    )
    if after is not None:
        q = q.where(tags.c.name > after)
    return [(r.name, r.digest) for r in await conn.execute(q)]

