"""What the changes that can make garbage do for GC, inside their own transactions: queue the
reviews (domain events; a finished upload queues its blob in the raw write path,
db/writepath.py ``commit_blob``), and — on PostgreSQL — take the row locks that make a manifest push and
a collector's delete take turns (a content rule that refuses nothing on its own)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import queries as q
from ..db.schema import blobs, manifests, repository_blobs
from ..services.errors import ManifestBlobUnknown, Unavailable
from ..services.events import ManifestPushed, RepositoryDeleted, TagDeleted
from ..services.rules import ManifestWrite, ReferenceDelete, Rule, RuleChain
from .config import GCConfig
from .gc_queue import (
    manifest_dependents,
    queue_blobs,
    queue_manifests,
    queue_repository_blobs,
    utcnow,
)


class Queues:
    """Domain-event subscribers that queue GC reviews."""

    def __init__(self, config: GCConfig) -> None:
        self.config = config

    def _after(self) -> timedelta:
        return timedelta(seconds=self.config.grace_seconds)

    async def _repo_id(self, conn: AsyncConnection, repository: str) -> int | None:
        return await q.repository_id(conn, repository)

    async def manifest_pushed(self, conn: AsyncConnection, e: ManifestPushed) -> None:
        if e.tags and not e.replaced:
            return  # new tags make no garbage (and the lookup below is a statement per push)
        repo_id = await self._repo_id(conn, e.repository)
        if repo_id is None:
            return
        after = utcnow() + self._after()
        if e.replaced:
            await queue_manifests(conn, repo_id, [d for _, d in e.replaced], after, "tag_moved")
        if not e.tags:
            await queue_manifests(conn, repo_id, [e.digest], after, "untagged_push")

    async def tag_deleted(self, conn: AsyncConnection, e: TagDeleted) -> None:
        repo_id = await self._repo_id(conn, e.repository)
        if repo_id is not None:
            await queue_manifests(
                conn, repo_id, [e.digest], utcnow() + self._after(), "tag_deleted"
            )

    async def repository_deleted(self, conn: AsyncConnection, e: RepositoryDeleted) -> None:
        repo_id = await self._repo_id(conn, e.repository)
        if repo_id is not None:
            await queue_repository_blobs(conn, repo_id, utcnow() + self._after())


class ReferenceLocks(Rule):
    """Not a policy: the GC side of a manifest push and delete.

    ``manifest_write`` (inside the push's transaction, after its references are written):
    share-locks the blobs and child manifests the manifest names, and the manifest's own row,
    then checks they are all still there and linked. A collector locks the same rows for update
    before it re-checks and deletes, so either the push waits and commits first (the collector
    then sees the new references and keeps everything), or the collector commits first and the
    push is refused here with MANIFEST_BLOB_UNKNOWN (the client uploads the blob again) — never
    a manifest that names a deleted blob. On SQLite BEGIN IMMEDIATE already serializes both.

    ``reference_delete`` (a manifest deleted by digest): queues its blobs, children and
    referrers for review, while its references are still readable.
    """

    name = "gc"
    order = 0

    def __init__(self, config: GCConfig, chain: RuleChain) -> None:
        self.config = config
        self.chain = chain

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        if conn.dialect.name != "postgresql":
            return
        parsed = write.manifest
        wanted = sorted({str(d) for d in parsed.required_blobs()})
        if wanted:
            await conn.execute(
                sa.select(blobs.c.id)
                .where(blobs.c.digest.in_(wanted))
                .order_by(blobs.c.digest)
                .with_for_update(read=True)
            )
            linked = set(
                (
                    await conn.execute(
                        sa.select(blobs.c.digest)
                        .select_from(
                            repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id)
                        )
                        .where(
                            repository_blobs.c.repository_id == write.repository_id,
                            blobs.c.digest.in_(wanted),
                        )
                    )
                ).scalars()
            )
            missing = [d for d in wanted if d not in linked]
            if missing:
                raise ManifestBlobUnknown(
                    f"blob {missing[0]} is no longer in repository {write.repository}: garbage "
                    "collection removed it while this manifest was pushed; push the blob again",
                    detail={"digest": missing[0]},
                )
        children = sorted({str(d) for d in parsed.required_manifests()})
        own = sorted({*children, write.digest})
        present = set(
            (
                await conn.execute(
                    sa.select(manifests.c.digest)
                    .where(
                        manifests.c.repository_id == write.repository_id,
                        manifests.c.digest.in_(own),
                    )
                    .order_by(manifests.c.digest)
                    .with_for_update(read=True)
                )
            ).scalars()
        )
        if write.digest not in present:
            raise Unavailable(
                f"manifest {write.digest} was garbage-collected while it was pushed; push it again"
            )
        gone = tuple(d for d in children if d not in present)
        if gone and not await self.chain.sparse_index(conn, write, gone):
            raise ManifestBlobUnknown(
                f"manifest {gone[0]} is no longer in repository {write.repository}: garbage "
                "collection removed it while this index was pushed; push it again",
                detail={"digest": gone[0]},
            )

    async def reference_delete(self, conn: AsyncConnection, delete: ReferenceDelete) -> None:
        if delete.tag is not None:
            return  # TagDeleted queues the manifest
        row = (
            await conn.execute(
                sa.select(manifests.c.id).where(
                    manifests.c.repository_id == delete.repository_id,
                    manifests.c.digest == delete.digest,
                )
            )
        ).first()
        if row is None:
            return
        blob_refs, dependents = await manifest_dependents(
            conn, delete.repository_id, row.id, delete.digest
        )
        after = utcnow() + timedelta(seconds=self.config.grace_seconds)
        await queue_blobs(conn, blob_refs, after, "manifest_deleted")
        await queue_manifests(conn, delete.repository_id, dependents, after, "parent_deleted")
