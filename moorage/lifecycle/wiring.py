"""The lifecycle capability: online garbage collection (review queues filled by the changes'
own transactions, a pass on the shared job queue), ``moorage gc``, its API and UI; tag
immutability; storage quotas per namespace (quota.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..capability import Capability
from . import gc_indexes as _gc_indexes  # noqa: F401 - the indexes join the metadata
from . import retention_tables as _retention_tables  # noqa: F401 - tables join the metadata
from . import tables as _tables  # noqa: F401 - the capability's tables join the metadata

if TYPE_CHECKING:
    from .gc import Collector, PassReport

NAME = "lifecycle"
# gc.py's GC_PASS and retention.py's RUN_JOB, spelled here so that naming them imports nothing
# (services are imported by setup); a test checks them against what setup registers.
JOB_KINDS = ("lifecycle.gc", "retention.run")


@dataclass
class Lifecycle:
    """What the capability keeps in ``rt.services["lifecycle"]``."""

    collector: Collector
    audit: Any

    async def gc(
        self,
        *,
        dry_run: bool = False,
        grace: float | None = None,
        trigger: str = "job",
        actor: str = "system",
    ) -> PassReport:
        """One pass, audited (a scheduled pass only when it removed something)."""
        from ..audit import AuditEvent

        report = await self.collector.run_pass(
            dry_run=dry_run, grace=grace, trigger=trigger, actor=actor
        )
        if trigger != "job" or report.manifests or report.blobs or report.links:
            await self.audit.record_now(
                AuditEvent(
                    "gc.dry_run" if dry_run else "gc.pass",
                    actor=actor,
                    actor_type="system" if trigger != "api" else "user",
                    details={**report.summary(), "trigger": trigger},
                )
            )
        return report


async def _setup(rt: Any) -> None:
    from ..services.events import ManifestPushed, RepositoryDeleted, TagDeleted
    from . import retention
    from .gc import GC_PASS, Collector
    from .immutable import ImmutabilityRule
    from .pins import PullPins
    from .quota import QuotaRule
    from .subscribers import Queues, ReferenceLocks

    cfg = rt.config.gc
    keepers = rt.services.setdefault("gc.keep_untagged", [])
    collector = Collector(rt.ctx.write_engine, rt.ctx.storage, cfg, keepers)
    service = Lifecycle(collector, rt.audit)
    rt.services[NAME] = service
    queues = Queues(cfg)
    rt.ctx.events.on(ManifestPushed, queues.manifest_pushed)
    rt.ctx.events.on(TagDeleted, queues.tag_deleted)
    rt.ctx.events.on(RepositoryDeleted, queues.repository_deleted)
    rt.ctx.rules.add(ReferenceLocks(cfg, rt.ctx.rules))
    rt.ctx.rules.add(ImmutabilityRule(rt.audit))
    rt.ctx.rules.add(QuotaRule())
    rt.audit.add_sink(PullPins(cfg.pin_pulled_within_seconds))  # pulls by digest pin (pins.py)

    async def gc_pass(payload: dict[str, Any]) -> dict[str, Any]:
        grace = payload.get("grace")
        report = await service.gc(
            dry_run=bool(payload.get("dry_run", False)),
            grace=float(grace) if isinstance(grace, (int, float)) else None,
            trigger=str(payload.get("trigger", "job")),
            actor=str(payload.get("actor", "system")),
        )
        return report.summary()

    rt.jobs.register(GC_PASS, gc_pass)
    if cfg.enabled:
        rt.jobs.schedule(GC_PASS, timedelta(seconds=cfg.interval_seconds))

    retention.setup(rt)  # policies, the pull clock, the retention.run job


def _api_ops(rt: Any) -> list[Any]:
    from .api import ops
    from .quota_api import ops as quota_ops
    from .retention_api import ops as retention_ops

    return ops(rt, rt.services[NAME]) + retention_ops(rt) + quota_ops(rt)


def _ui_pages(rt: Any, ui: Any) -> Any:
    from .quota_ui import QuotaPages
    from .ui import LifecyclePages

    return [LifecyclePages(ui, rt), QuotaPages(ui, rt)]


def _cli(tree: Any) -> None:
    from .cli import register
    from .quota_cli import register as register_quota
    from .retention_cli import register as register_retention

    register(tree)
    register_retention(tree)
    register_quota(tree)


CAPABILITY = Capability(
    NAME,
    setup=_setup,
    job_kinds=JOB_KINDS,
    api_ops=_api_ops,
    ui_pages=_ui_pages,
    cli=_cli,
)
