"""A scanner adapter for tests, implementing Harbor's pluggable scanner adapter API v1.2
(goharbor/pluggable-scanner-spec, api/spec/scanner-adapter-openapi-v1.2.yaml) as a small
Starlette app served by uvicorn on loopback.

It does what a real adapter (Trivy's) does with a ScanRequest: pulls the artifact from
``registry.url`` through the Docker Registry v2 API with ``registry.authorization`` as the
Authorization header — manifest, config and every layer, each blob checked against its digest
— and reports what it found in the layers. Its "vulnerability database" is :data:`ADVISORIES`,
matched against ``<name> <version>`` lines of ``usr/share/fakepkgs/list`` files in the layers
(a later layer's list replaces an earlier one's). A config label
``io.moorage.test.fail=<message>`` makes the scan fail (the report answers 500).

Everything it saw is kept for the tests to assert: the authorization headers it was given, the
HTTP statuses of its pulls, and the answers to two probes made with the same token that the
token must not allow (another repository's manifest, a blob upload into this one).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REPORT_MIME = "application/vnd.security.vulnerability.report; version=1.1"
METADATA_MIME = "application/vnd.scanner.adapter.metadata+json; version=1.1"
ERROR_MIME = "application/vnd.scanner.adapter.error+json; version=1.0"
MANIFESTS = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
API_KEY = "adapter-key-0123456789"
# (package, version) -> [(id, severity, cvss v3 score, fixed version)]
ADVISORIES: dict[tuple[str, str], list[tuple[str, str, float | None, str | None]]] = {
    ("openssl", "1.1.1k"): [("CVE-2021-3711", "Critical", 9.8, "1.1.1l")],
    ("zlib", "1.2.11"): [("CVE-2018-25032", "High", 7.5, "1.2.12")],
    ("busybox", "1.36.1"): [("CVE-2023-42366", "Medium", 5.5, None)],
    ("tzdata", "2024a"): [("TEMP-0000000-TZ", "Negligible", None, None)],
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status, media_type=ERROR_MIME)


@dataclass
class Job:
    request: dict[str, Any]
    status: str = "running"  # running | done | failed
    report: dict[str, Any] | None = None
    message: str = ""


@dataclass
class Adapter:
    """The adapter's state; ``app`` is its ASGI application."""

    delay: float = 0.0  # seconds before a scan starts (reports answer 302 meanwhile)
    jobs: dict[str, Job] = field(default_factory=dict)
    authorizations: list[str | None] = field(default_factory=list)
    pulls: list[tuple[str, int]] = field(default_factory=list)  # (path, status)
    probes: dict[str, int] = field(default_factory=dict)
    submissions: int = 0
    report_polls: int = 0

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/api/v1/metadata", self.metadata, methods=["GET"]),
                Route("/api/v1/scan", self.scan, methods=["POST"]),
                Route("/api/v1/scan/{id}/report", self.report, methods=["GET"]),
            ]
        )

    @staticmethod
    def _authorized(request: Request) -> bool:
        return request.headers.get("x-scanneradapter-api-key") == API_KEY

    async def metadata(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401, "missing or wrong X-ScannerAdapter-API-Key")
        doc = {
            "scanner": {"name": "Loopback Scanner", "vendor": "Moorage tests", "version": "1.0"},
            "capabilities": [
                {
                    "type": "vulnerability",
                    "consumes_mime_types": list(MANIFESTS),
                    "produces_mime_types": [REPORT_MIME],
                }
            ],
            "properties": {
                "harbor.scanner-adapter/scanner-type": "os-package-vulnerability",
                "harbor.scanner-adapter/vulnerability-database-updated-at": "2026-12-01T08:00:00Z",
            },
        }
        return Response(json.dumps(doc), media_type=METADATA_MIME)

    async def scan(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401, "missing or wrong X-ScannerAdapter-API-Key")
        if not request.headers.get("content-type", "").startswith(
            "application/vnd.scanner.adapter.scan.request+json"
        ):
            return error(400, "not a ScanRequest")
        try:
            req = json.loads(await request.body())
            registry, artifact = req["registry"], req["artifact"]
            url, repo, digest = registry["url"], artifact["repository"], artifact["digest"]
        except (ValueError, KeyError, TypeError):
            return error(400, "malformed ScanRequest")
        if artifact.get("mime_type") not in MANIFESTS:
            return error(422, f"cannot scan {artifact.get('mime_type')}")
        self.submissions += 1
        ident = uuid.uuid4().hex
        job = self.jobs[ident] = Job(req)
        auth = registry.get("authorization")
        self.authorizations.append(auth)
        asyncio.get_running_loop().create_task(self._run(job, url, auth, repo, digest))
        return JSONResponse(
            {"id": ident},
            202,
            media_type="application/vnd.scanner.adapter.scan.response+json; version=1.0",
        )

    async def report(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401, "missing or wrong X-ScannerAdapter-API-Key")
        self.report_polls += 1
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return Response(status_code=404)
        if request.headers.get("accept") != REPORT_MIME:
            return error(501, f"cannot produce {request.headers.get('accept')}")
        if job.status == "running":
            return Response(status_code=302, headers={"Refresh-After": "1"})
        if job.status == "failed":
            return error(500, job.message)
        return Response(json.dumps(job.report), media_type=REPORT_MIME)

    # --- the scan: pull the image as any registry client would --------------------------------

    async def _run(self, job: Job, url: str, auth: str | None, repo: str, digest: str) -> None:
        await asyncio.sleep(self.delay)
        headers = {"Authorization": auth} if auth else {}
        try:
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
                r = await c.get(
                    f"/v2/{repo}/manifests/{digest}", headers={"Accept": ", ".join(MANIFESTS)}
                )
                self.pulls.append((r.url.path, r.status_code))
                r.raise_for_status()
                if "sha256:" + hashlib.sha256(r.content).hexdigest() != digest:
                    raise ValueError("the manifest does not match its digest")
                manifest = r.json()
                config = json.loads(await self._blob(c, repo, manifest["config"]["digest"]))
                labels = (config.get("config") or {}).get("Labels") or {}
                packages: dict[str, str] = {}
                for desc in manifest["layers"]:
                    listed = _package_list(await self._blob(c, repo, desc["digest"]))
                    if listed is not None:
                        packages = listed
                # what the token must not allow
                other = await c.get("/v2/elsewhere/other/manifests/latest")
                self.probes["other-repository"] = other.status_code
                push = await c.post(f"/v2/{repo}/blobs/uploads/")
                self.probes["push"] = push.status_code
            if "io.moorage.test.fail" in labels:
                raise RuntimeError(labels["io.moorage.test.fail"])
            job.report = _report(job.request, packages)
            job.status = "done"
        except Exception as exc:  # noqa: BLE001 - the scan's failure is the report's 500
            job.status, job.message = "failed", f"scan failed: {exc}"

    async def _blob(self, c: httpx.AsyncClient, repo: str, digest: str) -> bytes:
        r = await c.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
        self.pulls.append((f"/v2/{repo}/blobs/{digest}", r.status_code))
        r.raise_for_status()
        if "sha256:" + hashlib.sha256(r.content).hexdigest() != digest:
            raise ValueError(f"blob {digest} does not match its digest")
        return r.content


def _package_list(layer: bytes) -> dict[str, str] | None:
    raw = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            if member.name.lstrip("./") == "usr/share/fakepkgs/list" and member.isfile():
                f = tar.extractfile(member)
                text = f.read().decode() if f else ""
                return dict(line.split(None, 1) for line in text.splitlines() if line.strip())
    return None


def _report(request: dict[str, Any], packages: dict[str, str]) -> dict[str, Any]:
    vulns = []
    for name, version in sorted(packages.items()):
        for ident, severity, score, fixed in ADVISORIES.get((name, version.strip()), []):
            item: dict[str, Any] = {
                "id": ident,
                "package": name,
                "version": version.strip(),
                "severity": severity,
                "description": f"{ident} in {name}",
                "links": [f"https://avd.example.test/{ident}"],
                "cwe_ids": ["CWE-20"],
                "vendor_attributes": {"source": "loopback"},
            }
            if fixed:
                item["fix_version"] = fixed
            if score is not None:
                item["preferred_cvss"] = {
                    "score_v3": score,
                    "vector_v3": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                }
            vulns.append(item)
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": request["artifact"],
        "scanner": {"name": "Loopback Scanner", "vendor": "Moorage tests", "version": "1.0"},
        "severity": "Critical" if any(v["severity"] == "Critical" for v in vulns) else "Low",
        "vulnerabilities": vulns,
    }


class AdapterServer:
    """The adapter under uvicorn on 127.0.0.1 (a thread of the test process)."""

    def __init__(self, adapter: Adapter, port: int) -> None:
        self.adapter = adapter
        self.port = port
        config = uvicorn.Config(
            adapter.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AdapterServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test scanner adapter did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
