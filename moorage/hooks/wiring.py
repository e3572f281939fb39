"""The webhooks capability: subscriptions, the outbox filled in the changes' own transactions,
delivery jobs, the REST API, the UI pages and ``moorage webhooks``.

Like every wiring module, this one imports its package's services only when they are set up:
every ``moorage`` command imports all wiring modules, most of them to use none of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..capability import Capability
from . import tables as _tables  # noqa: F401 - the capability's tables join the metadata

if TYPE_CHECKING:
    from .delivery import Deliverer
    from .service import WebhookService

NAME = "hooks"
# Its job kinds (delivery.py), spelled here so that naming them imports nothing; a test checks
# them against what setup registers.
JOB_KINDS = ("hooks.deliver", "hooks.prune")


@dataclass
class Hooks:
    """What the capability keeps in ``rt.services["hooks"]``."""

    deliverer: Deliverer
    service: WebhookService | None  # None without access control (--no-auth)


async def _setup(rt: Any) -> None:
    from ..services.events import (
        ManifestDeleted,
        ManifestPushed,
        RepositoryDeleted,
        ScanCompleted,
        TagDeleted,
    )
    from . import outbox
    from . import queries as q
    from .delivery import DELIVER, PRUNE, Deliverer
    from .service import WebhookService

    config = rt.config
    outbox.configure_from(config)
    deliverer = Deliverer(
        rt.ctx.write_engine, config.webhooks, config.auth.token.key_encryption_secret
    )
    service = (
        WebhookService(rt.ctx, rt.access, rt.audit, rt.sessions) if rt.access is not None else None
    )
    rt.services[NAME] = Hooks(deliverer, service)
    rt.ctx.events.on(ManifestPushed, outbox.on_push)
    rt.ctx.events.on(TagDeleted, outbox.on_tag_deleted)
    rt.ctx.events.on(ManifestDeleted, outbox.on_manifest_deleted)
    rt.ctx.events.on(RepositoryDeleted, outbox.on_repository_deleted)
    rt.ctx.events.on(ScanCompleted, outbox.on_scan_completed)
    rt.audit.add_sink(outbox.pull_sink)
    rt.audit.add_sink(outbox.policy_sink)  # pulls refused by vulnerability or trust policies
    # "replication finished": replication sets up before hooks (capabilities.py order)
    replication = rt.services.get("replication")
    finished = getattr(replication, "finished", None)
    if finished is not None:
        finished.on(outbox.on_replication_finished)

    async def prune(_payload: dict[str, Any]) -> dict[str, Any]:
        before = datetime.now(UTC) - timedelta(days=config.webhooks.keep_days)
        total = 0
        while True:
            async with rt.ctx.write_engine.begin() as conn:
                n = await q.prune(conn, before)
            total += n
            if n == 0:
                return {"deleted": total}

    rt.jobs.register(DELIVER, deliverer.run)
    rt.jobs.register(PRUNE, prune)
    rt.jobs.schedule(PRUNE, timedelta(hours=6))


async def _shutdown(rt: Any) -> None:
    hooks = rt.services.get(NAME)
    if hooks is not None:
        await hooks.deliverer.close()


def _api_ops(rt: Any) -> list[Any]:
    from .api import ops

    hooks = rt.services.get(NAME)
    return ops(hooks.service) if hooks is not None and hooks.service is not None else []


def _ui_pages(rt: Any, ui: Any) -> Any:
    from .ui import WebhookPages

    return WebhookPages(ui, rt.services[NAME].service)


def _cli(tree: Any) -> None:
    from .cli import register

    register(tree)


CAPABILITY = Capability(
    NAME,
    setup=_setup,
    job_kinds=JOB_KINDS,
    api_ops=_api_ops,
    ui_pages=_ui_pages,
    cli=_cli,
    shutdown=_shutdown,
)
