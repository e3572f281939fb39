"""The signature rule: signed-only pulls, asked by the manifest service on every GET/HEAD.

It refuses a manifest read of an untrusted or unsigned image in a repository under a
signed-only policy with 403 ``DENIED`` naming the policy and what is missing, and records the
refusal in the audit log. What it never refuses, by protocol rather than by User-Agent:

- signatures and other referrers (a manifest with a ``subject``, any recorded signature
  manifest) and cosign attachments (``sha256-<hex>.sig/.att/.sbom`` tags and what they point
  to) — what ``cosign verify``, ``notation verify`` and oras read;
- manifest reads *by digest* by a caller with push rights on the repository — what
  ``cosign sign`` and ``notation sign`` read before they push a signature;
- blobs and the referrers API, which do not go through content rules at all.

A decision costs a cache hit in the common case (service.py explains the cache and its
staleness bound).
"""

from __future__ import annotations

from ..audit import AuditEvent, AuditLog
from ..services.rules import SIGNATURE, ManifestRead, PolicyDenied, Rule
from .service import ATTACHMENT_TAG, TrustService

DENIED_ACTION = "trust.pull.denied"


class SignatureRule(Rule):
    name = "signature"
    order = SIGNATURE

    def __init__(self, service: TrustService, audit: AuditLog | None) -> None:
        self.service = service
        self.audit = audit

    async def manifest_read(self, read: ManifestRead) -> None:
        if not read.by_digest and ATTACHMENT_TAG.match(read.reference):
            return
        decision = await self.service.decide(read.repository, read.digest)
        if decision is None or decision.allowed:
            return
        if read.by_digest and await read.requester.may("push"):
            return  # a signer reading what it signs
        if self.audit is not None:
            self.audit.record_nowait(
                AuditEvent(
                    DENIED_ACTION,
                    actor=read.requester.name,
                    actor_type=read.requester.kind  # type: ignore[arg-type]
                    if read.requester.kind in ("user", "robot", "anonymous", "system")
                    else "anonymous",
                    result="denied",
                    repository=read.repository,
                    tag=None if read.by_digest else read.reference,
                    digest=read.digest,
                    details={
                        "policy": decision.policy,
                        "verdict": decision.verdict,
                        "missing": list(decision.missing),
                    },
                )
            )
        raise PolicyDenied(decision.message, {"policy": decision.policy}, policy=decision.policy)
