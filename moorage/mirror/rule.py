"""The cache organization's content rule (order ``CACHE``, first in the chain): nothing but the
cache itself writes manifests into a cache organization — not /v2 pushes (refused earlier, at the
handler, with the same message), not the REST API, not a replication policy. It also accepts the
cache's own sparse indexes (a platform filter keeps an index byte for byte with only some of its
platform manifests)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from ..oci.names import namespace_of
from ..services.rules import CACHE, ManifestWrite, PolicyDenied, Rule
from .pull import MIRROR_ACTOR
from .service import MirrorService


def _is_cache_itself(write: ManifestWrite, namespace: str) -> bool:
    who = write.requester
    return who.kind == "system" and who.name == MIRROR_ACTOR + namespace


class CacheRule(Rule):
    name = "mirror-cache"
    order = CACHE

    def __init__(self, service: MirrorService) -> None:
        self.service = service

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        cache = await self.service.cache_of(write.repository, conn)
        if cache is None or _is_cache_itself(write, cache.namespace):
            return
        raise PolicyDenied(
            f"{cache.namespace} is a pull-through cache of {cache.url}: pushes are refused; "
            "pull from it, or push to an organization that is not a cache",
            policy="cache",
        )

    async def sparse_index(
        self, conn: AsyncConnection, write: ManifestWrite, missing: tuple[str, ...]
    ) -> bool:
        ns = namespace_of(write.repository)
        cache = self.service.known_cache(ns) if ns else None
        return cache is not None and cache.platforms is not None and _is_cache_itself(write, ns)
