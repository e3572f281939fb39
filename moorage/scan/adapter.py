"""A client of Harbor's pluggable scanner adapter API v1.2 (goharbor/pluggable-scanner-spec,
api/spec/scanner-adapter-openapi-v1.2.yaml), as Harbor itself speaks it:

- ``GET {adapter}/api/v1/metadata``: the scanner (name, vendor, version), its capabilities
  (``consumes_mime_types`` → ``produces_mime_types``, optionally typed ``vulnerability`` or
  ``sbom``) and properties (``harbor.scanner-adapter/vulnerability-database-updated-at``);
- ``POST {adapter}/api/v1/scan`` with a ScanRequest (``registry.url``,
  ``registry.authorization``, ``artifact.repository|digest|tag|mime_type``) → 202 and
  ``{"id": ...}``;
- ``GET {adapter}/api/v1/scan/{id}/report`` with ``Accept: application/vnd.security.vulnerability.
  report; version=1.1``: 302 with ``Refresh-After`` (seconds) while the scan runs, 200 with a
  HarborVulnerabilityReport when done, 500 (an ErrorResponse) when the scan failed.

Everything an adapter answers is foreign input: bodies are read up to a cap, JSON is checked
field by field, strings are bounded, and anything malformed is an :class:`AdapterError` with a
message fit to show (never a crash of the job). No redirects are followed (a 302 is the spec's
"not yet") and no environment proxy is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .findings import Finding, sort_key

if TYPE_CHECKING:
    import httpx

REPORT_MIME = "application/vnd.security.vulnerability.report; version=1.1"
METADATA_MIMES = (
    "application/vnd.scanner.adapter.metadata+json; version=1.1",
    "application/vnd.scanner.adapter.metadata+json; version=1.0",
)
SCAN_REQUEST_MIME = "application/vnd.scanner.adapter.scan.request+json; version=1.1"
DB_UPDATED_PROPERTY = "harbor.scanner-adapter/vulnerability-database-updated-at"
MAX_BODY = 64 << 20  # a report of a large image with every finding described stays far below
MAX_FINDINGS = 100_000
# The spec's Severity scale onto ours: "Negligible" (below Low) counts as low, so a policy
# blocking "low" blocks it too (the cautious reading); anything unrecognized is "unknown".
SEVERITY = {
    "critical": "critical",
    "high": "high",
    "medium": "medium",
    "low": "low",
    "negligible": "low",
    "unknown": "unknown",
}


class AdapterError(Exception):
    """The adapter could not be used, or answered something unusable. ``transient``: worth
    retrying later (the adapter unreachable, a 5xx other than the report's own 500)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message[:900])
        self.message = message[:900]
        self.transient = transient


def normalize_mime(value: str) -> str:
    """``a/b;version=1.1`` and ``A/B; version=1.1`` compare equal."""
    parts = [p.strip() for p in value.split(";")]
    return "; ".join([parts[0].lower(), *(p.replace(" ", "") for p in parts[1:] if p)])


def _text(value: Any, limit: int) -> str:
    """A string field of the adapter's JSON, bounded and without control characters."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value[:limit] if c.isprintable())


@dataclass(frozen=True, slots=True)
class Metadata:
    name: str
    vendor: str
    version: str
    # (type, consumes, produces) per capability, media types normalized
    capabilities: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    database_updated_at: datetime | None

    @property
    def label(self) -> str:
        text = f"{self.name or 'external scanner'} {self.version}".strip()
        return (f"{text} ({self.vendor})" if self.vendor else text)[:255]

    def supports(self, media_type: str) -> bool:
        """Whether a vulnerability capability consumes *media_type* and produces the v1.1
        report (a capability without ``type`` is a vulnerability one, per the spec)."""
        want, report = normalize_mime(media_type), normalize_mime(REPORT_MIME)
        return any(
            kind == "vulnerability" and want in consumes and report in produces
            for kind, consumes, produces in self.capabilities
        )

    def why_not(self, media_type: str) -> str:
        consumed = {m for k, c, _ in self.capabilities if k == "vulnerability" for m in c}
        if normalize_mime(media_type) not in consumed:
            return f"{self.label} does not scan {media_type} artifacts"
        return f"{self.label} does not produce the {REPORT_MIME!r} report"


def parse_metadata(doc: Any) -> Metadata:
    if not isinstance(doc, dict):
        raise AdapterError("the adapter's metadata is not a JSON object")
    scanner = doc.get("scanner")
    caps = doc.get("capabilities")
    if not isinstance(scanner, dict) or not isinstance(caps, list):
        raise AdapterError("the adapter's metadata lacks 'scanner' or 'capabilities'")
    capabilities = []
    for cap in caps[:64]:
        if not isinstance(cap, dict):
            continue
        kind = cap.get("type") or "vulnerability"
        consumes, produces = cap.get("consumes_mime_types"), cap.get("produces_mime_types")
        if not isinstance(kind, str) or not isinstance(consumes, list):
            continue
        if not isinstance(produces, list):
            continue
        capabilities.append(
            (
                kind,
                tuple(normalize_mime(m) for m in consumes[:64] if isinstance(m, str)),
                tuple(normalize_mime(m) for m in produces[:64] if isinstance(m, str)),
            )
        )
    props = doc.get("properties")
    stamp = None
    if isinstance(props, dict) and isinstance(props.get(DB_UPDATED_PROPERTY), str):
        try:
            stamp = datetime.fromisoformat(props[DB_UPDATED_PROPERTY][:64].replace("Z", "+00:00"))
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is None:
            stamp = None
    return Metadata(
        name=_text(scanner.get("name"), 100),
        vendor=_text(scanner.get("vendor"), 100),
        version=_text(scanner.get("version"), 50),
        capabilities=tuple(capabilities),
        database_updated_at=stamp,
    )


def _score(cvss: Any) -> tuple[float | None, str]:
    if not isinstance(cvss, dict):
        return None, ""
    score = cvss.get("score_v3")
    if isinstance(score, bool) or not isinstance(score, int | float):
        value = None
    else:
        value = float(score) if math.isfinite(score) and 0 <= score <= 10 else None
    return value, _text(cvss.get("vector_v3"), 256)


def findings_from_report(doc: Any) -> list[Finding]:
    """The findings of a HarborVulnerabilityReport, worst first. Items without an id or a
    package are skipped; the same (id, package, version) twice counts once."""
    if not isinstance(doc, dict):
        raise AdapterError("the adapter's report is not a JSON object")
    items = doc.get("vulnerabilities")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise AdapterError("the adapter's report has no 'vulnerabilities' list")
    if len(items) > MAX_FINDINGS:
        raise AdapterError(f"the adapter's report has more than {MAX_FINDINGS} findings")
    seen: set[tuple[str, str, str]] = set()
    out: list[Finding] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        ident, package = _text(item.get("id"), 128), _text(item.get("package"), 255)
        version = _text(item.get("version"), 255)
        if not ident or not package or (ident, package, version) in seen:
            continue
        seen.add((ident, package, version))
        sev = item.get("severity")
        severity = (
            SEVERITY.get(sev.strip().lower(), "unknown") if isinstance(sev, str) else "unknown"
        )
        score, vector = _score(item.get("preferred_cvss"))
        links = item.get("links")
        fixed = _text(item.get("fix_version"), 255) or None
        out.append(
            Finding(
                id=ident,
                aliases=(),
                ecosystem="",  # the report does not say; the result names its scanner
                package=package,
                version=version,
                fixed_version=fixed,
                severity=severity,
                cvss_score=score,
                layer_digest="",
                summary=_text(item.get("description"), 512),
                links=tuple(
                    _text(u, 1024)
                    for u in (links if isinstance(links, list) else [])[:20]
                    if isinstance(u, str) and u.startswith(("https://", "http://"))
                ),
                cvss_vector=vector,
            )
        )
    out.sort(key=sort_key)
    return out


@dataclass(frozen=True, slots=True)
class Pending:
    """The report is not ready: ask again after ``retry_after`` seconds."""

    retry_after: float


class AdapterClient:
    """One adapter: its base URL (``{url}/api/v1/...``) and the header it authenticates with."""

    def __init__(
        self,
        url: str,
        auth_header: str | None = None,
        credential: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        import httpx

        self.base = url.rstrip("/") + "/api/v1"
        self.headers: dict[str, str] = {}
        if auth_header and credential is not None:
            self.headers[auth_header] = credential
        self._own = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def __aenter__(self) -> AdapterClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _call(
        self, method: str, path: str, *, accept: str, body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, httpx.Headers, bytes]:  # fmt: skip
        import httpx

        headers = {**self.headers, "Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            async with self.http.stream(
                method, self.base + path, headers=headers, content=body
            ) as r:
                data = bytearray()
                async for chunk in r.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_BODY:
                        raise AdapterError(f"the adapter's answer to {path} is too large")
                return r.status_code, r.headers, bytes(data)
        except httpx.HTTPError as exc:
            raise AdapterError(
                f"the scanner adapter at {self.base} cannot be reached: {type(exc).__name__}",
                transient=True,
            ) from None

    @staticmethod
    def _json(path: str, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise AdapterError(f"the adapter's answer to {path} is not JSON") from None

    @staticmethod
    def _failure(path: str, status: int, data: bytes) -> AdapterError:
        """The adapter's ErrorResponse message, if it sent one."""
        message = ""
        try:
            doc = json.loads(data)
            if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
                message = _text(doc["error"].get("message"), 500)
        except (ValueError, UnicodeDecodeError):
            pass
        text = f"the scanner adapter answered {path} with {status}" + (
            f": {message}" if message else ""
        )
        # the report's own 500 means "the scan failed"; other 5xx may pass (retry later)
        return AdapterError(text, transient=status in (502, 503, 504, 429))

    async def metadata(self) -> Metadata:
        status, _, data = await self._call("GET", "/metadata", accept=", ".join(METADATA_MIMES))
        if status != 200:
            raise self._failure("/metadata", status, data)
        return parse_metadata(self._json("/metadata", data))

    async def submit(
        self,
        registry_url: str,
        authorization: str | None,
        repository: str,
        digest: str,
        media_type: str,
        tag: str | None = None,
    ) -> str:
        """Queue the scan (POST /scan); returns the adapter's scan request id."""
        registry: dict[str, str] = {"url": registry_url}
        if authorization:
            registry["authorization"] = authorization
        artifact = {"repository": repository, "digest": digest, "mime_type": media_type}
        if tag:
            artifact["tag"] = tag
        request = {
            "registry": registry,
            "artifact": artifact,
            "enabled_capabilities": [
                {"type": "vulnerability", "produces_mime_types": [REPORT_MIME]}
            ],
        }
        status, _, data = await self._call(
            "POST", "/scan", accept="application/vnd.scanner.adapter.scan.response+json; version=1.0",
            body=json.dumps(request).encode(), content_type=SCAN_REQUEST_MIME,
        )  # fmt: skip
        if status not in (200, 201, 202):
            raise self._failure("/scan", status, data)
        doc = self._json("/scan", data)
        ident = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(ident, str) or not ident or len(ident) > 256 or not ident.isprintable():
            raise AdapterError("the adapter's answer to /scan has no usable 'id'")
        return ident

    async def report(self, request_id: str) -> Pending | dict[str, Any] | None:
        """The report (a HarborVulnerabilityReport as JSON), :class:`Pending` while the scan
        runs, None when the adapter does not know *request_id* (404)."""
        path = f"/scan/{quote(request_id, safe='')}/report"
        status, headers, data = await self._call("GET", path, accept=REPORT_MIME)
        if status == 302:
            raw = headers.get("refresh-after", "")
            try:
                after = float(raw)
            except ValueError:
                after = 2.0
            if not math.isfinite(after):
                after = 2.0
            return Pending(min(max(after, 0.2), 60.0))
        if status == 404:
            return None
        if status != 200:
            raise self._failure("/scan/{id}/report", status, data)
        doc = self._json("/scan/{id}/report", data)
        if not isinstance(doc, dict):
            raise AdapterError("the adapter's report is not a JSON object")
        return doc
