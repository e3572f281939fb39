"""Cache eviction, a job on the shared queue (``mirror.evict``, hourly, and on demand with
``moorage jobs run mirror.evict [--payload '{"cache": "NAME"}']``).

What is evicted is an *image as pulled*: a root manifest of a cache repository (tagged, or not
listed by an index of the repository) with the platform manifests only it lists, then the blobs
no remaining manifest of the repository needs are unlinked from it. Two policies per cache:

* ``evict_after_days``: roots not pulled for that many days (a root never recorded as pulled
  counts from when it was stored);
* ``max_bytes``: while the cache's repositories hold more than that (linked blobs and manifests),
  the least recently pulled root goes first.

Manifests are deleted through the manifest service (the content rules and the ManifestDeleted
event apply, as for any delete); the unlinked blobs' bytes are left to garbage collection, which
only reclaims blobs no repository links.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..db.queries import _aware, now
from ..db.schema import blobs, manifest_references, manifests, repositories, repository_blobs
from ..services.errors import NotFound
from ..services.manifests import ManifestService
from ..services.rules import Requester
from .pull import MIRROR_ACTOR
from .service import Cache, MirrorService, days_ago
from .tables import mirror_pulls as mp
from .tables import mirror_tags as mtg

log = logging.getLogger("moorage.mirror")

EVICT_JOB = "mirror.evict"


@dataclass(frozen=True, slots=True)
class Root:
    repository: str
    repository_id: int
    digest: str
    last_used: datetime


class Evictor:
    def __init__(self, service: MirrorService) -> None:
        self.service = service
        self.ctx = service.ctx
        self.manifests = ManifestService(self.ctx)

    async def job(self, payload: dict[str, Any]) -> dict[str, Any]:
        only = payload.get("cache")
        evicted: dict[str, int] = {}
        for cache in await self.service.caches():
            if only and cache.namespace != only:
                continue
            if cache.evict_after_days is None and cache.max_bytes is None:
                continue
            evicted[cache.namespace] = await self.evict(cache)
        return {"evicted": evicted}

    async def _roots(self, cache: Cache) -> list[Root]:
        m, r = manifests, repositories
        parent = manifests.alias("parent")
        listed = sa.exists().where(
            manifest_references.c.manifest_id == parent.c.id,
            manifest_references.c.kind == "manifest",
            manifest_references.c.digest == m.c.digest,
            parent.c.repository_id == m.c.repository_id,
        )
        query = (
            sa.select(r.c.name, r.c.id, m.c.digest, m.c.created_at, mp.c.pulled_at)
            .select_from(
                m.join(r, r.c.id == m.c.repository_id).outerjoin(
                    mp, sa.and_(mp.c.repository == r.c.name, mp.c.digest == m.c.digest)
                )
            )
            .where(r.c.namespace == cache.namespace, ~listed)
        )
        async with self.ctx.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = [
            Root(row.name, int(row.id), row.digest, _aware(row.pulled_at or row.created_at) or now())
            for row in rows
        ]
        out.sort(key=lambda x: x.last_used)
        return out

    async def _size(self, cache: Cache) -> int:
        r = repositories
        blob_bytes = (
            sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
            .select_from(
                repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id).join(
                    r, r.c.id == repository_blobs.c.repository_id
                )
            )
            .where(r.c.namespace == cache.namespace)
        )
        manifest_bytes = (
            sa.select(sa.func.coalesce(sa.func.sum(manifests.c.size), 0))
            .select_from(manifests.join(r, r.c.id == manifests.c.repository_id))
            .where(r.c.namespace == cache.namespace)
        )
        async with self.ctx.engine.connect() as conn:
            total = int((await conn.execute(blob_bytes)).scalar() or 0)
            total += int((await conn.execute(manifest_bytes)).scalar() or 0)
        return total

    async def evict(self, cache: Cache) -> int:
        count = 0
        roots = await self._roots(cache)
        if cache.evict_after_days is not None:
            cutoff = days_ago(cache.evict_after_days)
            for root in [x for x in roots if x.last_used < cutoff]:
                await self._drop(cache, root)
                count += 1
            roots = await self._roots(cache)
        if cache.max_bytes is not None:
            while roots and await self._size(cache) > cache.max_bytes:
                await self._drop(cache, roots.pop(0))
                count += 1
        if count:
            log.info("mirror %s: evicted %d images", cache.namespace, count)
        return count

    async def _drop(self, cache: Cache, root: Root) -> None:
        """Delete *root*, the platform manifests only it listed, then unlink the blobs no
        remaining manifest of the repository references."""
        who = Requester.system(MIRROR_ACTOR + cache.namespace)
        async with self.ctx.engine.connect() as conn:
            other = manifests.alias("other")
            other_refs = manifest_references.alias("other_refs")
            listed_elsewhere = sa.exists().where(
                other_refs.c.manifest_id == other.c.id,
                other.c.repository_id == root.repository_id,
                other.c.digest != root.digest,
                other_refs.c.kind == "manifest",
                other_refs.c.digest == manifest_references.c.digest,
            )
            children = [
                row.digest
                for row in (
                    await conn.execute(
                        sa.select(manifest_references.c.digest)
                        .join(manifests, manifests.c.id == manifest_references.c.manifest_id)
                        .where(
                            manifests.c.repository_id == root.repository_id,
                            manifests.c.digest == root.digest,
                            manifest_references.c.kind == "manifest",
                            ~listed_elsewhere,
                        )
                    )
                ).all()
            ]
        for digest in [root.digest, *children]:
            try:
                await self.manifests.delete(root.repository, digest, who)
            except NotFound:
                pass
            self.service.forget(root.repository, digest)
        async with self.ctx.write_engine.begin() as conn:
            await conn.execute(
                sa.delete(mp).where(
                    mp.c.repository == root.repository,
                    mp.c.digest.in_([root.digest, *children]),
                )
            )
            await conn.execute(
                sa.delete(mtg).where(
                    mtg.c.repository == root.repository, mtg.c.digest == root.digest
                )
            )
            needed = sa.exists().where(
                manifest_references.c.manifest_id == manifests.c.id,
                manifests.c.repository_id == root.repository_id,
                manifest_references.c.kind == "blob",
                manifest_references.c.digest == blobs.c.digest,
            )
            unneeded = (
                sa.select(repository_blobs.c.blob_id)
                .join(blobs, blobs.c.id == repository_blobs.c.blob_id)
                .where(repository_blobs.c.repository_id == root.repository_id, ~needed)
            )
            await conn.execute(
                sa.delete(repository_blobs).where(
                    repository_blobs.c.repository_id == root.repository_id,
                    repository_blobs.c.blob_id.in_(unneeded),
                )
            )
