"""/api/v1/organizations/{organization}/scanner: which scanner an organization's images go
through — the built-in one, or an external Harbor pluggable scanner adapter
(moorage/scan/external.py).

Reading needs the admin role on the organization; changing it is for system administrators
(it makes the registry call the adapter's URL from inside its network, with pull tokens).
The credential is write-only: stored encrypted, never returned."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ..api.routing import Call, Op
from ..auth.scopes import ADMIN
from ..services.errors import Denied, Missing
from ..services.models import Model
from .adapter import Metadata
from .external import ExternalScanners, ScannerSetting, check_org, org_exists


class AdapterInfo(Model):
    name: str
    vendor: str
    version: str


class ScannerView(Model):
    organization: str
    scanner: Literal["builtin", "external"] = Field(
        description="builtin: Moorage's own matcher; external: a Harbor scanner adapter"
    )
    adapter_url: str | None = None
    auth_header: str | None = Field(None, description="The header the adapter authenticates")
    has_credential: bool = False
    updated_at: datetime | None = None
    updated_by: str | None = None
    adapter: AdapterInfo | None = Field(
        None, description="What the adapter's metadata said when it was set (PUT only)"
    )


class ScannerBody(Model):
    adapter_url: str | None = Field(
        None,
        max_length=2048,
        description="The adapter's base URL (its API at {adapter_url}/api/v1); null: the "
        "built-in scanner",
    )
    auth_header: str | None = Field(
        None, max_length=128, description="Header carrying the credential (default Authorization)"
    )
    credential: str | None = Field(
        None,
        max_length=4096,
        description="The header's value, e.g. 'Bearer …'; write-only, stored encrypted",
    )
    check: bool = Field(
        True, description="Read the adapter's metadata first and refuse one that cannot scan"
    )


def view(org: str, setting: ScannerSetting | None, meta: Metadata | None = None) -> ScannerView:
    if setting is None:
        return ScannerView(organization=org, scanner="builtin")
    return ScannerView(
        organization=org,
        scanner="external",
        adapter_url=setting.adapter_url,
        auth_header=setting.auth_header,
        has_credential=setting.credential is not None,
        updated_at=setting.updated_at,
        updated_by=setting.updated_by,
        adapter=AdapterInfo(name=meta.name, vendor=meta.vendor, version=meta.version)
        if meta is not None
        else None,
    )


def scanner_ops(external: ExternalScanners, access: Any) -> list[Op]:
    path = "/organizations/{organization}/scanner"

    async def may_read(c: Call, org: str) -> None:
        check_org(org)
        async with external.ctx.engine.connect() as conn:
            if not await org_exists(conn, org):
                raise Missing(f"no organization {org}")
        p = c.principal
        if p.kind == "user" and p.is_admin:
            return
        if ADMIN not in await access.organization_actions(p, org):
            raise Denied(f"this needs the admin role on organization {org}")

    def sysadmin(c: Call) -> None:
        p = c.principal
        if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
            raise Denied(
                "choosing an external scanner is for system administrators (the registry "
                "calls its URL with pull tokens)"
            )

    async def get_scanner(c: Call) -> Any:
        org = c.path["organization"]
        await may_read(c, org)
        return view(org, await external.setting(org, fresh=True))

    async def put_scanner(c: Call) -> Any:
        org = c.path["organization"]
        sysadmin(c)
        b = c.body
        setting, meta = await external.configure(
            org, b.adapter_url, b.auth_header, b.credential, c.principal.name, check=b.check
        )
        await external.record(c.caller, org, setting)
        return view(org, setting, meta)

    async def delete_scanner(c: Call) -> Any:
        org = c.path["organization"]
        sysadmin(c)
        await external.configure(org, None, None, None, c.principal.name)
        await external.record(c.caller, org, None)
        return view(org, None)

    return [
        Op("GET", path, get_scanner, "Which scanner the organization's images go through: built in, or an external Harbor scanner adapter (its admins)", "scanning", "read", response=ScannerView),
        Op("PUT", path, put_scanner, "Scan the organization's images with an external Harbor pluggable scanner adapter (API v1.2), or the built-in scanner (adapter_url null); system administrators", "scanning", "write", body=ScannerBody, response=ScannerView, errors=(400, 401, 403, 404, 422)),
        Op("DELETE", path, delete_scanner, "Scan the organization's images with the built-in scanner again (system administrators)", "scanning", "write", response=ScannerView),
    ]  # fmt: skip
