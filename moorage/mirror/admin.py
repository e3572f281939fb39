"""Cache organizations through the REST API and the UI: system administrators only (as the
``moorage admin create-org --mirror-of`` command is), each change in the audit log; the upstream
password never leaves the service in an answer or an audit record."""

from __future__ import annotations

from typing import Any

from ..auth.admin import create_org_in
from ..db.engine import writer
from ..services.errors import Invalid
from ..services.management import AdminService, Caller
from .models_api import CacheCreate, CacheInfo, CacheUpdate, CacheUsage
from .service import Cache, MirrorService

_NULLABLE = frozenset({"username", "password", "platforms", "evict_after_days", "max_bytes"})


def cache_info(cache: Cache, usage: dict[str, Any] | None = None) -> CacheInfo:
    return CacheInfo(
        name=cache.namespace,
        url=cache.url,
        username=cache.username,
        has_password=cache.secret is not None,
        insecure=cache.insecure,
        platforms=list(cache.platforms) if cache.platforms else None,
        staleness_seconds=cache.staleness_seconds,
        evict_after_days=cache.evict_after_days,
        max_bytes=cache.max_bytes,
        updated_at=cache.updated_at,
        usage=CacheUsage(**usage) if usage is not None else None,
    )


class MirrorAdmin(AdminService):
    service: MirrorService

    def bind(self, service: MirrorService) -> MirrorAdmin:
        self.service = service
        return self

    async def _get(self, name: str) -> Cache:
        from ..services.errors import NotFound

        for cache in await self.service.caches():
            if cache.namespace == name:
                return cache
        raise NotFound(f"organization {name[:255]} is not a cache")

    async def caches(self, c: Caller, usage: bool = False) -> list[CacheInfo]:
        self._sysadmin_read(c)
        out = []
        for cache in await self.service.caches():
            used = await self.service.usage(cache.namespace) if usage else None
            out.append(cache_info(cache, used))
        return out

    async def cache(self, c: Caller, name: str) -> CacheInfo:
        self._sysadmin_read(c)
        cache = await self._get(name)
        return cache_info(cache, await self.service.usage(cache.namespace))

    async def create(self, c: Caller, spec: CacheCreate) -> CacheInfo:
        self._sysadmin(c)
        if spec.password and not spec.username:
            raise Invalid("password", "a password needs an upstream username")
        async with writer(self.ctx.write_engine).begin() as conn:
            await create_org_in(conn, spec.name)
            cache = await self.service.create_cache(
                conn,
                spec.name,
                spec.url,
                username=spec.username,
                password=spec.password,
                insecure=spec.insecure,
                platforms=spec.platforms,
                staleness_seconds=spec.staleness_seconds,
                evict_after_days=spec.evict_after_days,
                max_bytes=spec.max_bytes,
            )
        self.service.invalidate()
        await self._audit(
            c,
            "organization.create",
            details={
                "organization": cache.namespace,
                "mirror_of": cache.url,
                "upstream_username": cache.username,
                "platforms": list(cache.platforms or ()),
            },
        )
        return cache_info(cache)

    async def update(self, c: Caller, name: str, body: CacheUpdate) -> CacheInfo:
        self._sysadmin(c)
        await self._get(name)
        given = body.model_fields_set
        changes = {k: getattr(body, k) for k in given if getattr(body, k) is not None}
        clear = frozenset(k for k in given if getattr(body, k) is None)
        if clear - _NULLABLE:
            field = sorted(clear - _NULLABLE)[0]
            raise Invalid(field, f"{field} cannot be null")
        cache = await self.service.update_cache(name, changes, clear)
        await self._audit(
            c,
            "mirror.cache.update",
            details={
                "organization": name,
                "changed": sorted(given),
                **{k: v for k, v in changes.items() if k != "password"},
            },
        )
        return cache_info(cache)

    async def delete(self, c: Caller, name: str) -> None:
        self._sysadmin(c)
        await self.service.delete_cache(name)
        await self._audit(c, "mirror.cache.delete", details={"organization": name})
