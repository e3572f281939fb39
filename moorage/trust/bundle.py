"""cosign signatures as Sigstore bundles attached as OCI 1.1 referrers (``--new-bundle-format``).

The referrer manifest's layer is a Sigstore bundle (v0.1–v0.3). cosign signs images either as a
DSSE envelope around an in-toto statement (predicate ``https://sigstore.dev/cosign/sign/v1``,
subject = the image digest) or as a message signature over the image digest.

Keyless bundles are verified entirely by sigstore-python's ``Verifier`` built from the operator's
trusted_root.json (chain to Fulcio at the logged/timestamped time, SCT, Rekor inclusion proof and
promise, TSA timestamps, signature) with ``policy.Identity``/``AnyOf`` for the configured keyless
identities; here we only check what the bundle signs names this image.

sigstore-python 4.x only verifies certificate-based bundles, so for key-based bundles (public key
hint) we verify the DSSE signature with the configured keys ourselves. Their transparency log
entries (Rekor v1 ``dsse`` or v2 entries) are not checked in phase 1: with
``require_tlog_for_keys`` such a bundle is refused, otherwise the result carries a warning.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, InvalidBundle
from sigstore.verify import Verifier
from sigstore_models.common.v1 import HashAlgorithm

from . import identity
from .config import CompiledTrust
from .discover import COSIGN_SIGN_PREDICATE, SIGSTORE_BUNDLE_TYPES
from .keys import verify_message
from .model import (
    MAX_PAYLOAD,
    FetchBlob,
    Refused,
    SignatureArtifact,
    SignatureKind,
    SignatureResult,
    Signer,
    Subject,
)
from .util import b64decode, check_digest, load_object, oidc_issuer_of, sans_of, subject_of

IN_TOTO = "application/vnd.in-toto+json"


def _fail(artifact: SignatureArtifact, reason: str) -> SignatureResult:
    return SignatureResult(SignatureKind.COSIGN, artifact.digest, False, reason)


async def verify_bundle_artifact(
    subject: Subject, artifact: SignatureArtifact, fetch_blob: FetchBlob, trust: CompiledTrust
) -> SignatureResult:
    try:
        manifest = load_object(artifact.manifest, "bundle manifest", 256 * 1024)
        sub = manifest.get("subject")
        if not isinstance(sub, dict) or sub.get("digest") != subject.digest:
            raise Refused(f"bundle artifact's subject is not {subject.digest}")
        layers = manifest.get("layers")
        layer = next(
            (
                x
                for x in (layers if isinstance(layers, list) else [])[:8]
                if isinstance(x, dict) and x.get("mediaType") in SIGSTORE_BUNDLE_TYPES
            ),
            None,
        )
        if layer is None or not isinstance(layer.get("digest"), str):
            raise Refused("bundle artifact has no Sigstore bundle layer")
        size = layer.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_PAYLOAD:
            raise Refused(f"bundle size must be 1..{MAX_PAYLOAD} bytes")
        try:
            raw = await fetch_blob(layer["digest"], MAX_PAYLOAD)
        except Exception as exc:
            raise Refused(f"cannot read the bundle: {str(exc)[:200]}") from None
        check_digest(raw, layer["digest"], "bundle")
        return verify_bundle(subject, artifact.digest, raw, trust)
    except Refused as exc:
        return _fail(artifact, str(exc))


def verify_bundle(subject: Subject, signature_digest: str, raw: bytes, trust: CompiledTrust) -> SignatureResult:
    """Verify a Sigstore bundle that signs *subject*; raise :class:`Refused`."""
    doc = load_object(raw, "Sigstore bundle", MAX_PAYLOAD)
    algorithm, _, hex_ = subject.digest.partition(":")
    if algorithm != "sha256":
        raise Refused("only sha256 image digests can be checked against a Sigstore bundle")
    material = doc.get("verificationMaterial")
    if not isinstance(material, dict):
        raise Refused("bundle has no verificationMaterial")
    if "publicKey" in material:
        return _verify_key_bundle(subject, signature_digest, doc, trust)

    root = trust.sigstore
    if root is None:
        raise Refused("keyless bundle, but no Sigstore trusted_root.json is configured")
    if not trust.keyless:
        raise Refused("keyless bundle, but no keyless identity is configured")
    try:
        bundle = Bundle.from_json(raw)
    except InvalidBundle as exc:
        raise Refused(f"invalid Sigstore bundle: {exc}") from None
    try:
        verifier = Verifier(trusted_root=root.trusted_root)
        policy = identity.any_of(trust.keyless)
        if "dsseEnvelope" in doc:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
            _check_statement(payload_type, payload, hex_)
        elif "messageSignature" in doc:
            verifier.verify_artifact(
                Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(hex_)), bundle, policy
            )
        else:
            raise Refused("bundle has neither a DSSE envelope nor a message signature")
    except SigstoreError as exc:
        raise Refused(f"Sigstore verification failed: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(f"Sigstore verification failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    cert = bundle.signing_certificate
    return SignatureResult(
        SignatureKind.COSIGN,
        signature_digest,
        True,
        f"Sigstore bundle verified (keyless); signs {subject.digest}",
        signer=Signer(subject=subject_of(cert), san=sans_of(cert), issuer=oidc_issuer_of(cert)),
        signed_at=_integrated_time(material),
        matched=identity.matching(trust.keyless, cert),
    )


def _integrated_time(material: dict[str, Any]) -> datetime | None:
    entries = material.get("tlogEntries")
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        value = entries[0].get("integratedTime")
        if not isinstance(value, str | int) or isinstance(value, bool):
            return None
        try:
            seconds = int(value)  # protobuf JSON writes int64 as a string
        except (TypeError, ValueError):
            return None
        if 0 < seconds < 2**40:
            return datetime.fromtimestamp(seconds, tz=UTC)
    return None


def _check_statement(payload_type: str, payload: bytes, hex_: str) -> None:
    """The in-toto statement must be cosign's signature predicate over this image digest."""
    if payload_type != IN_TOTO:
        raise Refused(f"DSSE payload type {payload_type[:80]!r} is not an in-toto statement")
    statement = load_object(payload, "in-toto statement", MAX_PAYLOAD)
    predicate = statement.get("predicateType")
    if predicate != COSIGN_SIGN_PREDICATE:
        raise Refused(f"an attestation with predicate {json.dumps(predicate)[:100]}, not a signature")
    subjects = statement.get("subject")
    for item in subjects if isinstance(subjects, list) else []:
        digests = item.get("digest") if isinstance(item, dict) else None
        if isinstance(digests, dict) and digests.get("sha256") == hex_:
            return
    raise Refused(f"the signed statement does not name sha256:{hex_}")


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _verify_key_bundle(
    subject: Subject, signature_digest: str, doc: dict[str, Any], trust: CompiledTrust
) -> SignatureResult:
    if not trust.keys:
        raise Refused("key-based bundle, but no cosign public key is configured")
    envelope = doc.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise Refused("key-based bundles are verified only with a DSSE envelope")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise Refused("DSSE envelope has no payloadType")
    payload = b64decode(envelope.get("payload"), "DSSE payload", limit=MAX_PAYLOAD)
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= 8:
        raise Refused("DSSE envelope must carry 1..8 signatures")
    pae = _pae(payload_type, payload)
    matched: list[str] = []
    for sig in signatures:
        if not isinstance(sig, dict):
            continue
        raw_sig = b64decode(sig.get("sig"), "DSSE signature", limit=8192)
        matched += [name for name, key in trust.keys if verify_message(key, raw_sig, pae)]
    if not matched:
        raise Refused(f"DSSE signature does not verify with any configured key ({len(trust.keys)} tried)")
    _check_statement(payload_type, payload, subject.digest.partition(":")[2])
    warnings: tuple[str, ...] = ()
    if doc.get("verificationMaterial", {}).get("tlogEntries"):
        if trust.config.require_tlog_for_keys:
            raise Refused("transparency log entries of key-based bundles are not verified yet")
        warnings = ("transparency log entry present but not checked for key-based bundles",)
    elif trust.config.require_tlog_for_keys:
        raise Refused("no transparency log entry and the trust policy needs one")
    names = tuple(dict.fromkeys(matched))
    return SignatureResult(
        SignatureKind.COSIGN,
        signature_digest,
        True,
        f"Sigstore bundle verified with key; signs {subject.digest}",
        signer=Signer(key=", ".join(names)),
        matched=names,
        warnings=warnings,
    )

