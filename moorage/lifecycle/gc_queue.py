"""GC review queues, filled in the transactions of the changes that can make garbage (a tag
moved or deleted, a manifest deleted or pushed untagged, a repository deleted): the
subscribers (subscribers.py) and the collector's own phase 1 (gc.py) call these. Plain INSERTs
into append-only tables (tables.py), so queueing never waits on a row a collector has claimed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.schema import blobs, manifest_references, manifests, repository_blobs
from .tables import gc_blob_review, gc_manifest_review


def utcnow() -> datetime:
    return datetime.now(UTC)


async def queue_blobs(
    conn: AsyncConnection, digests: Sequence[str], review_after: datetime, reason: str
) -> None:
    """Queue blobs for review: a plain INSERT (the queues are append-only), so queueing never
    waits on a row a collector has claimed, and is never lost to a decision taken before it."""
    if not digests:
        return
    ts = utcnow()
    rows = [
        {"digest": d, "review_after": review_after, "reason": reason, "created_at": ts}
        for d in sorted(set(digests))
    ]
    await conn.execute(sa.insert(gc_blob_review), rows)


async def queue_manifests(
    conn: AsyncConnection,
    repository_id: int,
    digests: Sequence[str],
    review_after: datetime,
    reason: str,
) -> None:
    if not digests:
        return
    ts = utcnow()
    rows = [
        {
            "repository_id": repository_id,
            "digest": d,
            "review_after": review_after,
            "reason": reason,
            "created_at": ts,
        }
        for d in sorted(set(digests))
    ]
    await conn.execute(sa.insert(gc_manifest_review), rows)


async def queue_repository_blobs(
    conn: AsyncConnection, repository_id: int, review_after: datetime
) -> None:
    """Every blob linked into a repository about to be deleted."""
    sel = (
        sa.select(
            blobs.c.digest,
            sa.literal(review_after, gc_blob_review.c.review_after.type),
            sa.literal("repository_deleted"),
            sa.literal(utcnow(), gc_blob_review.c.created_at.type),
        )
        .select_from(repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id))
        .where(repository_blobs.c.repository_id == repository_id)
    )
    stmt = sa.insert(gc_blob_review).from_select(
        ["digest", "review_after", "reason", "created_at"], sel
    )
    await conn.execute(stmt)


async def manifest_dependents(
    conn: AsyncConnection, repository_id: int, manifest_id: int, digest: str
) -> tuple[list[str], list[str]]:
    """(blobs, manifests) whose review a manifest's removal calls for: its blobs; its children
    and its referrers in the same repository."""
    refs = (
        await conn.execute(
            sa.select(manifest_references.c.digest, manifest_references.c.kind).where(
                manifest_references.c.manifest_id == manifest_id
            )
        )
    ).all()
    blob_refs = [r.digest for r in refs if r.kind == "blob"]
    child_refs = [r.digest for r in refs if r.kind == "manifest"]
    referrers = (
        await conn.execute(
            sa.select(manifests.c.digest).where(
                manifests.c.repository_id == repository_id, manifests.c.subject_digest == digest
            )
        )
    ).scalars()
    return blob_refs, child_refs + list(referrers)
