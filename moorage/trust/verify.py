"""The one entry point: verify a signature artifact against a compiled trust configuration."""

from __future__ import annotations

import logging

from . import cosign, notation
from .config import CompiledTrust
from .model import (
    MAX_SIGNATURE_MANIFEST,
    ArtifactForm,
    FetchBlob,
    SignatureArtifact,
    SignatureKind,
    SignatureResult,
    Subject,
)

log = logging.getLogger(__name__)


async def verify_signature(
    subject: Subject, artifact: SignatureArtifact, fetch_blob: FetchBlob, trust: CompiledTrust
) -> list[SignatureResult]:
    """Verify every signature the artifact carries against *subject*; never raises.

    A cosign ``.sig`` manifest may hold several signatures (one per layer), so this returns one
    result per signature: one for a bundle or Notation referrer, one or more for a ``.sig`` tag.
    Failures come back as ``verified=False`` results whose ``reason`` names the failed check.
    """
    kind = SignatureKind.NOTATION if artifact.form == ArtifactForm.NOTATION else SignatureKind.COSIGN
    if len(artifact.manifest) > MAX_SIGNATURE_MANIFEST:
        return [SignatureResult(kind, artifact.digest, False, "signature manifest is too large")]
    try:
        if artifact.form == ArtifactForm.COSIGN_TAG:
            return await cosign.verify_tag_artifact(subject, artifact, fetch_blob, trust)
        if artifact.form == ArtifactForm.SIGSTORE_BUNDLE:
            from . import bundle  # sigstore (~1.5 s of CPU to import): only bundles need it

            return [await bundle.verify_bundle_artifact(subject, artifact, fetch_blob, trust)]
        return [await notation.verify_notation_artifact(subject, artifact, fetch_blob, trust)]
    except Exception as exc:  # a bug or a library surprise must not take the caller down
        log.exception("signature verification failed unexpectedly for %s", artifact.digest)
        return [
            SignatureResult(
                kind, artifact.digest, False, f"verification error: {type(exc).__name__}: {str(exc)[:200]}"
            )
        ]
