"""The ``replication`` capability: remote registries, push and pull policies run as jobs (one
per tag), event and cron triggers, geo-replication between Moorage sites (docs/replication.md).

setup: ``rt.services["replication"]`` (ReplicationService; its ``finished`` is the "replication
finished" hook), ``rt.services["replication.admin"]`` with access control on; the event
subscribers; the sparse-index rule; the jobs ``replication.plan``, ``replication.tag`` (slots of
its own), ``replication.cron``, ``replication.catchup`` and ``replication.identities``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..capability import Capability
from . import tables as tables  # noqa: F401 - the tables join the shared metadata

# service.py's PLAN_JOB and TAG_JOB, triggers.py's CRON_JOB and CATCHUP_JOB, identities.py's
# IDENTITY_JOB, spelled here so that naming them imports nothing (services are imported by
# setup); a test checks them against what setup registers.
JOB_KINDS = (
    "replication.plan",
    "replication.tag",
    "replication.cron",
    "replication.catchup",
    "replication.identities",
)

if TYPE_CHECKING:
    from ..api.routing import Op
    from ..runtime import Runtime
    from ..ui.app import WebUI
    from ..ui.pages import PageGroup


async def _setup(rt: Runtime) -> None:
    from ..services.events import ManifestDeleted, ManifestPushed, TagDeleted
    from .identities import IDENTITY_JOB, IdentitySync
    from .jobs import Executor
    from .service import ReplicationService
    from .triggers import CATCHUP_JOB, CRON_JOB, EventTriggers, Schedules, SparseIndexRule

    service = ReplicationService(rt.ctx, rt.jobs)
    executor = Executor(service, rt.jobs, rt.audit)
    executor.register()
    rt.services["replication"] = service
    rt.services["replication.executor"] = executor
    events = EventTriggers(service, rt.jobs)
    rt.ctx.events.on(ManifestPushed, events.manifest_pushed)
    rt.ctx.events.on(TagDeleted, events.tag_deleted)
    rt.ctx.events.on(ManifestDeleted, events.manifest_deleted)
    rt.ctx.rules.add(SparseIndexRule())
    schedules = Schedules(service, executor)
    rt.jobs.register(CRON_JOB, schedules.cron)
    rt.jobs.schedule(CRON_JOB, timedelta(minutes=1))
    rt.jobs.register(CATCHUP_JOB, schedules.catchup)
    rt.jobs.schedule(CATCHUP_JOB, timedelta(minutes=1))
    identities = IdentitySync(service, rt.audit)
    rt.services["replication.identities"] = identities
    rt.jobs.register(IDENTITY_JOB, identities.job)
    rt.jobs.schedule(IDENTITY_JOB, timedelta(seconds=15))
    if rt.access is not None:
        from .admin import ReplicationAdmin

        rt.services["replication.admin"] = ReplicationAdmin(
            rt.ctx, rt.access, rt.audit, rt.sessions
        ).bind(service, identities)


async def _shutdown(rt: Runtime) -> None:
    executor = rt.services.get("replication.executor")
    if executor is not None:
        await executor.pool.close()


def _api_ops(rt: Runtime) -> list[Op]:
    from .api import api_ops

    admin = rt.services.get("replication.admin")
    return api_ops(admin) if admin is not None else []


def _ui_pages(rt: Runtime, ui: WebUI) -> PageGroup:
    from .ui import ReplicationPages

    return ReplicationPages(ui, rt.services["replication.admin"])


def _cli(tree: Any) -> None:
    from .cli import register

    register(tree)


REPLICATION = Capability(
    "replication",
    setup=_setup,
    job_kinds=JOB_KINDS,
    api_ops=_api_ops,
    ui_pages=_ui_pages,
    cli=_cli,
    shutdown=_shutdown,
)
