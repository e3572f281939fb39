"""External scanners: an organization whose images are scanned by a Harbor pluggable scanner
adapter (API v1.2, moorage/scan/adapter.py) instead of the built-in matcher.

Configuration (``scan_scanners``, one row per organization; none: the built-in scanner): the
adapter's base URL, and optionally the header it authenticates with and that header's value,
sealed with ``auth.token.key_encryption_secret`` (moorage/auth/keycrypt.py, bound to the
organization) as mirror upstream passwords are — without that secret a credential is refused
rather than stored in clear. Setting an adapter is a system administrator's act (API, UI and
``moorage admin set-scanner``): it makes the registry send requests to that URL from inside its
network. The organization's admins see which scanner is used.

A scan (the ``scan.manifest`` job, any node) does what Harbor does: read the adapter's metadata
(it must consume the manifest's media type and produce the v1.1 vulnerability report), mint a
short-lived bearer token that may only pull that one repository (the registry's own token
service, so the adapter proves it can read the image through the ordinary /v2 API), POST the
ScanRequest, and poll the report, honouring ``Refresh-After``. The adapter's request id is the
job's checkpoint: a job resumed after a node died polls the same request instead of starting
another. The report's vulnerabilities become findings of the same model as the built-in
scanner's, so the API, the UI, exports and vulnerability policies work unchanged.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth import keycrypt
from ..db.queries import _aware, now
from ..db.schema import organizations
from ..services.errors import Invalid, Missing
from .adapter import AdapterClient, AdapterError, Metadata, Pending, findings_from_report
from .findings import Finding
from .tables import scan_scanners

_ORG_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*\Z")
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}\Z")  # an RFC 9110 token
_RESERVED_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "host", "transfer-encoding", "connection"}
)
MAX_CREDENTIAL = 4096


@dataclass(frozen=True, slots=True)
class ScannerSetting:
    namespace: str
    adapter_url: str
    auth_header: str | None
    credential: str | None  # sealed
    updated_at: datetime
    updated_by: str


def _context(namespace: str) -> str:
    return f"scanner:{namespace}"


def check_org(org: str) -> str:
    if not (2 <= len(org) <= 64 and _ORG_RE.match(org)):
        raise Invalid("organization", f"invalid organization name {org[:80]!r}")
    return org


def check_adapter_url(url: str) -> str:
    """An adapter base URL: http(s), a host, no credentials, query or fragment (the API's
    paths are appended: ``{url}/api/v1/metadata``)."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise Invalid("adapter_url", "adapter_url is a URL of at most 2048 characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise Invalid("adapter_url", "adapter_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Invalid("adapter_url", "adapter_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("adapter_url", "adapter_url is an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise Invalid("adapter_url", "put credentials in the auth header, not in adapter_url")
    if parts.query or parts.fragment:
        raise Invalid("adapter_url", "adapter_url has no ?query or #fragment")
    return url.rstrip("/")


def check_header(name: str | None, credential: str | None) -> tuple[str | None, str | None]:
    """(header, value): a credential without a header name goes in ``Authorization``."""
    if credential is None:
        if name:
            raise Invalid("credential", f"the {name} header needs a credential (its value)")
        return None, None
    name = name or "Authorization"
    if not _HEADER_RE.match(name) or name.lower() in _RESERVED_HEADERS:
        raise Invalid("auth_header", f"{name[:60]!r} is not a header name the adapter may get")
    if not credential or len(credential) > MAX_CREDENTIAL or not credential.isprintable():
        raise Invalid("credential", f"the credential is 1 to {MAX_CREDENTIAL} printable characters")
    return name, credential


async def org_exists(conn: AsyncConnection, org: str) -> bool:
    found = await conn.scalar(sa.select(organizations.c.id).where(organizations.c.name == org))
    return found is not None


async def get_setting(conn: AsyncConnection, namespace: str) -> ScannerSetting | None:
    r = (
        await conn.execute(sa.select(scan_scanners).where(scan_scanners.c.namespace == namespace))
    ).first()
    if r is None:
        return None
    return ScannerSetting(
        namespace=r.namespace,
        adapter_url=r.adapter_url,
        auth_header=r.auth_header,
        credential=r.credential,
        updated_at=_aware(r.updated_at) or now(),
        updated_by=r.updated_by,
    )


async def put_setting(
    conn: AsyncConnection,
    namespace: str,
    adapter_url: str,
    auth_header: str | None,
    sealed: str | None,
    actor: str,
) -> None:
    await conn.execute(sa.delete(scan_scanners).where(scan_scanners.c.namespace == namespace))
    await conn.execute(
        sa.insert(scan_scanners).values(
            namespace=namespace,
            adapter_url=adapter_url,
            auth_header=auth_header,
            credential=sealed,
            updated_at=now(),
            updated_by=actor[:255],
        )
    )


async def delete_setting(conn: AsyncConnection, namespace: str) -> bool:
    res = await conn.execute(sa.delete(scan_scanners).where(scan_scanners.c.namespace == namespace))
    return bool(res.rowcount)


class ExternalScanners:
    """The organizations' scanner settings and the external scan itself (``rt.services
    ["scan"].external``). *ctx* is the service context; *tokens* the registry's token service
    (None without access control: the /v2 API then needs no authorization)."""

    def __init__(self, ctx: Any, config: Any, tokens: Any) -> None:
        self.ctx = ctx
        self.config = config
        self.tokens = tokens
        self.secret: str | None = config.auth.token.key_encryption_secret
        self._cache: dict[str, tuple[float, ScannerSetting | None]] = {}
        self.audit: Any = None  # the AuditLog (the wiring sets it)

    async def record(self, caller: Any, org: str, setting: ScannerSetting | None) -> None:
        """Audit a change of *org*'s scanner by *caller* (the API's or the UI's Caller)."""
        if self.audit is None:
            return
        from ..audit import AuditEvent

        p = caller.principal
        details: dict[str, Any] = {"organization": org, "scanner": "builtin"}
        if setting is not None:
            details.update(
                scanner="external",
                adapter_url=setting.adapter_url,
                auth_header=setting.auth_header,
            )
        await self.audit.record_now(
            AuditEvent(
                "scan.scanner.set",
                actor=p.name,
                actor_type=p.kind,
                client_addr=getattr(caller, "client_addr", None),
                user_agent=getattr(caller, "user_agent", None),
                details=details,
            )
        )

    # --- settings -------------------------------------------------------------------------

    def seal(self, namespace: str, value: str) -> str:
        if not self.secret:
            raise Invalid(
                "credential",
                "scanner credentials are stored encrypted: set auth.token.key_encryption_secret "
                "(MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET) on every node first",
            )
        return keycrypt.encrypt_pem(self.secret, _context(namespace), value)

    def credential(self, setting: ScannerSetting) -> str | None:
        if setting.credential is None:
            return None
        return keycrypt.open_text(self.secret, _context(setting.namespace), setting.credential)

    async def setting(self, namespace: str, *, fresh: bool = False) -> ScannerSetting | None:
        """The organization's adapter, None for the built-in scanner (a view at most 5 s old
        unless *fresh*)."""
        hit = self._cache.get(namespace)
        if hit is not None and not fresh and time.monotonic() - hit[0] < 5:
            return hit[1]
        async with self.ctx.engine.connect() as conn:
            got = await get_setting(conn, namespace)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[namespace] = (time.monotonic(), got)
        return got

    async def configure(
        self,
        org: str,
        adapter_url: str | None,
        auth_header: str | None,
        credential: str | None,
        actor: str,
        *,
        check: bool = True,
    ) -> tuple[ScannerSetting | None, Metadata | None]:
        """Use the adapter at *adapter_url* for *org* (None: the built-in scanner again). With
        *check*, the adapter's metadata is read first: it must answer and be able to scan
        image manifests into the v1.1 vulnerability report."""
        check_org(org)
        async with self.ctx.engine.connect() as conn:
            if not await org_exists(conn, org):
                raise Missing(f"no organization {org}")
        if adapter_url is None:
            if auth_header or credential:
                raise Invalid("adapter_url", "an auth header needs an adapter_url")
            async with self.ctx.write_engine.begin() as conn:
                await delete_setting(conn, org)
            self._cache.pop(org, None)
            return None, None
        url = check_adapter_url(adapter_url)
        header, value = check_header(auth_header, credential)
        sealed = self.seal(org, value) if value is not None else None
        meta = None
        if check:
            async with AdapterClient(url, header, value, timeout=15) as client:
                try:
                    meta = await client.metadata()
                except AdapterError as exc:
                    raise Invalid("adapter_url", f"{exc.message}") from None
            from ..oci import mediatypes as mt

            if not meta.supports(mt.OCI_MANIFEST):
                raise Invalid("adapter_url", meta.why_not(mt.OCI_MANIFEST))
        async with self.ctx.write_engine.begin() as conn:
            await put_setting(conn, org, url, header, sealed, actor)
        self._cache.pop(org, None)
        return await self.setting(org, fresh=True), meta

    # --- scanning -------------------------------------------------------------------------

    def registry_url(self) -> str:
        url = self.config.scanning.registry_url or self.config.http.base_url
        if not url:
            raise AdapterError(
                "an external scanner pulls the image from the registry: set "
                "scanning.registry_url (or http.base_url) to the URL it can reach this registry at"
            )
        return str(url).rstrip("/")

    async def authorization(self, repository: str) -> str | None:
        """``Bearer <token>``: pull on *repository* only, for the token's lifetime."""
        if self.tokens is None:
            return None
        from ..auth.scopes import PULL, Scope

        token, _ = await self.tokens.issue(
            f"scanner:{repository.split('/', 1)[0]}",
            "system",
            None,
            [Scope("repository", repository, frozenset({PULL}))],
        )
        return f"Bearer {token}"

    async def scan(
        self,
        setting: ScannerSetting,
        repository: str,
        digest: str,
        media_type: str,
        *,
        resume: Any = None,
        progress: Any = None,
    ) -> tuple[list[Finding], str, datetime | None]:
        """(findings, scanner label, database updated at). Raises :class:`AdapterError`.
        *resume*: a checkpoint of an earlier attempt; *progress(checkpoint)*: records one."""
        timeout = float(self.config.scanning.adapter_timeout_seconds)
        async with AdapterClient(
            setting.adapter_url, setting.auth_header, self.credential(setting), timeout=30
        ) as client:
            meta = await client.metadata()
            if not meta.supports(media_type):
                raise AdapterError(meta.why_not(media_type))
            request_id: str | None = None
            if (
                isinstance(resume, dict)
                and resume.get("adapter") == setting.adapter_url
                and resume.get("digest") == digest
                and isinstance(resume.get("request_id"), str)
            ):
                request_id = resume["request_id"]
            submitted = False
            deadline = time.monotonic() + timeout
            while True:
                if request_id is None:
                    if submitted:
                        raise AdapterError("the adapter lost the scan request it accepted")
                    request_id = await client.submit(
                        self.registry_url(),
                        await self.authorization(repository),
                        repository,
                        digest,
                        media_type,
                    )
                    submitted = True
                    if progress is not None:
                        await progress(
                            {"adapter": setting.adapter_url, "digest": digest,
                             "request_id": request_id}
                        )  # fmt: skip
                got = await client.report(request_id)
                if got is None:  # unknown to the adapter (it restarted): ask again, once
                    request_id = None
                    continue
                if isinstance(got, Pending):
                    if time.monotonic() + got.retry_after > deadline:
                        raise AdapterError(
                            f"the adapter's report was not ready within {timeout:.0f} s "
                            "(scanning.adapter_timeout_seconds)"
                        )
                    await asyncio.sleep(got.retry_after)
                    continue
                artifact = got.get("artifact")
                other = artifact.get("digest") if isinstance(artifact, dict) else None
                if isinstance(other, str) and other and other != digest:
                    raise AdapterError(
                        f"the adapter's report is for {other[:80]}, not for {digest}"
                    )
                return findings_from_report(got), meta.label, meta.database_updated_at
