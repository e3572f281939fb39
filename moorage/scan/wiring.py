"""The ``scan`` capability: image inventory (what is inside each image), scan on push and on
demand as background jobs, results and SBOMs in the API, ``moorage scan``.

setup: the ScanService (rt.services["scan"]); the ManifestPushed subscriber that queues a scan
in the push's transaction; the ``scan.manifest`` job. Vulnerability matching is another
capability's: it registers ``rt.services["scan.matcher"]``, which the service looks up per
scan (so the order of setup does not matter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..capability import Capability
from . import tables as _tables  # noqa: F401 - the capability's tables join the metadata

if TYPE_CHECKING:
    from ..api.routing import Op
    from ..runtime import Runtime

NAME = "scan"
# service.py's SCAN_JOB, spelled here so that naming it imports nothing (the service is imported
# by setup); a test checks it against what setup registers.
JOB_KINDS = ("scan.manifest",)


async def _setup(rt: Runtime) -> None:
    from ..services.events import ManifestPushed
    from .service import SCAN_JOB, ScanService

    service = ScanService(rt.ctx, rt.config, rt.services)
    service.catalog, service.access = rt.catalog, rt.access
    service.external.tokens = rt.access.tokens if rt.access is not None else None
    service.external.audit = rt.audit
    rt.services[NAME] = service
    rt.ctx.events.on(ManifestPushed, service.on_push)
    rt.jobs.register(SCAN_JOB, service.run_job, concurrency=1, on_claim=service.mark_running)


def _api_ops(rt: Runtime) -> list[Op]:
    from .api import ops

    service = rt.services.get(NAME)
    return ops(service) if service is not None and service.access is not None else []


def _ui_pages(rt: Runtime, ui: Any) -> Any:
    from .ui import ScanPages

    return ScanPages(ui, rt.services[NAME])


def _cli(tree: Any) -> None:
    from .cli import register

    register(tree)


SCAN = Capability(
    NAME,
    setup=_setup,
    job_kinds=JOB_KINDS,
    api_ops=_api_ops,
    ui_pages=_ui_pages,
    cli=_cli,
)
