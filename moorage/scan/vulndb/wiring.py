"""The ``vulndb`` capability: OSV advisories imported into the database (``moorage vulndb
import|status``, a scheduled refresh of ``vulndb.sources`` on the shared job queue, GET
/api/v1/vulndb), vulnerability policies (the rule blocking pulls; ``moorage admin
set-vulnerability-policy``), the re-match of stored scans when the data changes
(``vulndb.rematch``) and the matcher the scanner uses (``rt.services["scan.matcher"]``:
``await match(inventory) -> list[Finding]``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...capability import Capability
from . import tables as _tables  # noqa: F401 - the tables join the shared metadata

if TYPE_CHECKING:
    from ...api.routing import Op
    from ...runtime import Runtime

NAME = "vulndb"
# service.py's REFRESH_JOB and rematch.py's REMATCH_JOB, spelled here so that naming them imports
# nothing (services are imported by setup); a test checks them against what setup registers.
JOB_KINDS = ("vulndb.refresh", "vulndb.rematch")


async def _setup(rt: Runtime) -> None:
    from .matcher import Matcher
    from .rematch import REMATCH_JOB, queue_rematch, rematch
    from .rule import VulnerabilityRule
    from .service import REFRESH_JOB, VulnDB, refresh

    engine = rt.ctx.engine
    matcher = Matcher(engine)
    rt.services["scan.matcher"] = matcher
    config = rt.config.vulndb
    vulndb = rt.services[NAME] = VulnDB(engine, config, rt.jobs)
    vulndb.access, vulndb.audit = rt.access, rt.audit

    async def run_refresh(_payload: dict[str, Any]) -> dict[str, Any]:
        results = await refresh(rt.ctx.write_engine, config)
        if any(r.get("added") or r.get("updated") for r in results.values()):
            async with rt.ctx.write_engine.begin() as conn:
                await queue_rematch(conn)
            rt.jobs.wake()
        return results

    async def run_rematch(_payload: dict[str, Any]) -> dict[str, Any]:
        return await rematch(engine, rt.ctx.write_engine, matcher)

    rt.jobs.register(REMATCH_JOB, run_rematch)

    rt.ctx.rules.add(VulnerabilityRule(engine, rt.services, rt.audit))
    rt.jobs.register(REFRESH_JOB, run_refresh)
    if config.sources:
        rt.jobs.schedule(REFRESH_JOB, timedelta(hours=config.refresh_hours), at_start=False)


def _api_ops(rt: Runtime) -> list[Op]:
    from .api import ops

    return ops(rt.services[NAME])


def _ui_pages(rt: Runtime, ui: Any) -> Any:
    from .ui import VulnDBPages

    return VulnDBPages(ui, rt.services[NAME])


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
)
