"""Storage quotas per namespace (an organization or a user's namespace).

**What counts.** A namespace's usage is computed from the reference tables, never kept as a
running total: the sizes of the distinct blobs that the manifests of its repositories reference
(config and layers; a base layer shared by several repositories of the namespace counts once),
plus the sizes of its distinct manifests. Anything that removes a manifest — a delete by digest,
a repository deleted, a garbage-collection pass — frees its share at the commit that removes it,
with nothing to keep in step; a blob uploaded but not (yet) referenced by a manifest does not
count (garbage collection removes it after the grace window). docs/lifecycle.md "Quotas".

**When.** Checked in the policy chain (moorage/services/rules.py, order QUOTA) inside the
transaction of a manifest push, after the manifest and its references were written: the usage
then includes this push, and a push that would take the namespace over its quota is refused
with 403 ``DENIED`` naming the namespace, the quota and what the push would use.

**Cost.** The exact usage is an aggregate over the namespace's references; a push does not pay
it on every check: see :class:`QuotaRule` (an upper bound kept in the quota row, the exact
figure computed only when the bound says the push might not fit).

**Concurrency.** The quota row is the namespace's lock: on PostgreSQL the check reads it
``FOR UPDATE`` before it computes the usage, so pushes into a namespace with a quota take turns
from there to their commit, and each one's usage (READ COMMITTED: a fresh snapshot per
statement, taken after the lock was granted) includes every push committed before it. SQLite
serializes writers already (BEGIN IMMEDIATE). No push can overshoot.

A namespace that is over its quota (the quota was lowered below its usage) still accepts a push
that adds no bytes (a tag pointing at content the namespace holds elsewhere).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.schema import (
    blobs,
    manifest_references,
    manifests,
    organizations,
    repositories,
    users,
)
from ..oci.names import namespace_of, valid_name
from ..services.errors import Invalid, Missing
from ..services.rules import QUOTA, ManifestWrite, PolicyDenied, Rule
from .tables import namespace_quotas

MAX_BYTES = 1 << 62  # fits a BIGINT with room; far above any real store
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "p": 1024**5,
    "pb": 1000**5,
    "pib": 1024**5,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{0,3})\s*$")


def parse_size(raw: str) -> int:
    """``10737418240``, ``10GiB``, ``500MB``, ``1.5 TiB`` → bytes (KB/MB/GB/TB are powers of
    1000, KiB/MiB/GiB/TiB and the bare letters K/M/G/T powers of 1024)."""
    m = _SIZE.match(raw or "")
    if m is None or m.group(2).lower() not in _UNITS:
        raise Invalid(
            "limit",
            f"not a size: {raw[:40]!r} (bytes, or a number with a unit: 500MB, 10GiB, 1.5TiB)",
        )
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value > MAX_BYTES:
        raise Invalid("limit", f"{raw[:40]!r} is too large")
    return int(value)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def check_namespace(raw: str) -> str:
    name = (raw or "").strip()
    if "/" in name or not valid_name(name):
        raise Invalid("namespace", f"not an organization or user name: {name[:80]!r}")
    return name


async def namespace_kind(conn: AsyncConnection, namespace: str) -> str | None:
    """``org``, ``user`` or None (no such organization or user)."""
    if await conn.scalar(sa.select(organizations.c.id).where(organizations.c.name == namespace)):
        return "org"
    if await conn.scalar(sa.select(users.c.id).where(users.c.username == namespace)):
        return "user"
    return None


async def existing_namespace(conn: AsyncConnection, raw: str) -> tuple[str, str]:
    """(namespace, kind) of an existing organization or user, else Missing."""
    name = check_namespace(raw)
    kind = await namespace_kind(conn, name)
    if kind is None:
        raise Missing(f"no organization or user named {name}")
    return name, kind


def _namespace_manifests(namespace: str) -> Any:
    return manifests.join(repositories, repositories.c.id == manifests.c.repository_id)


async def usage(conn: AsyncConnection, namespace: str) -> int:
    """Bytes the namespace holds: its distinct referenced blobs and its distinct manifests."""
    referenced = (
        sa.select(manifest_references.c.digest)
        .select_from(
            manifest_references.join(
                manifests, manifests.c.id == manifest_references.c.manifest_id
            ).join(repositories, repositories.c.id == manifests.c.repository_id)
        )
        .where(repositories.c.namespace == namespace, manifest_references.c.kind == "blob")
    )
    blob_bytes = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0)).where(
            blobs.c.digest.in_(referenced)
        )
    )
    distinct = (
        sa.select(manifests.c.digest, manifests.c.size)
        .select_from(_namespace_manifests(namespace))
        .where(repositories.c.namespace == namespace)
        .distinct()
        .subquery()
    )
    manifest_bytes = await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(distinct.c.size), 0)))
    return int(blob_bytes or 0) + int(manifest_bytes or 0)


async def added_bytes(conn: AsyncConnection, write: ManifestWrite) -> int:
    """What the manifest written adds to its namespace: nothing when the repository held it
    before; else its blobs that no other manifest of the namespace references, and itself
    unless another repository of the namespace holds it. Cost: the references of its own
    digests (index lookups), not the namespace's."""
    if write.existed:
        return 0
    namespace = namespace_of(write.repository)
    own = await conn.scalar(
        sa.select(manifests.c.id).where(
            manifests.c.repository_id == write.repository_id, manifests.c.digest == write.digest
        )
    )
    elsewhere = (
        sa.select(manifest_references.c.manifest_id)
        .select_from(
            manifest_references.join(
                manifests, manifests.c.id == manifest_references.c.manifest_id
            ).join(repositories, repositories.c.id == manifests.c.repository_id)
        )
        .where(
            manifest_references.c.digest == blobs.c.digest,
            manifest_references.c.kind == "blob",
            repositories.c.namespace == namespace,
            manifests.c.id != own,
        )
    )
    wanted = sorted({str(d) for d in write.manifest.required_blobs()})
    new = 0
    if wanted:
        new = int(
            await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0)).where(
                    blobs.c.digest.in_(wanted), ~elsewhere.exists()
                )
            )
            or 0
        )
    held = await conn.scalar(
        sa.select(manifests.c.id)
        .select_from(_namespace_manifests(namespace))
        .where(
            repositories.c.namespace == namespace,
            manifests.c.digest == write.digest,
            manifests.c.id != own,
        )
        .limit(1)
    )
    return new + (0 if held is not None else write.size)


@dataclass(frozen=True, slots=True)
class Quota:
    namespace: str
    kind: str  # org | user
    limit_bytes: int | None
    usage_bytes: int
    updated_by: str | None
    updated_at: datetime | None


async def get(conn: AsyncConnection, raw: str) -> Quota:
    namespace, kind = await existing_namespace(conn, raw)
    row = (
        await conn.execute(
            sa.select(namespace_quotas).where(namespace_quotas.c.namespace == namespace)
        )
    ).first()
    return Quota(
        namespace,
        kind,
        int(row.limit_bytes) if row is not None else None,
        await usage(conn, namespace),
        row.updated_by if row is not None else None,
        _aware(row.updated_at) if row is not None else None,
    )


async def list_quotas(conn: AsyncConnection) -> list[Quota]:
    out: list[Quota] = []
    rows = await conn.execute(sa.select(namespace_quotas).order_by(namespace_quotas.c.namespace))
    for r in rows.all():
        kind = await namespace_kind(conn, r.namespace) or "gone"
        out.append(
            Quota(
                r.namespace,
                kind,
                int(r.limit_bytes),
                await usage(conn, r.namespace),
                r.updated_by,
                _aware(r.updated_at),
            )
        )
    return out


async def set_limit(
    conn: AsyncConnection, raw: str, limit: int | None, by: str
) -> tuple[Quota, int | None]:
    """Set (or, with None, remove) a namespace's quota. Returns the new state and the limit
    before."""
    namespace, kind = await existing_namespace(conn, raw)
    if limit is not None and not 0 <= limit <= MAX_BYTES:
        raise Invalid("limit", f"a quota is between 0 and {MAX_BYTES} bytes")
    q = namespace_quotas
    before = await conn.scalar(
        sa.select(q.c.limit_bytes).where(q.c.namespace == namespace).with_for_update()
    )
    ts = datetime.now(UTC)
    used = await usage(conn, namespace)
    values = {"limit_bytes": limit, "updated_by": by, "updated_at": ts}
    if limit is None:
        await conn.execute(sa.delete(q).where(q.c.namespace == namespace))
    elif before is None:
        # No bound yet: the first push computes the usage under the row's lock (a figure taken
        # here would miss pushes committing meanwhile, which took no lock: no row yet).
        await conn.execute(sa.insert(q).values(namespace=namespace, usage_bound=None, **values))
    else:
        await conn.execute(sa.update(q).where(q.c.namespace == namespace).values(**values))
    return (
        Quota(namespace, kind, limit, used, by, ts),
        int(before) if before is not None else None,
    )


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone (they are stored in UTC)."""
    return ts if ts is None or ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def describe(kind: str, namespace: str) -> str:
    return f"{'org' if kind == 'org' else 'user'} {namespace}"


class QuotaRule(Rule):
    """Refuses a manifest push that would take its namespace over its quota.

    The quota row keeps ``usage_bound``, an upper bound of the usage: each push adds what it
    adds (``added_bytes``, exact and cheap — the references of its own digests); deletions
    (by digest, a repository, a GC pass, retention) do not lower it, so it only ever
    overestimates. A push within ``bound + added`` is certainly within the quota and costs no
    more; otherwise the usage is computed exactly (the namespace's references) and stored as
    the new bound, and only that exact figure refuses. Nothing that deletes needs to know about
    quotas, and none can make a push be refused wrongly.
    """

    name = "quota"
    order = QUOTA

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        namespace = namespace_of(write.repository)
        if not namespace:
            return
        q = namespace_quotas
        row = (
            await conn.execute(
                sa.select(q.c.limit_bytes, q.c.usage_bound)
                .where(q.c.namespace == namespace)
                .with_for_update()  # the namespace's lock (PostgreSQL; SQLite is serialized)
            )
        ).first()
        if row is None:
            return
        limit = int(row.limit_bytes)
        added: int | None = None
        if row.usage_bound is not None:
            added = await added_bytes(conn, write)
            bound = int(row.usage_bound) + added
            if bound <= limit:
                if added:
                    await self._store(conn, namespace, bound)
                return
        used = await usage(conn, namespace)  # includes this push: its references are written
        if used > limit:
            if added is None:
                added = await added_bytes(conn, write)
            if added:
                kind = await namespace_kind(conn, namespace) or "org"
                raise PolicyDenied(
                    f"quota of {describe(kind, namespace)} is {human_bytes(limit)}; this push "
                    f"would use {human_bytes(used)}; delete images to make room, or ask a "
                    "system administrator for a larger quota",
                    {"namespace": namespace, "quota": limit, "usage": used},
                    policy="quota",
                )
            # over quota already (it was lowered), but this push adds nothing
        await self._store(conn, namespace, used)

    @staticmethod
    async def _store(conn: AsyncConnection, namespace: str, bound: int) -> None:
        await conn.execute(
            sa.update(namespace_quotas)
            .where(namespace_quotas.c.namespace == namespace)
            .values(usage_bound=bound)
        )


async def change(
    write_engine: Any,
    audit: Any,
    raw: str,
    limit: int | None,
    actor: str,
    actor_type: Literal["user", "system"],
) -> Quota:
    """Set or remove a quota in its own transaction and audit it (the API and the UI; the
    command line audits through its own path)."""
    from ..audit import AuditEvent

    async with write_engine.begin() as conn:
        state, before = await set_limit(conn, raw, limit, actor)
    await audit.record_now(
        AuditEvent(
            "quota.remove" if limit is None else "quota.set",
            actor=actor,
            actor_type=actor_type,
            details={
                "namespace": state.namespace,
                "kind": state.kind,
                "limit_bytes": limit,
                "previous_bytes": before,
            },
        )
    )
    return state
