"""/api/v1/mirror/caches: the pull-through cache organizations, what ``moorage admin create-org
--mirror-of`` and ``moorage mirror caches`` do on the command line (system administrators)."""

from __future__ import annotations

from typing import Any

from ..api.routing import Auth, Call, Op
from ..services.models import Page
from .admin import MirrorAdmin
from .models_api import CacheCreate, CacheInfo, CacheUpdate


def api_ops(admin: MirrorAdmin) -> list[Op]:
    R: Auth = "read"
    RW: Auth = "write"
    w = (400, 401, 403, 404, 409, 422)
    one = "/mirror/caches/{cache}"

    async def list_mirror_caches(c: Call) -> Any:
        return Page[CacheInfo](items=await admin.caches(c.caller), next_cursor=None)

    async def create_mirror_cache(c: Call) -> Any:
        return await admin.create(c.caller, c.body)

    async def get_mirror_cache(c: Call) -> Any:
        return await admin.cache(c.caller, c.path["cache"])

    async def update_mirror_cache(c: Call) -> Any:
        return await admin.update(c.caller, c.path["cache"], c.body)

    async def delete_mirror_cache(c: Call) -> Any:
        await admin.delete(c.caller, c.path["cache"])

    t = "mirror"
    return [
        Op("GET", "/mirror/caches", list_mirror_caches, "Pull-through cache organizations (administrators)", t, R, response=Page[CacheInfo], errors=(401, 403)),
        Op("POST", "/mirror/caches", create_mirror_cache, "Create an organization that is a pull-through cache of an upstream registry; the upstream password is stored encrypted and never returned", t, RW, body=CacheCreate, response=CacheInfo, status=201, errors=w),
        Op("GET", one, get_mirror_cache, "A cache organization with its usage: bytes, images, repositories, last pull", t, R, response=CacheInfo),
        Op("PATCH", one, update_mirror_cache, "Change a cache's upstream, credentials, TLS, platform filter, staleness or eviction settings", t, RW, body=CacheUpdate, response=CacheInfo, errors=w),
        Op("DELETE", one, delete_mirror_cache, "The organization stops being a cache; its content stays", t, RW, status=204, errors=w),
    ]  # fmt: skip
