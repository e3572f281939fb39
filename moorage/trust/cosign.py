"""cosign signatures in the tag scheme: ``sha256-<hex>.sig`` manifests of simple-signing layers.

Each layer is one signature: its blob is the simple-signing payload (``{"critical": {"identity":
{"docker-reference"}, "image": {"docker-manifest-digest"}, "type": "cosign container image
signature"}, "optional": ...}``) and its annotations carry the base64 signature over the payload
bytes, and optionally a certificate, its chain and a Rekor SET (``dev.sigstore.cosign/bundle``).

A signature verifies when:
- a configured key verifies it (key-based), or its certificate chains to a Fulcio CA of the trust
  root at the Rekor entry's integrated time, carries the code-signing EKU and an SCT (when the
  trust root lists CT logs), and names a configured keyless identity (keyless);
- the payload says it is a cosign container image signature for exactly this manifest digest;
- a Rekor entry, when required (keyless always; key-based with ``require_tlog_for_keys``) or
  present while a Rekor key is configured, verifies and names this signature, payload and signer.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from .config import CompiledTrust
from .keys import PublicKey, check_key, key_description, verify_message
from .model import (
    MAX_LAYERS,
    MAX_PAYLOAD,
    FetchBlob,
    Refused,
    SignatureArtifact,
    SignatureKind,
    SignatureResult,
    Signer,
    Subject,
)
from .sigstore_root import VerifiedEntry, verify_code_signing_chain
from .util import (
    b64decode,
    check_digest,
    load_object,
    load_pem_certificates,
    oidc_issuer_of,
    sans_of,
    subject_of,
)

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
COSIGN_TYPE = "cosign container image signature"


def _fail(artifact: SignatureArtifact, reason: str, layer: str | None = None, **kw: Any) -> SignatureResult:
    prefix = f"layer {layer[:19]}…: " if layer else ""
    return SignatureResult(SignatureKind.COSIGN, artifact.digest, False, prefix + reason, **kw)


async def verify_tag_artifact(
    subject: Subject, artifact: SignatureArtifact, fetch_blob: FetchBlob, trust: CompiledTrust
) -> list[SignatureResult]:
    """One result per simple-signing layer of a ``.sig`` manifest (at least one result)."""
    try:
        manifest = load_object(artifact.manifest, "signature manifest", 256 * 1024)
    except Refused as exc:
        return [_fail(artifact, str(exc))]
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        return [_fail(artifact, "signature manifest has no layers")]
    if len(layers) > MAX_LAYERS:
        return [_fail(artifact, f"signature manifest has more than {MAX_LAYERS} layers")]
    results = []
    for layer in layers:
        results.append(await _verify_layer(subject, artifact, layer, fetch_blob, trust))
    return results


async def _verify_layer(
    subject: Subject,
    artifact: SignatureArtifact,
    layer: Any,
    fetch_blob: FetchBlob,
    trust: CompiledTrust,
) -> SignatureResult:
    if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
        return _fail(artifact, "signature layer is not a descriptor")
    digest: str = layer["digest"][:200]
    if layer.get("mediaType") != SIMPLE_SIGNING:
        return _fail(
            artifact,
            f"not a cosign simple-signing payload (media type {str(layer.get('mediaType'))[:80]!r})",
            digest,
        )
    annotations = layer.get("annotations")
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        return _fail(artifact, "signature layer has no string annotations", digest)
    size = layer.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_PAYLOAD:
        return _fail(artifact, f"payload size must be 0..{MAX_PAYLOAD} bytes", digest)
    try:
        payload = await fetch_blob(digest, MAX_PAYLOAD)
    except Exception as exc:  # the caller's storage errors, whatever their type
        return _fail(artifact, f"cannot read the payload: {str(exc)[:200]}", digest)
    try:
        check_digest(payload, digest, "payload")
        return verify_simple_signing(subject, artifact.digest, payload, annotations, trust)
    except Refused as exc:
        return _fail(artifact, str(exc), digest)


def verify_simple_signing(
    subject: Subject,
    signature_digest: str,
    payload: bytes,
    annotations: dict[str, str],
    trust: CompiledTrust,
) -> SignatureResult:
    """Verify one simple-signing payload and its annotations; raise :class:`Refused`."""
    if SIGNATURE_ANNOTATION not in annotations:
        raise Refused(f"no {SIGNATURE_ANNOTATION} annotation")
    signature = b64decode(annotations[SIGNATURE_ANNOTATION], "signature", limit=8192)
    if not signature:
        raise Refused("empty signature")

    matched: tuple[str, ...] = ()
    signer: Signer
    signer_key: PublicKey | None = None
    signer_pem: bytes | None = None
    leaf: x509.Certificate | None = None
    for name, key in trust.keys:
        if verify_message(key, signature, payload):
            matched += (name,)
            signer_key = key
    if matched:
        assert signer_key is not None
        signer = Signer(key=", ".join(matched), subject=key_description(signer_key))
    elif CERTIFICATE_ANNOTATION in annotations:
        signer_pem = annotations[CERTIFICATE_ANNOTATION].encode()
        leaf = load_pem_certificates(signer_pem, "signing certificate", limit=1)[0]
        try:
            signer_key = check_key(leaf.public_key())
        except ValueError as exc:
            raise Refused(f"signing certificate key: {exc}") from None
        if not verify_message(signer_key, signature, payload):
            raise Refused("signature does not verify with its certificate's key")
        signer = Signer(subject=subject_of(leaf), san=sans_of(leaf), issuer=oidc_issuer_of(leaf))
    elif not trust.keys:
        raise Refused("no cosign public key is configured and the signature carries no certificate")
    else:
        raise Refused(f"signature does not verify with any configured key ({len(trust.keys)} tried)")

    claims = _check_payload(payload, subject.digest)

    chain: list[x509.Certificate] = []
    if leaf is not None and CHAIN_ANNOTATION in annotations:
        chain = load_pem_certificates(annotations[CHAIN_ANNOTATION], "certificate chain")
    pki_failure = None
    if leaf is not None and trust.pki:
        matched, pki_failure = _private_pki(leaf, chain, trust)
        if matched:
            leaf = None  # a private-CA certificate: no Fulcio, no transparency log needed

    entry: VerifiedEntry | None = None
    bundle = annotations.get(BUNDLE_ANNOTATION)
    warnings: tuple[str, ...] = ()
    root = trust.sigstore
    if leaf is not None and root is None:
        raise Refused(pki_failure or "certificate signature, but no Sigstore trust root or private CA is configured")
    needs_log = leaf is not None or trust.config.require_tlog_for_keys
    if bundle is not None and root is not None and root.rekor_keys:
        entry = root.verify_set(
            bundle,
            signature=signature,
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            signer_pem=signer_pem,
            signer_key=signer_key,
        )
    elif needs_log:
        if bundle is None:
            raise Refused("no Rekor entry (dev.sigstore.cosign/bundle) and the trust policy needs one")
        raise Refused("a Rekor entry is required but no Rekor key is configured in the trust root")
    elif bundle is not None:
        warnings = ("Rekor entry present but not checked: no Rekor key is configured",)

    if leaf is not None:
        assert entry is not None and root is not None
        built = root.verify_fulcio_chain(leaf, chain, entry.integrated_time)
        root.verify_sct(leaf, built)
        if not trust.keyless:
            raise Refused("keyless signature, but no keyless identity is configured")
        from . import identity  # sigstore's policy types: keyless signatures only

        matched = identity.matching(trust.keyless, leaf)
        if not matched:
            raise Refused(
                f"certificate identity {list(signer.san)} / issuer {signer.issuer!r} "
                "matches no configured keyless identity"
            )

    how = "keyless certificate" if leaf is not None else "private CA certificate" if signer_pem else "key"
    checked = f"verified with {how}; payload names {subject.digest}"
    if entry is not None:
        checked += f"; Rekor entry {entry.log_index} verified"
    return SignatureResult(
        SignatureKind.COSIGN,
        signature_digest,
        True,
        checked,
        signer=signer,
        signed_at=entry.integrated_time if entry else None,
        docker_reference=claims.get("docker-reference"),
        matched=matched,
        warnings=warnings,
    )


def _private_pki(
    leaf: x509.Certificate, chain: list[x509.Certificate], trust: CompiledTrust
) -> tuple[tuple[str, ...], str | None]:
    """Names of the configured private CAs that accept *leaf* now (and the last failure)."""
    names: list[str] = []
    failure = None
    now = datetime.now(UTC)
    sans = sans_of(leaf)
    for spec, roots, intermediates in trust.pki:
        try:
            verify_code_signing_chain(leaf, chain + intermediates, roots, now, private_pki=True)
        except Refused as exc:
            failure = f"private CA {spec.name!r}: {exc}"
            continue
        if spec.subject_email and spec.subject_email not in sans:
            failure = f"private CA {spec.name!r}: certificate is not for {spec.subject_email!r}"
            continue
        if spec.subject_hostname and spec.subject_hostname not in sans:
            failure = f"private CA {spec.name!r}: certificate is not for {spec.subject_hostname!r}"
            continue
        names.append(spec.name)
    return tuple(names), failure


def _check_payload(payload: bytes, expected_digest: str) -> dict[str, str]:
    doc = load_object(payload, "simple-signing payload", MAX_PAYLOAD)
    critical = doc.get("critical")
    if not isinstance(critical, dict):
        raise Refused("payload has no 'critical' section")
    if critical.get("type") != COSIGN_TYPE:
        raise Refused(f"payload type is {json.dumps(critical.get('type'))[:80]}, not {COSIGN_TYPE!r}")
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(signed, str):
        raise Refused("payload has no critical.image.docker-manifest-digest")
    if signed != expected_digest:
        raise Refused(f"payload signs {signed[:80]}, not {expected_digest}")
    ident = critical.get("identity")
    ref = ident.get("docker-reference") if isinstance(ident, dict) else None
    return {"docker-reference": ref} if isinstance(ref, str) else {}
