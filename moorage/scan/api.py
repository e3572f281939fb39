"""/api/v1 scan routes: queue a scan, read a manifest's vulnerabilities and its SBOM, and an
organization's scan-on-push setting.

Reading needs pull access to the repository; queuing a scan needs push access; the
organization setting needs its admin role. An index answers with its children's results
combined (each finding then names its ``manifest``)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field
from starlette.responses import Response

from ..api.routing import APIError, Call, Op
from ..auth.scopes import ADMIN, PUSH
from ..db import queries as core_q
from ..db.schema import organizations
from ..oci.digest import is_digest
from ..oci.names import valid_tag
from ..services.errors import Denied, Invalid, Missing
from ..services.models import Model
from .sbom import cyclonedx, spdx
from .service import SEVERITIES, Result, ScanService, summarize

_ORG_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*\Z")  # organization names
Status = Literal["pending", "running", "done", "failed", "unsupported"]


class Queued(Model):
    repository: str
    digest: str
    status: Status


class VulnerabilityReport(Model):
    digest: str
    status: Status
    scanned_at: datetime | None
    database_updated_at: datetime | None
    summary: dict[str, int]
    findings: list[dict[str, Any]]
    error: str | None = None
    children: list[str] | None = Field(None, description="An index's child manifests.")
    scanner: str | None = Field(
        None, description="The external scanner adapter that produced it; null: built in"
    )


class SbomQuery(Model):
    format: Literal["spdx-json", "cyclonedx-json"] = "spdx-json"


class ScanningSettings(Model):
    organization: str
    on_push: bool | None = Field(
        None, description="Scan pushes of this organization's images; null: the server default."
    )
    effective: bool


class ScanningBody(Model):
    on_push: bool | None


class ReportQuery(Model):
    format: Literal["json", "csv"] = Field(
        "json", description="csv: the findings as comma-separated values, one row per finding."
    )


CSV_COLUMNS = (
    "id", "aliases", "severity", "cvss_score", "ecosystem", "package", "version",
    "fixed_version", "layer_digest", "manifest",
)  # fmt: skip


async def resolve_reference(service: ScanService, principal: Any, name: str, ref: str) -> str:
    """The digest *ref* (a tag or a digest) names in repository *name*, after the pull check
    (Missing when it does not exist or may not be read)."""
    if not (valid_tag(ref) or is_digest(ref)):
        raise Invalid("reference", "reference is a tag or a digest (sha256:<64 hex>)")
    await service.catalog.readable(principal, name)
    async with service.ctx.engine.connect() as conn:
        row = (
            await core_q.manifest_by_digest(conn, name, ref)
            if ":" in ref
            else await core_q.manifest_by_tag(conn, name, ref)
        )
    if row is None:
        raise Missing(f"no manifest {ref} in {name}")
    return str(row.digest)


async def build_report(service: ScanService, digest: str) -> VulnerabilityReport | None:
    """The manifest's scan result as the API answers it (an index: its children's combined,
    each finding then naming its ``manifest``); None when it was never scanned."""
    result = await service.result(digest)
    if result is None:
        return None
    children = (result.inventory or {}).get("children")
    if isinstance(children, list):
        return await _combined(service, result, [str(d) for d in children])
    return VulnerabilityReport(
        digest=digest,
        status=result.status,
        scanned_at=result.scanned_at,
        database_updated_at=result.database_updated_at,
        summary=result.summary or dict.fromkeys(SEVERITIES, 0),
        findings=result.findings,
        error=result.error,
        scanner=result.scanner,
    )


async def _combined(
    service: ScanService, index: Result, children: list[str]
) -> VulnerabilityReport:
    results = await service.results(children)
    findings: list[dict[str, Any]] = []
    statuses = set()
    for child in children:
        r = results.get(child)
        statuses.add(r.status if r is not None else "pending")
        for f in r.findings if r is not None else []:
            findings.append({**f, "manifest": child})
    status = next(
        (s for s in ("running", "pending", "failed", "done") if s in statuses), "unsupported"
    )
    stamps = [r.scanned_at for r in results.values() if r.scanned_at is not None]
    dbs = [r.database_updated_at for r in results.values() if r.database_updated_at]
    return VulnerabilityReport(
        digest=index.digest,
        status=status,
        scanned_at=max(stamps) if stamps else index.scanned_at,
        database_updated_at=min(dbs) if dbs else None,
        summary=summarize(findings),
        findings=findings,
        children=children,
    )


def _csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: lists joined by spaces, and a leading = + - @ (a
    formula to Excel or LibreOffice) neutralized with a quote, since advisory data is foreign."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def findings_csv(report: VulnerabilityReport) -> str:
    """The findings as CSV (RFC 4180: a header row, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for f in report.findings:
        writer.writerow([_csv_cell(f.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()


def sbom_response(
    service: ScanService, name: str, digest: str, result: Result, fmt: str
) -> Response:
    """The SBOM of an image manifest scanned to the end (*result* holds its inventory) in
    *fmt*: ``spdx-json`` or ``cyclonedx-json``."""
    inventory = result.inventory or {}
    if fmt == "spdx-json":
        base = service.config.http.base_url or ""
        doc, media = (
            spdx(inventory, name, digest, result.scanned_at, base),
            "application/spdx+json",
        )
    else:
        doc, media = (
            cyclonedx(inventory, name, digest, result.scanned_at),
            "application/vnd.cyclonedx+json",
        )
    return Response(json.dumps(doc, indent=1), media_type=media)


def csv_response(report: VulnerabilityReport) -> Response:
    return Response(
        findings_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{export_name(report.digest)}.csv"'},
    )


def export_name(digest: str) -> str:
    return "vulnerabilities-" + digest.replace(":", "-")[:19]


def ops(service: ScanService) -> list[Op]:
    """The routes; *service* carries the catalog and access services (set when access control
    is on, the only case in which the API is served)."""
    manifest = "/repositories/{repository}/-/manifests/{reference}"

    async def resolve(c: Call) -> tuple[str, str]:
        """(repository, digest) after the pull check."""
        name, ref = c.path["repository"], c.path["reference"]
        return name, await resolve_reference(service, c.principal, name, ref)

    async def scan(c: Call) -> Any:
        name, digest = await resolve(c)
        if PUSH not in await service.access.allowed_actions(c.principal, name):
            raise Denied(f"queuing a scan needs push access to {name}")
        await service.request(name, digest)
        return Queued(repository=name, digest=digest, status="pending")

    async def report(c: Call) -> Any:
        _, digest = await resolve(c)
        body = await build_report(service, digest)
        if body is None:
            raise APIError(404, "NOT_FOUND", f"{digest} has not been scanned (POST .../scan)")
        if c.query.format == "csv":
            return csv_response(body)
        return body

    async def sbom(c: Call) -> Any:
        name, digest = await resolve(c)
        result = await service.result(digest)
        if result is None or result.status != "done" or not result.inventory:
            raise APIError(404, "NOT_FOUND", f"no inventory of {digest} yet (POST .../scan)")
        if "children" in result.inventory:
            raise APIError(400, "UNSUPPORTED", "an index has no SBOM of its own: ask a child")
        return sbom_response(service, name, digest, result, c.query.format)

    async def org_admin(c: Call, org: str) -> None:
        if not (2 <= len(org) <= 64 and _ORG_RE.match(org)):
            raise Invalid("organization", f"invalid organization name {org[:80]!r}")
        async with service.ctx.engine.connect() as conn:
            exists = await conn.scalar(
                sa.select(organizations.c.id).where(organizations.c.name == org)
            )
        if exists is None:
            raise Missing(f"no organization {org}")
        if c.principal.kind == "user" and c.principal.is_admin:
            return
        if ADMIN not in await service.access.organization_actions(c.principal, org):
            raise Denied(f"this needs the admin role on organization {org}")

    async def settings(org: str) -> ScanningSettings:
        from .service import on_push_setting

        async with service.ctx.engine.connect() as conn:
            value = await on_push_setting(conn, org)
        default = service.config.scanning.on_push
        return ScanningSettings(
            organization=org, on_push=value, effective=default if value is None else value
        )

    async def get_settings(c: Call) -> Any:
        org = c.path["organization"]
        await org_admin(c, org)
        return await settings(org)

    async def put_settings(c: Call) -> Any:
        from .service import set_on_push

        org = c.path["organization"]
        await org_admin(c, org)
        async with service.ctx.write_engine.begin() as conn:
            await set_on_push(conn, org, c.body.on_push)
        return await settings(org)

    from .scanner_api import scanner_ops

    P: Literal["public"] = "public"
    return scanner_ops(service.external, service.access) + [
        Op("POST", manifest + "/scan", scan, "Queue a scan of a manifest (by tag or digest); an index queues its children", "scanning", "write", response=Queued, status=202),
        Op("GET", manifest + "/vulnerabilities", report, "A manifest's scan result: status, counts by severity, findings (an index: its children's); ?format=csv exports the findings", "scanning", P, query=ReportQuery, response=VulnerabilityReport),
        Op("GET", manifest + "/sbom", sbom, "The manifest's software bill of materials (SPDX 2.3 or CycloneDX 1.5 JSON)", "scanning", P, query=SbomQuery, response=None, media_type="application/json"),
        Op("GET", "/organizations/{organization}/scanning", get_settings, "Whether the organization's pushes are scanned (its admins)", "scanning", "read", response=ScanningSettings),
        Op("PUT", "/organizations/{organization}/scanning", put_settings, "Turn scan on push on or off for an organization (null: the server default)", "scanning", "write", body=ScanningBody, response=ScanningSettings, errors=(400, 401, 403, 404, 422)),
    ]  # fmt: skip
