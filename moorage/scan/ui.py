"""Web pages of scanning: the findings page of an image (by tag or digest: status, counts by
severity, the findings, SBOM and export links, "Scan now" for users with push rights), a
Vulnerabilities column on the repository page's tag table and a section on the image page.

Everything goes through the same functions as the REST API (moorage/scan/api.py): the same
pull check, the same report (an index: its children's combined), the same push check to queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import Route

from ..auth.scopes import PUSH
from ..services.errors import Denied
from ..ui.pages import (
    Cell,
    PageError,
    PageGroup,
    Panel,
    TagColumn,
    Visit,
    denied,
    not_found,
    quote_path,
)
from ..ui.web import see_other
from .api import (
    VulnerabilityReport,
    build_report,
    csv_response,
    export_name,
    resolve_reference,
    sbom_response,
)
from .findings import RANK
from .service import SEVERITIES, Result, ScanService, summarize

if TYPE_CHECKING:
    from ..ui.app import WebUI

SEVERITY_BADGE = {"critical": "danger", "high": "danger", "medium": "warn", "low": "warn"}
EXPORTS = ("json", "csv", "spdx-json", "cyclonedx-json")
STATUS_BADGE = {"done": "ok", "failed": "danger", "pending": "", "running": "", "unsupported": ""}


def verdict(status: str, summary: dict[str, int]) -> tuple[str, str]:
    """(text, css) of a result in a table cell: the worst severity found and the total, "clean"
    with none, else the status."""
    if status != "done":
        return status, STATUS_BADGE.get(status, "")
    total = sum(summary.values())
    if total == 0:
        return "clean", "ok"
    worst = next(s for s in SEVERITIES if summary.get(s))
    more = f" (+{total - summary[worst]})" if total > summary[worst] else ""
    return f"{summary[worst]} {worst}{more}", SEVERITY_BADGE.get(worst, "")


def counts_title(summary: dict[str, int]) -> str:
    return ", ".join(f"{s} {summary.get(s, 0)}" for s in SEVERITIES)


class ScanPages(PageGroup):
    template_dir = Path(__file__).parent / "templates"
    done = {
        "scan-queued": "Scan queued: this page shows the result once it has run.",
        "scanner-set": "Scanner saved: the organization's next scans use it.",
    }

    def __init__(self, ui: WebUI, service: ScanService) -> None:
        super().__init__(ui)
        self.service = service

    def routes(self) -> list[Route]:
        base = "/ui/repositories/{name:path}/-/vulnerabilities/{reference}"
        return [
            Route(base + "/scan", self.page(self.scan_now), methods=["POST"]),
            Route(
                base + "/export/{what}",
                self.page(self.export, public=True),
                methods=["GET", "HEAD"],
            ),
            Route(base, self.page(self.findings, public=True), methods=["GET", "HEAD"]),
            Route("/ui/organizations/{org}/scanner", self.page(self.set_scanner), methods=["POST"]),
        ]

    def _link(self, repository: str, reference: str) -> str:
        return f"/ui/repositories/{quote_path(repository)}/-/vulnerabilities/{reference}"

    # --- hooks into the core pages ------------------------------------------------------------

    async def _summaries(self, digests: list[str]) -> dict[str, tuple[str, dict[str, int]]]:
        """(status, counts) per scanned digest; an index's from its children's results."""
        results = await self.service.results(digests)
        children: dict[str, list[str]] = {}
        for d, r in results.items():
            kids = (r.inventory or {}).get("children")
            if isinstance(kids, list):
                children[d] = [str(k) for k in kids]
        kid_results: dict[str, Result] = await self.service.results(
            sorted({k for ks in children.values() for k in ks})
        )
        out: dict[str, tuple[str, dict[str, int]]] = {}
        for d, r in results.items():
            if d not in children:
                out[d] = (r.status, r.summary or dict.fromkeys(SEVERITIES, 0))
                continue
            rs = [kid_results.get(k) for k in children[d]]
            statuses = {x.status if x is not None else "pending" for x in rs}
            status = next(
                (s for s in ("running", "pending", "failed", "done") if s in statuses),
                "unsupported",
            )
            findings = [f for x in rs if x is not None for f in x.findings]
            out[d] = (status, summarize(findings))
        return out

    async def tag_columns(
        self, visit: Visit, repository: str, digests: list[str]
    ) -> list[TagColumn]:
        # The core page has checked that the visitor may read the repository.
        cells = {}
        for d, (status, summary) in (await self._summaries(digests)).items():
            text, css = verdict(status, summary)
            cells[d] = Cell(text, self._link(repository, d), css, counts_title(summary))
        return [TagColumn("Vulnerabilities", cells)]

    async def image_panels(self, visit: Visit, repository: str, digest: str) -> list[Panel]:
        report = await build_report(self.service, digest)
        context: dict[str, Any] = {"repo": repository, "digest": digest, "report": report}
        if report is not None:
            context["verdict"] = verdict(report.status, report.summary)
        return [Panel("Vulnerabilities", "scan_panel.html", context)]

    async def org_panels(self, visit: Visit, organization: str) -> list[Panel]:
        """Which scanner the organization's images go through (its admins see it)."""
        from ..auth.scopes import ADMIN

        p = visit.principal
        if not (p.kind == "user" and p.is_admin) and ADMIN not in (
            await self.access.organization_actions(p, organization)
        ):
            return []
        setting = await self.service.external.setting(organization, fresh=True)
        sysadmin = p.kind == "user" and p.is_admin
        return [
            Panel(
                "Scanner",
                "scan_org_panel.html",
                {"setting": setting, "org": organization, "can_set": sysadmin},
            )
        ]

    async def set_scanner(self, visit: Visit) -> Response:
        """A system administrator's form on the organization page: an external adapter (its
        metadata checked first unless unticked), or the built-in scanner again."""
        org = str(visit.request.path_params["org"])
        p = visit.principal
        if not (p.kind == "user" and p.is_admin):
            raise denied("Choosing an external scanner is for system administrators.")
        f = visit.form
        url = None if f.get("builtin") else (f.get("adapter_url", "").strip() or None)
        if url is None and not f.get("builtin"):
            raise PageError(
                400, "Not saved", "Give the adapter's URL, or choose the built-in scanner."
            )
        header = f.get("auth_header", "").strip() or None if url else None
        credential = f.get("credential", "") or None if url else None
        setting, _ = await self._change(
            self.service.external.configure(
                org, url, header, credential, p.name, check=bool(f.get("check"))
            )
        )
        await self.service.external.record(visit.caller, org, setting)
        return see_other(f"/ui/organizations/{quote_path(org)}?done=scanner-set")

    # --- pages ---------------------------------------------------------------------------------

    async def _may_push(self, visit: Visit, repository: str) -> bool:
        if visit.principal.kind == "anonymous":
            return False
        return PUSH in await self.access.allowed_actions(visit.principal, repository)

    async def findings(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        reference = visit.request.path_params["reference"]
        digest = await self._service(
            resolve_reference(self.service, visit.principal, name, reference)
        )
        report = await build_report(self.service, digest)
        rows = sorted(report.findings, key=_worst_first) if report is not None else []
        return self.render(
            visit,
            "scan_findings.html",
            section="repositories",
            repo=name,
            reference=reference,
            digest=digest,
            report=report,
            verdict=verdict(report.status, report.summary) if report is not None else None,
            findings=rows,
            severities=SEVERITIES,
            severity_badge=SEVERITY_BADGE,
            status_badge=STATUS_BADGE,
            can_scan=await self._may_push(visit, name),
            export=self._link(name, digest) + "/export/",
            scan_action=self._link(name, reference) + "/scan",
            sbom=_has_sbom(report),
            policy=await self._policy_link(visit, name),
        )

    async def _policy_link(self, visit: Visit, repository: str) -> tuple[str, str, bool] | None:
        """(target, link) of the vulnerability policy that applies to *repository* — its own,
        else its organization's, else (none yet) the organization's to set — when the visitor
        manages it; None otherwise or without the vulnerability-data capability."""
        vulndb = self.service.services.get("vulndb")
        if vulndb is None or not hasattr(vulndb, "may_manage") or visit.principal.kind != "user":
            return None
        org = repository.split("/", 1)[0]
        targets = [repository, org] if "/" in repository else [repository]
        have = {p.target for p in await vulndb.policies()}
        target = next((t for t in targets if t in have), org)
        if not await vulndb.may_manage(visit.principal, target, write=False):
            return None
        return target, "/ui/vulnerability-policies/" + quote_path(target), target in have

    async def export(self, visit: Visit) -> Response:
        """Downloads for a signed-in browser (the API takes credentials, not the session):
        ``json`` and ``csv`` findings, ``spdx-json`` and ``cyclonedx-json`` SBOMs."""
        name = visit.request.path_params["name"]
        reference = visit.request.path_params["reference"]
        what = visit.request.path_params["what"]
        if what not in EXPORTS:
            raise not_found()
        digest = await self._service(
            resolve_reference(self.service, visit.principal, name, reference)
        )
        report = await build_report(self.service, digest)
        if report is None:
            raise not_found(f"{digest} has not been scanned yet.")
        if what == "csv":
            return csv_response(report)
        if what == "json":
            return Response(
                report.model_dump_json(indent=1),
                media_type="application/json",
                headers={
                    "content-disposition": f'attachment; filename="{export_name(digest)}.json"'
                },
            )
        result = await self.service.result(digest)
        if result is None or not _has_sbom(report) or not result.inventory:
            raise not_found(
                "No SBOM: the image has not been scanned to the end (an index has none of its own)."
            )
        response = sbom_response(self.service, name, digest, result, what)
        kind = "spdx" if what == "spdx-json" else "cdx"
        response.headers["content-disposition"] = (
            f'attachment; filename="sbom-{digest.replace(":", "-")[:19]}.{kind}.json"'
        )
        return response

    async def scan_now(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        reference = visit.request.path_params["reference"]
        digest = await self._service(
            resolve_reference(self.service, visit.principal, name, reference)
        )
        if not await self._may_push(visit, name):
            await self._service(_refuse(name))
        await self._change(self.service.request(name, digest))
        return see_other(self._link(name, reference) + "?done=scan-queued")


async def _refuse(name: str) -> None:
    raise Denied(f"queuing a scan needs push access to {name}")


def _worst_first(f: dict[str, Any]) -> tuple[int, float, str, str]:
    score = f.get("cvss_score")
    return (
        RANK.get(str(f.get("severity")), len(RANK)),
        -(score if isinstance(score, int | float) else 0.0),
        str(f.get("package", "")),
        str(f.get("id", "")),
    )


def _has_sbom(report: VulnerabilityReport | None) -> bool:
    """An image manifest scanned to the end has an inventory (an index has none of its own)."""
    return report is not None and report.status == "done" and report.children is None
