"""The ``trust`` capability: cosign and Notation signatures verified on push, shown in the API
and UI, and signed-only pulls enforced (docs/trust.md).

setup: the TrustService (rt.services["trust"]) and, with access control on, TrustAdmin
(rt.services["trust.admin"]); the signature rule (order SIGNATURE); the push/delete
subscribers (discovery); the jobs ``trust.verify`` and ``trust.reverify``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..capability import Capability
from . import tables as tables  # noqa: F401 - the tables join the shared metadata

# subscribers.py's VERIFY_JOB and REVERIFY_JOB, spelled here so that naming them imports nothing
# (services are imported by setup); a test checks them against what setup registers.
JOB_KINDS = ("trust.verify", "trust.reverify")

if TYPE_CHECKING:
    from ..api.routing import Op
    from ..runtime import Runtime
    from ..ui.app import WebUI
    from ..ui.pages import PageGroup


async def _setup(rt: Runtime) -> None:
    from ..services.events import ManifestDeleted, ManifestPushed, TagDeleted
    from .jobs import make_reverify, make_verify
    from .rule import SignatureRule
    from .service import TrustService
    from .subscribers import REVERIFY_JOB, VERIFY_JOB, Discovery

    base = rt.config.http.base_url
    service = TrustService(rt.ctx, urlsplit(base).netloc or None if base else None)
    rt.services["trust"] = service
    discovery = Discovery(service)
    rt.ctx.events.on(ManifestPushed, discovery.manifest_pushed)
    rt.ctx.events.on(TagDeleted, discovery.tag_deleted)
    rt.ctx.events.on(ManifestDeleted, discovery.manifest_deleted)
    rt.ctx.rules.add(SignatureRule(service, rt.audit))
    rt.jobs.register(VERIFY_JOB, make_verify(service))
    rt.jobs.register(REVERIFY_JOB, make_reverify(service))
    if rt.access is not None:
        # Only with access control on: the administration compiles trust configurations, and
        # with them cryptography's X.509 machinery (trust/config.py).
        from .admin import TrustAdmin

        admin = TrustAdmin(rt.ctx, rt.access, rt.audit, rt.sessions).bind(service)
        rt.services["trust.admin"] = admin


def _api_ops(rt: Runtime) -> list[Op]:
    from .api import api_ops

    return api_ops(rt.services["trust.admin"])  # called only with access control on


def _ui_pages(rt: Runtime, ui: WebUI) -> PageGroup:
    from .ui import TrustPages

    return TrustPages(ui, rt.services["trust.admin"])


def _cli(tree: Any) -> None:
    from .cli import register

    register(tree)


TRUST = Capability(
    "trust",
    setup=_setup,
    job_kinds=JOB_KINDS,
    api_ops=_api_ops,
    ui_pages=_ui_pages,
    cli=_cli,
)
