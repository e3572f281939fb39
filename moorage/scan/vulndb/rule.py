"""The vulnerability rule: pulls of images a vulnerability policy blocks are refused with 403
``DENIED`` naming the policy and the worst findings (as docker and podman show it), and every
refusal is audited (``vulnerability.pull.denied``).

Never refused, by protocol rather than by User-Agent: referrers (a manifest with a
``subject``: signatures, SBOMs, attestations) and cosign attachment tags
(``sha256-<hex>.sig/.att/.sbom``); reads *by digest* by a caller with push rights (tools that
sign and attest must keep working); blobs and the referrers API (no content rule sees them).

Scan results come from the scanner: ``rt.services["scan.results"]`` (``await state(repository,
digest) -> (status, findings) | None``) if present, else ``rt.services["scan"]``'s ``result(digest)``
(status and findings as JSON; an index's result names its children, whose findings count and
whose scans must all be finished). Without a scanner every image counts as not scanned. A
digest's state is kept ``TTL`` seconds (a burst of pulls reads it once). Policies are read from the database at most every ``TTL`` seconds per process
(a pull is the hot path); whether a digest is a referrer is cached (manifests are immutable).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from ...audit import AuditEvent, AuditLog
from ...services.rules import VULNERABILITY, ManifestRead, PolicyDenied, Rule
from ..findings import Finding
from . import store
from .policy import VulnerabilityPolicy, allow_from_json, decide

DENIED_ACTION = "vulnerability.pull.denied"
TTL = 2.0
_ATTACHMENT = ("sha256-", "sha512-")


class ScanResults(Protocol):
    async def state(self, repository: str, digest: str) -> tuple[str, list[Finding]] | None: ...


def _row_policy(r: Any) -> VulnerabilityPolicy:
    return VulnerabilityPolicy(
        scope=r.scope,
        target=r.target,
        block_severity=r.block_severity,
        fixable_only=bool(r.fixable_only),
        block_unscanned=bool(r.block_unscanned),
        allow=allow_from_json(r.allow),
    )


class VulnerabilityRule(Rule):
    name = "vulnerability"
    order = VULNERABILITY

    def __init__(
        self, engine: AsyncEngine, services: dict[str, Any], audit: AuditLog | None
    ) -> None:
        self.engine = engine
        self.services = services
        self.audit = audit
        self._policies: dict[str, VulnerabilityPolicy] = {}
        self._loaded = float("-inf")
        self._reload = asyncio.Lock()
        self._subjects: dict[tuple[str, str], bool] = {}
        self._states: dict[str, tuple[float, tuple[str, list[Finding]] | None]] = {}

    async def _policy_for(self, repository: str) -> VulnerabilityPolicy | None:
        if time.monotonic() - self._loaded > TTL:
            # One reload for the burst of pulls that finds the policies stale together.
            async with self._reload:
                if time.monotonic() - self._loaded > TTL:
                    async with self.engine.connect() as conn:
                        rows = await store.policies(conn)
                    self._policies = {r.target: _row_policy(r) for r in rows}
                    self._loaded = time.monotonic()
        if not self._policies:
            return None
        own = self._policies.get(repository)
        if own is not None:
            return own
        return self._policies.get(repository.split("/", 1)[0]) if "/" in repository else None

    async def _is_referrer(self, repository: str, digest: str) -> bool:
        key = (repository, digest)
        hit = self._subjects.get(key)
        if hit is None:
            async with self.engine.connect() as conn:
                found, subject = await store.subject_of(conn, repository, digest)
            hit = subject is not None
            if found:
                if len(self._subjects) > 100_000:
                    self._subjects.clear()
                self._subjects[key] = hit
        return hit

    async def _scan_state(self, repository: str, digest: str) -> tuple[str, list[Finding]] | None:
        hit = self._states.get(digest)
        if hit is not None and time.monotonic() - hit[0] <= TTL:
            return hit[1]
        state = await self._read_state(repository, digest)
        if len(self._states) > 10_000:
            self._states.clear()
        self._states[digest] = (time.monotonic(), state)
        return state

    async def _read_state(self, repository: str, digest: str) -> tuple[str, list[Finding]] | None:
        results: ScanResults | None = self.services.get("scan.results")
        if results is not None:
            return await results.state(repository, digest)
        scan = self.services.get("scan")
        if scan is None or not hasattr(scan, "result"):
            return None
        r = await scan.result(digest)
        if r is None:
            return None
        inventory = getattr(r, "inventory", None)
        children = inventory.get("children") if isinstance(inventory, dict) else None
        if isinstance(children, list) and children and hasattr(scan, "results"):
            kids = await scan.results([str(c) for c in children])
            states = [kids[c].status if c in kids else None for c in children]
            if not all(st in ("done", "unsupported") for st in states):
                bad = next(st for st in states if st not in ("done", "unsupported"))
                return (bad or "pending"), []
            status = "done" if "done" in states else "unsupported"
            docs = [f for c in children if c in kids for f in kids[c].findings]
        else:
            status, docs = r.status, list(r.findings or [])
        return status, [Finding.from_dict(f) for f in docs if isinstance(f, dict) and f.get("id")]

    async def manifest_read(self, read: ManifestRead) -> None:
        policy = await self._policy_for(read.repository)
        if policy is None or (policy.block_severity == "none" and not policy.block_unscanned):
            return
        ref = read.reference
        if (
            not read.by_digest
            and ref.startswith(_ATTACHMENT)
            and ref.endswith((".sig", ".att", ".sbom"))
        ):
            return
        if await self._is_referrer(read.repository, read.digest):
            return
        got = await self._scan_state(read.repository, read.digest)
        status, findings = got if got is not None else (None, [])
        message = decide(policy, status, findings, datetime.now(UTC).date())
        if message is None:
            return
        if read.by_digest and await read.requester.may("push"):
            return
        if self.audit is not None:
            kind = read.requester.kind
            self.audit.record_nowait(
                AuditEvent(
                    DENIED_ACTION,
                    actor=read.requester.name,
                    actor_type=kind
                    if kind in ("user", "robot", "anonymous", "system")
                    else "anonymous",  # type: ignore[arg-type]
                    result="denied",
                    repository=read.repository,
                    tag=None if read.by_digest else ref,
                    digest=read.digest,
                    details={
                        "policy": policy.target,
                        "scan": status or "none",
                        "message": message[:500],
                    },
                )
            )
        raise PolicyDenied(
            message, {"policy": policy.target}, policy=f"vulnerability:{policy.target}"
        )
