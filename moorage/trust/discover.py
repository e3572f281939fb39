"""Recognise signature artifacts among pushed manifests (pure; phase 2 calls it on every push).

- cosign tag scheme: the tag ``sha256-<hex>.sig`` (``.att``/``.sbom`` are attestations and SBOMs,
  not signatures); the subject is ``sha256:<hex>``.
- Sigstore bundle referrer (cosign ``--new-bundle-format`` with OCI 1.1 referrers): a manifest
  with a ``subject`` whose ``artifactType`` is a Sigstore bundle media type. cosign marks
  attestations with ``dev.sigstore.bundle.predicateType``; only its signature predicate (or no
  such annotation) counts as a signature.
- Notation: a manifest with a ``subject`` and ``artifactType`` ``application/vnd.cncf.notary.signature``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .model import MAX_SIGNATURE_MANIFEST, ArtifactForm

NOTATION_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
SIGSTORE_BUNDLE_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
_SIG_TAG_RE = re.compile(r"^sha256-([0-9a-f]{64})\.sig\Z")


@dataclass(frozen=True, slots=True)
class Recognised:
    form: ArtifactForm
    subject_digest: str


def cosign_signature_tag(digest: str) -> str:
    """The tag cosign stores signatures of *digest* under: ``sha256:abc`` → ``sha256-abc.sig``."""
    return digest.replace(":", "-", 1) + ".sig"


def subject_of_signature_tag(tag: str) -> str | None:
    m = _SIG_TAG_RE.match(tag)
    return f"sha256:{m.group(1)}" if m else None


def recognise(manifest: bytes, tag: str | None = None) -> Recognised | None:
    """Say whether a manifest (pushed under *tag*, if by tag) is a signature artifact, and of what."""
    if tag is not None:
        subject = subject_of_signature_tag(tag)
        if subject is not None:
            return Recognised(ArtifactForm.COSIGN_TAG, subject)
    if len(manifest) > MAX_SIGNATURE_MANIFEST:
        return None
    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    subject = doc.get("subject")
    if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
        return None
    artifact_type = doc.get("artifactType")
    if artifact_type is None:
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    if artifact_type == NOTATION_ARTIFACT_TYPE:
        return Recognised(ArtifactForm.NOTATION, subject["digest"])
    if artifact_type in SIGSTORE_BUNDLE_TYPES:
        annotations = doc.get("annotations")
        predicate = annotations.get(PREDICATE_ANNOTATION) if isinstance(annotations, dict) else None
        if predicate is not None and predicate != COSIGN_SIGN_PREDICATE:
            return None  # an attestation (SLSA provenance, SBOM, ...), not a signature
        return Recognised(ArtifactForm.SIGSTORE_BUNDLE, subject["digest"])
    return None
