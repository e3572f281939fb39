"""The verdict on an image from its signatures' results and a policy (pure and cheap).

Results are cached per (subject, signature, trust-config version); the verdict is recomputed from
them whenever the policy changes, so a policy edit never needs re-verification.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from .model import SignatureKind, SignatureResult, TrustPolicy, Verdict

ANY_SIGNATURE = "a verified signature"


def _reference_ok(result: SignatureResult, pattern: str | None) -> bool:
    if pattern is None or result.kind != SignatureKind.COSIGN:
        return True
    ref = result.docker_reference
    if ref is None:
        return False
    return ref == pattern or fnmatchcase(ref, pattern)


def verdict(results: Iterable[SignatureResult], policy: TrustPolicy) -> Verdict:
    """trusted / untrusted / unsigned, with the signers still missing and the signatures that counted."""
    results = list(results)
    required = tuple(dict.fromkeys(policy.signers))
    if not results:
        return Verdict("unsigned", "the image has no signatures", missing=required or (ANY_SIGNATURE,))
    valid = [r for r in results if r.verified and _reference_ok(r, policy.docker_reference)]
    ref_note = ""
    if policy.docker_reference and any(r.verified for r in results) and not valid:
        ref_note = f" (verified signatures sign another reference than {policy.docker_reference!r})"
    if not required:
        if valid:
            return Verdict("trusted", "a verified signature", accepted=tuple(r.digest for r in valid))
        return Verdict("untrusted", "no signature verified" + ref_note, missing=(ANY_SIGNATURE,))
    by_signer = {name: [r.digest for r in valid if name in r.matched] for name in required}
    satisfied = [name for name, digests in by_signer.items() if digests]
    accepted = tuple(dict.fromkeys(d for name in satisfied for d in by_signer[name]))
    if policy.require_all:
        missing = tuple(name for name in required if name not in satisfied)
        if not missing:
            return Verdict("trusted", f"signed by all of {', '.join(required)}", accepted=accepted)
        return Verdict(
            "untrusted",
            f"needs verified signatures from all of {', '.join(required)}; missing {', '.join(missing)}" + ref_note,
            missing=missing,
            accepted=accepted,
        )
    if satisfied:
        return Verdict("trusted", f"signed by {', '.join(satisfied)}", accepted=accepted)
    return Verdict(
        "untrusted",
        f"needs a verified signature from one of {', '.join(required)}" + ref_note,
        missing=required,
    )
