"""Content trust: cryptographic verification of cosign and Notation signatures (pure core).

Phase 2 (discovery on push, stored results, enforcement on pull, API/UI/CLI) uses this surface:

- :func:`recognise` (discover) — is a pushed manifest a signature artifact, and of which image?
- :func:`compile_trust` — parse a :class:`TrustConfig` once per configuration version
  (:class:`TrustConfigError` names a bad entry when the operator saves it).
- :func:`verify_signature` — ``await verify_signature(subject, artifact, fetch_blob, compiled)``
  returns one :class:`SignatureResult` per signature, never raises, reads blobs only through
  ``fetch_blob`` and never uses the network.
- :func:`verdict` — pure: results + :class:`TrustPolicy` → :class:`Verdict`
  (trusted / untrusted / unsigned, with what is missing). Cheap: re-run it when policy changes.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .config import CompiledTrust, TrustConfigError, compile_trust
    from .discover import Recognised, cosign_signature_tag, recognise, subject_of_signature_tag
    from .model import (
        ArtifactForm,
        CosignPKI,
        FetchBlob,
        KeylessIdentity,
        NamedKey,
        NotationTrustStore,
        SignatureArtifact,
        SignatureKind,
        SignatureResult,
        Signer,
        Subject,
        TrustConfig,
        TrustPolicy,
        Verdict,
    )
    from .policy import verdict
    from .verify import verify_signature

# Resolved on first use: every `moorage` command imports the wiring module, and so this package;
# verification brings sigstore and cryptography's X.509 machinery, which a command that
# verifies nothing should not pay.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".config": ("CompiledTrust", "TrustConfigError", "compile_trust"),
        ".discover": (
            "Recognised",
            "cosign_signature_tag",
            "recognise",
            "subject_of_signature_tag",
        ),
        ".model": (
            "ArtifactForm",
            "CosignPKI",
            "FetchBlob",
            "KeylessIdentity",
            "NamedKey",
            "NotationTrustStore",
            "SignatureArtifact",
            "SignatureKind",
            "SignatureResult",
            "Signer",
            "Subject",
            "TrustConfig",
            "TrustPolicy",
            "Verdict",
        ),
        ".policy": ("verdict",),
        ".verify": ("verify_signature",),
    },
)

__all__ = [
    "ArtifactForm",
    "CompiledTrust",
    "CosignPKI",
    "FetchBlob",
    "KeylessIdentity",
    "NamedKey",
    "NotationTrustStore",
    "Recognised",
    "SignatureArtifact",
    "SignatureKind",
    "SignatureResult",
    "Signer",
    "Subject",
    "TrustConfig",
    "TrustConfigError",
    "TrustPolicy",
    "Verdict",
    "compile_trust",
    "cosign_signature_tag",
    "recognise",
    "subject_of_signature_tag",
    "verdict",
    "verify_signature",
]
