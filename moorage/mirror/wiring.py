"""The ``mirror`` capability: organizations that are pull-through caches of an upstream registry
(Docker Hub, ghcr.io, quay.io, any registry V2) — docs/mirror.md.

A package of its own rather than a part of moorage/replication: it shares replication's registry
client (client.py, transport.py, auth.py) and the way credentials are sealed, but nothing of
policies, executions or triggers; its entry point is the read path (``ctx.pull_through``), not a
job that copies.

setup: ``rt.services["mirror"]`` (MirrorService), ``rt.services["mirror.pull"]`` (the
PullThrough the /v2 handlers ask), the content rule refusing pushes into a cache organization
(and accepting its sparse indexes), the jobs ``mirror.fill`` (store what a client pulled, with
its blobs and platform manifests) and ``mirror.evict`` (hourly).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..capability import Capability
from . import tables as tables  # noqa: F401 - the tables join the shared metadata

# pull.py's FILL_JOB and evict.py's EVICT_JOB, spelled here so that naming them imports nothing
# (services are imported by setup); a test checks them against what setup registers.
JOB_KINDS = ("mirror.fill", "mirror.evict")

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from ..api.routing import Op
    from ..runtime import Runtime
    from ..ui.app import WebUI
    from ..ui.pages import PageGroup


async def _setup(rt: Runtime) -> None:
    from .evict import EVICT_JOB, Evictor
    from .pull import FILL_JOB, MirrorPull
    from .rule import CacheRule
    from .service import MirrorService

    service = MirrorService(rt.ctx)
    pull = MirrorPull(service, rt.jobs)
    rt.services["mirror"] = service
    rt.services["mirror.pull"] = pull
    rt.ctx.pull_through = pull
    rt.ctx.rules.add(CacheRule(service))
    rt.jobs.register(FILL_JOB, pull.fill, concurrency=4)
    evictor = Evictor(service)
    rt.jobs.register(EVICT_JOB, evictor.job)
    rt.jobs.schedule(EVICT_JOB, timedelta(hours=1))
    # Untagged manifests of a cache (pulled by digest) go by the cache's eviction, not by GC's
    # untagged delay (issue 14: cache content has its own eviction that GC respects).
    rt.services.setdefault("gc.keep_untagged", []).append(_in_a_cache)
    if rt.access is not None:
        from .admin import MirrorAdmin

        rt.services["mirror.admin"] = MirrorAdmin(rt.ctx, rt.access, rt.audit, rt.sessions).bind(
            service
        )


async def _in_a_cache(conn: AsyncConnection, repository: str) -> bool:
    namespace = repository.split("/", 1)[0]
    found = await conn.scalar(
        sa.select(tables.mirror_caches.c.id)
        .where(tables.mirror_caches.c.namespace == namespace)
        .limit(1)
    )
    return found is not None


async def _shutdown(rt: Runtime) -> None:
    service = rt.services.get("mirror")
    if service is not None:
        await service.close()


def _api_ops(rt: Runtime) -> list[Op]:
    from .api import api_ops

    admin = rt.services.get("mirror.admin")
    return api_ops(admin) if admin is not None else []


def _ui_pages(rt: Runtime, ui: WebUI) -> PageGroup:
    from .ui import MirrorPages

    return MirrorPages(ui, rt.services["mirror.admin"])


def _cli(tree: Any) -> None:
    from .cli import register

    register(tree)


MIRROR = Capability(
    "mirror",
    setup=_setup,
    job_kinds=JOB_KINDS,
    api_ops=_api_ops,
    ui_pages=_ui_pages,
    cli=_cli,
    shutdown=_shutdown,
)
