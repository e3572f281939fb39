"""Content trust at run time: verification of stored signature artifacts, the trust report of a
manifest, and the cached pull decision the signature rule asks on the hot path.

**What a pull costs.** The rule (rule.py) asks :meth:`TrustService.decide` for every manifest
GET/HEAD of a repository under a signed-only policy. A decision is cached in this process per
(repository, digest) together with the *generation* it was made under; a cache hit costs a few
dictionary look-ups (measured in bench/trust_pull.py). The generation is a counter in the
database (trust_state) raised by every change that can alter a verdict: a trust-configuration
or policy change, a signature found, verified or removed. Each process re-reads it at most
every :data:`REFRESH_SECONDS` (one indexed read) and drops its cached decisions when it moved —
so a change made on one node reaches the decisions of every node within that bound. Changes
made in this process apply at once (:meth:`changed`).

**What a miss costs.** The signatures of the digest and their stored results for the current
trust-configuration version are read; signatures without a result yet (just pushed, or the
configuration just changed and the background re-verification has not reached them) are
verified here, in memory, and remembered per (artifact, version) — so removing a key takes
effect at once and adding one never blocks pulls while the jobs catch up. Only the jobs write
results (jobs.py): a pull never writes.

**Where bytes come from.** Signature manifests from the database, their blobs from the
registry's own storage, only when linked into the repository and within the phase-1 bounds;
never from the network.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from ..oci.digest import Digest, InvalidDigest
from ..oci.names import namespace_of
from ..services.context import ServiceContext
from ..storage.base import blob_path
from . import queries as q
from .discover import NOTATION_ARTIFACT_TYPE, SIGSTORE_BUNDLE_TYPES
from .model import (
    ArtifactForm,
    SignatureArtifact,
    SignatureKind,
    SignatureResult,
    Signer,
    Subject,
    TrustConfig,
    TrustConfigError,
    TrustPolicy,
    Verdict,
)
from .policy import _reference_ok, verdict
from .settings import (
    SYSTEM,
    NamespaceData,
    config_version,
    effective_config,
    expand_matched,
)

if TYPE_CHECKING:
    from .config import CompiledTrust

log = logging.getLogger("moorage.trust")

# How stale a node's view of trust configuration, policies and signatures may be: every node
# re-reads the generation at most this often (docs/trust.md, bench/trust_pull.py).
REFRESH_SECONDS = 2.0
DECISION_CACHE = 50_000  # (repository, digest) decisions per process
MEMO_SIZE = 10_000  # (artifact, version) verifications made in memory per process
INLINE_LIMIT = 16  # signatures of one digest a pull may verify in memory on a miss
PARENT_LIMIT = 16  # indexes of a child manifest consulted for a signature
SIGNATURE_TYPES = frozenset({NOTATION_ARTIFACT_TYPE, *SIGSTORE_BUNDLE_TYPES})
# cosign's attachments: signatures, attestations and SBOMs stored under a tag named after the
# digest they belong to (never blocked: clients read them to verify).
ATTACHMENT_TAG = re.compile(r"^(?:sha256|sha512)-[0-9a-f]{64,128}\.(?:sig|att|sbom)\Z")

Status = Literal["verified", "untrusted", "failed", "pending"]


def repository_namespace(repository: str) -> str:
    """The namespace whose trust configuration a repository uses (top-level ones: ``*``)."""
    return namespace_of(repository) or SYSTEM


@dataclass(frozen=True, slots=True)
class TrustState:
    """What this process knows of the shared state (re-read when ``generation`` moves)."""

    generation: int
    policies: dict[str, q.PolicyRow]
    versions: dict[str, int]

    def policy_for(self, repository: str) -> q.PolicyRow | None:
        """The repository's own policy, else its organization's, else the system default."""
        if "/" not in repository:  # top level: only the system default (a bare name is an org)
            return self.policies.get(SYSTEM)
        found = self.policies.get(repository) or self.policies.get(repository.split("/", 1)[0])
        return found if found is not None else self.policies.get(SYSTEM)

    def version_of(self, repository: str) -> str:
        return config_version(self.versions, repository_namespace(repository))


@dataclass(frozen=True, slots=True)
class SignatureView:
    """One signature of a manifest, as the API and UI show it."""

    artifact_id: int
    digest: str  # the signature manifest
    form: str
    tag: str | None
    position: int
    kind: str
    status: Status
    verified: bool
    reason: str
    signer: dict[str, Any] | None
    matched: tuple[str, ...]
    warnings: tuple[str, ...]
    signed_at: datetime | None
    docker_reference: str | None
    verified_at: datetime | None

    @property
    def key(self) -> str | None:
        """The trust entry that accepted it (key or identity name, ``ca:STORE``)."""
        return self.matched[0] if self.matched else None

    @property
    def signer_text(self) -> str | None:
        s = self.signer or {}
        san = ", ".join(s.get("san") or ())
        if san:
            return f"{san} (issuer {s['issuer']})" if s.get("issuer") else san
        if s.get("key"):
            return f"key {s['key']}" + (f" ({s['subject']})" if s.get("subject") else "")
        if s.get("subject"):
            return str(s["subject"])
        return None


@dataclass(frozen=True, slots=True)
class TrustReport:
    repository: str
    digest: str
    verdict: Verdict
    policy: q.PolicyRow | None  # the policy that applies (None: none configured)
    enforced: bool
    signatures: tuple[SignatureView, ...]
    config_version: str
    via_index: str | None = None  # trusted through a signed index that lists this manifest


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    generation: int
    policy: str = ""
    message: str = ""
    missing: tuple[str, ...] = ()
    verdict: str = ""


def signer_dict(signer: Signer | None) -> dict[str, Any] | None:
    if signer is None:
        return None
    return {
        "key": signer.key,
        "subject": signer.subject,
        "san": list(signer.san),
        "issuer": signer.issuer,
    }


def result_row(r: SignatureResult) -> dict[str, Any]:
    """A SignatureResult as stored in trust_results."""
    return {
        "kind": str(r.kind),
        "verified": r.verified,
        "reason": r.reason[:2000],
        "signer": signer_dict(r.signer),
        "matched": list(r.matched),
        "warnings": [w[:500] for w in r.warnings[:20]],
        "signed_at": r.signed_at,
        "docker_reference": r.docker_reference[:512] if r.docker_reference else None,
    }


def trust_policy(policy: q.PolicyRow | None) -> TrustPolicy:
    if policy is None:
        return TrustPolicy()
    return TrustPolicy(
        signers=policy.signers,
        require_all=policy.require_all,
        docker_reference=policy.docker_reference,
        name=policy.target,
    )


def _counts(view: SignatureView, policy: TrustPolicy) -> bool:
    """Whether a verified signature satisfies the policy (a signer it names, the reference)."""
    result = _as_result(view)
    if not _reference_ok(result, policy.docker_reference):
        return False
    return not policy.signers or bool(set(result.matched) & set(policy.signers))


def _as_result(view: SignatureView) -> SignatureResult:
    return SignatureResult(
        SignatureKind(view.kind),
        view.digest,
        view.verified,
        view.reason,
        signed_at=view.signed_at,
        docker_reference=view.docker_reference,
        matched=expand_matched(view.matched),
    )


@dataclass(slots=True)
class _Collected:
    """What one trust report needs from the database, read in one go (then verified outside
    any connection)."""

    repository_id: int
    subject: q.ManifestInfo
    artifacts: list[q.ArtifactRow]
    stored: dict[tuple[int, str], list[q.ResultRow]] = field(default_factory=dict)


class SubjectMissing(Exception):
    """A signature's subject is not in its repository: its verification job retries later."""


class TrustService:
    """One per process (built by the capability's setup)."""

    def __init__(self, ctx: ServiceContext, public_host: str | None = None) -> None:
        self.ctx = ctx
        self.public_host = public_host  # Notation registry scopes: "<host>/<repository>"
        self.refresh_seconds = REFRESH_SECONDS
        self._state: TrustState | None = None
        self._checked_at = float("-inf")
        self._refresh_lock = asyncio.Lock()
        self._decisions: OrderedDict[tuple[str, str], Decision] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[Decision]] = {}
        self._compiled: OrderedDict[tuple[str, str], CompiledTrust | TrustConfigError] = (
            OrderedDict()
        )
        # keyed by (artifact id, signature digest, version): SQLite may reuse a deleted row's id
        self._memo: OrderedDict[tuple[int, str, str], list[SignatureResult]] = OrderedDict()

    # --- shared state -----------------------------------------------------------------------

    async def state(self) -> TrustState:
        """The current state, re-read when older than the refresh interval."""
        state = self._state
        if state is not None and time.monotonic() - self._checked_at < self.refresh_seconds:
            return state
        async with self._refresh_lock:
            if self._state is not None and time.monotonic() - self._checked_at < self.refresh_seconds:
                return self._state
            async with self.ctx.engine.connect() as conn:
                generation = await q.generation(conn)
                if self._state is None or generation != self._state.generation:
                    policies = await q.all_policies(conn)
                    versions = await q.namespace_versions(conn)
                    self._state = TrustState(generation, policies, versions)
                    self._decisions.clear()
            self._checked_at = time.monotonic()
            return self._state

    def changed(self) -> None:
        """Something changed in this process: re-read the shared state on the next request."""
        self._checked_at = float("-inf")

    # --- trust configuration ---------------------------------------------------------------

    async def load_config(self, conn: AsyncConnection, namespace: str) -> tuple[str, TrustConfig]:
        """The effective configuration of *namespace* and its version, read together (the
        versions first: a configuration newer than its label is never stored)."""
        names = [SYSTEM] if namespace == SYSTEM else [SYSTEM, namespace]
        rows = await q.namespace_rows(conn, names)
        versions = {n: r.version for n, r in rows.items()}
        version = config_version(versions, namespace)
        entries = await q.entries(conn, names)
        star = NamespaceData(rows.get(SYSTEM), tuple(e for e in entries if e.namespace == SYSTEM))
        own = (
            NamespaceData(rows.get(namespace), tuple(e for e in entries if e.namespace == namespace))
            if namespace != SYSTEM
            else None
        )
        return version, effective_config(star, own, version)

    async def compiled(
        self, conn: AsyncConnection, namespace: str
    ) -> tuple[str, CompiledTrust | TrustConfigError]:
        version, config = await self.load_config(conn, namespace)
        key = (namespace, version)
        found = self._compiled.get(key)
        if found is None:
            # Imported on first use: compiling brings cryptography's X.509 machinery and the
            # sigstore trust root, which a registry with no signatures to verify never needs.
            from .config import compile_trust

            try:
                found = compile_trust(config)
            except TrustConfigError as exc:  # refused when saved; a hand-edited row, say
                log.error("trust configuration of %s is unusable: %s", namespace, exc)
                found = exc
            self._compiled[key] = found
            while len(self._compiled) > 64:
                self._compiled.popitem(last=False)
        return version, found

    # --- verification ------------------------------------------------------------------------

    def _fetcher(self, repository_id: int) -> Callable[[str, int], Awaitable[bytes]]:
        async def fetch(digest: str, limit: int) -> bytes:
            try:
                d = Digest.parse(digest)
            except InvalidDigest as exc:
                raise ValueError(f"invalid digest {digest[:80]!r}: {exc}") from None
            async with self.ctx.engine.connect() as conn:
                size = await q.linked_blob_size(conn, repository_id, str(d))
            if size is None:
                raise LookupError(f"blob {d} is not in this repository")
            if size > limit:
                raise ValueError(f"blob {d} is {size} bytes, more than {limit}")
            buf = bytearray()
            async for chunk in self.ctx.storage.reader(blob_path(d.algorithm, d.hex), 0, size):
                buf += chunk
                if len(buf) > limit:
                    raise ValueError(f"blob {d} is larger than {limit} bytes")
            return bytes(buf)

        return fetch

    def _scope(self, repository: str) -> str:
        return f"{self.public_host}/{repository}" if self.public_host else repository

    async def verify(
        self,
        artifact: q.ArtifactRow,
        subject: q.ManifestInfo,
        signature_manifest: bytes,
        trust: CompiledTrust | TrustConfigError,
    ) -> list[SignatureResult]:
        """Verify one artifact (never raises; a failure is a result with its reason)."""
        kind = SignatureKind.NOTATION if artifact.form == ArtifactForm.NOTATION else SignatureKind.COSIGN
        if isinstance(trust, TrustConfigError):
            return [SignatureResult(kind, artifact.signature_digest, False, f"trust configuration is unusable: {trust}")]
        try:
            form = ArtifactForm(artifact.form)
        except ValueError:
            return [SignatureResult(kind, artifact.signature_digest, False, f"unknown form {artifact.form!r}")]
        from .verify import verify_signature  # sigstore: imported when first needed

        return await verify_signature(
            Subject(subject.digest, subject.media_type, subject.size, self._scope(artifact.repository)),
            SignatureArtifact(artifact.signature_digest, signature_manifest, form, artifact.tag),
            self._fetcher(artifact.repository_id),
            trust,
        )

    async def verify_and_store(self, artifact_id: int) -> dict[str, Any]:
        """Verify an artifact with the current configuration and store the results (jobs)."""
        async with self.ctx.engine.connect() as conn:
            a = await q.artifact(conn, artifact_id)
            if a is None:
                return {"artifact": artifact_id, "skipped": "the signature is gone"}
            version, trust = await self.compiled(conn, repository_namespace(a.repository))
            subject = await q.manifest_info(conn, a.repository_id, a.subject_digest, payload=False)
            sig = await q.manifest_info(conn, a.repository_id, a.signature_digest)
        if sig is None:
            return {"artifact": artifact_id, "skipped": "the signature manifest is gone"}
        if subject is None:  # pushed before the image: the job is retried (with backoff)
            raise SubjectMissing(
                f"the signed manifest {a.subject_digest} is not in {a.repository} (yet)"
            )
        results = await self.verify(a, subject, sig.payload, trust)
        async with self.ctx.write_engine.begin() as conn:
            if await q.artifact(conn, artifact_id) is None:
                return {"artifact": artifact_id, "skipped": "the signature is gone"}
            await q.replace_results(conn, artifact_id, version, [result_row(r) for r in results])
            await q.bump_generation(conn)
        self._remember((artifact_id, a.signature_digest, version), results)
        self.changed()
        return {
            "artifact": artifact_id,
            "repository": a.repository,
            "subject": a.subject_digest,
            "config_version": version,
            "verified": sum(r.verified for r in results),
            "failed": sum(not r.verified for r in results),
        }

    def _remember(self, key: tuple[int, str, str], results: list[SignatureResult]) -> None:
        self._memo[key] = results
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)

    # --- reports -----------------------------------------------------------------------------

    async def _collect(
        self, conn: AsyncConnection, repository_id: int, subject: q.ManifestInfo, version: str
    ) -> _Collected:
        artifacts = await q.artifacts_for_subjects(conn, repository_id, [subject.digest], limit=200)
        stored = await q.results(conn, [a.id for a in artifacts], [version])
        return _Collected(repository_id, subject, artifacts, stored)

    async def _views(
        self, c: _Collected, version: str, inline: bool
    ) -> list[SignatureView]:
        """The signatures of a collected subject, verifying in memory those without a stored
        result (up to INLINE_LIMIT, when *inline*)."""
        views: list[SignatureView] = []
        budget = INLINE_LIMIT if inline else 0
        trust: CompiledTrust | TrustConfigError | None = None
        for a in c.artifacts:
            rows = c.stored.get((a.id, version))
            if rows is not None:
                views += [_view_of_row(a, r) for r in rows]
                continue
            results = self._memo.get((a.id, a.signature_digest, version))
            if results is None and budget > 0:
                budget -= 1
                async with self.ctx.engine.connect() as conn:
                    sig = await q.manifest_info(conn, c.repository_id, a.signature_digest)
                    if trust is None:
                        _, trust = await self.compiled(conn, repository_namespace(a.repository))
                if sig is not None:
                    results = await self.verify(a, c.subject, sig.payload, trust)
                    self._remember((a.id, a.signature_digest, version), results)
            if results is None:
                views.append(_pending(a))
            else:
                views += [_view_of_result(a, i, r) for i, r in enumerate(results)]
        return views

    def _report(
        self,
        repository: str,
        digest: str,
        views: list[SignatureView],
        state: TrustState,
        version: str,
    ) -> TrustReport:
        policy = state.policy_for(repository)
        tp = trust_policy(policy)
        done = [v for v in views if v.status != "pending"]
        v = verdict([_as_result(x) for x in done], tp)
        pending = len(views) - len(done)
        if pending and v.status != "trusted":
            note = f"{pending} signature(s) not verified yet"
            v = Verdict(v.status if done else "untrusted", f"{v.reason}; {note}" if done else note, v.missing, v.accepted)
        final = tuple(_with_status(x, tp) for x in views)
        return TrustReport(
            repository,
            digest,
            v,
            policy,
            bool(policy and policy.require_signature),
            final,
            version,
        )

    async def report(
        self, repository: str, digest: str, *, inline: bool = True, parents: bool = False
    ) -> TrustReport | None:
        """Every signature of *digest* in *repository* and the verdict under the policy that
        applies (None when the manifest is not there). With *parents*, an untrusted manifest
        listed by a trusted index is reported trusted through it."""
        state = await self.state()
        version = state.version_of(repository)
        async with self.ctx.engine.connect() as conn:
            repo_id = await q.repository_id(conn, repository)
            if repo_id is None:
                return None
            subject = await q.manifest_info(conn, repo_id, digest, payload=False)
            if subject is None:
                return None
            collected = await self._collect(conn, repo_id, subject, version)
            parent_digests = await q.parent_indexes(conn, repo_id, digest, PARENT_LIMIT) if parents else []
        views = await self._views(collected, version, inline)
        report = self._report(repository, digest, views, state, version)
        if report.verdict.status == "trusted" or not parent_digests:
            return report
        for parent in parent_digests:
            up = await self.report(repository, parent, inline=inline, parents=False)
            if up is not None and up.verdict.status == "trusted":
                v = Verdict("trusted", f"listed by the signed index {parent} ({up.verdict.reason})", accepted=up.verdict.accepted)
                return TrustReport(
                    repository, digest, v, report.policy, report.enforced, report.signatures, version, parent
                )
        return report

    async def reports_for(
        self, repository: str, digests: list[str]
    ) -> dict[str, TrustReport]:
        """Reports of many digests from stored results only (listings: no verification)."""
        state = await self.state()
        version = state.version_of(repository)
        out: dict[str, TrustReport] = {}
        async with self.ctx.engine.connect() as conn:
            repo_id = await q.repository_id(conn, repository)
            if repo_id is None:
                return out
            arts = await q.artifacts_for_subjects(conn, repo_id, list(dict.fromkeys(digests)), limit=2000)
            stored = await q.results(conn, [a.id for a in arts], [version])
        for d in dict.fromkeys(digests):
            views: list[SignatureView] = []
            for a in (x for x in arts if x.subject_digest == d):
                rows = stored.get((a.id, version))
                memo = self._memo.get((a.id, a.signature_digest, version))
                if rows is not None:
                    views += [_view_of_row(a, r) for r in rows]
                elif memo is not None:
                    views += [_view_of_result(a, i, r) for i, r in enumerate(memo)]
                else:
                    views.append(_pending(a))
            out[d] = self._report(repository, d, views, state, version)
        return out

    # --- the pull decision (hot path) ---------------------------------------------------------

    async def decide(self, repository: str, digest: str) -> Decision | None:
        """None when no signed-only policy covers the repository; else the cached decision."""
        state = self._state
        if state is None or time.monotonic() - self._checked_at >= self.refresh_seconds:
            state = await self.state()
        policy = state.policy_for(repository)
        if policy is None or not policy.require_signature:
            return None
        key = (repository, digest)
        hit = self._decisions.get(key)
        if hit is not None and hit.generation == state.generation:
            return hit
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            decision = await self._decide(repository, digest, policy, state)
            future.set_result(decision)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._inflight.pop(key, None)
        if state.generation == (self._state.generation if self._state else None):
            self._decisions[key] = decision
            while len(self._decisions) > DECISION_CACHE:
                self._decisions.popitem(last=False)
        return decision

    async def _decide(
        self, repository: str, digest: str, policy: q.PolicyRow, state: TrustState
    ) -> Decision:
        gen = state.generation
        async with self.ctx.engine.connect() as conn:
            repo_id = await q.repository_id(conn, repository)
            info = await q.manifest_info(conn, repo_id, digest, payload=False) if repo_id else None
            if repo_id is None or info is None:
                return Decision(True, gen)  # nothing to serve: the service answers 404 itself
            if info.subject_digest is not None or await q.is_signature_manifest(conn, repo_id, digest):
                return Decision(True, gen, policy.target, "a signature or other referrer")
            if any(ATTACHMENT_TAG.match(t) for t in await q.tags_of(conn, repo_id, info.id)):
                return Decision(True, gen, policy.target, "a cosign attachment")
        report = await self.report(repository, digest, inline=True, parents=True)
        if report is None:
            return Decision(True, gen)
        v = report.verdict
        if v.status == "trusted":
            return Decision(True, gen, policy.target, v.reason, verdict=v.status)
        what = f"; missing: {', '.join(v.missing)}" if v.missing else ""
        message = (
            f"content trust policy {policy.target!r} refuses {digest}: the image is {v.status} "
            f"({v.reason}){what}"
        )
        return Decision(False, gen, policy.target, message, v.missing, v.status)


def _pending(a: q.ArtifactRow) -> SignatureView:
    kind = SignatureKind.NOTATION if a.form == ArtifactForm.NOTATION else SignatureKind.COSIGN
    return SignatureView(
        a.id, a.signature_digest, a.form, a.tag, 0, str(kind), "pending", False,
        "not verified yet", None, (), (), None, None, None,
    )  # fmt: skip


def _view_of_row(a: q.ArtifactRow, r: q.ResultRow) -> SignatureView:
    return SignatureView(
        a.id, a.signature_digest, a.form, a.tag, r.position, r.kind,
        "verified" if r.verified else "failed", r.verified, r.reason, r.signer, r.matched,
        r.warnings, r.signed_at, r.docker_reference, r.verified_at,
    )  # fmt: skip


def _view_of_result(a: q.ArtifactRow, i: int, r: SignatureResult) -> SignatureView:
    return SignatureView(
        a.id, a.signature_digest, a.form, a.tag, i, str(r.kind),
        "verified" if r.verified else "failed", r.verified, r.reason, signer_dict(r.signer),
        r.matched, r.warnings, r.signed_at, r.docker_reference, None,
    )  # fmt: skip


def _with_status(view: SignatureView, policy: TrustPolicy) -> SignatureView:
    """verified (counts for the policy) / untrusted (valid, but not a signer the policy names,
    or another reference) / failed (with why) / pending."""
    if view.status == "verified" and not _counts(view, policy):
        return replace(view, status="untrusted")
    return view
