"""The operator's Sigstore trust root (``trusted_root.json``) and the checks built on it.

sigstore-python verifies Sigstore *bundles* (see :mod:`moorage.trust.bundle`); this module holds
what the legacy cosign tag scheme needs besides: the annotations there carry a Fulcio certificate
and a Rekor *SET* (signed entry timestamp) without an inclusion proof, and sigstore-python 4.x
refuses log entries without an inclusion proof (``TransparencyLogEntry._validate``), so the legacy
form cannot be turned into a bundle it accepts. For it we check, as cosign's
``VerifyBundle``/``verifyBundleMatchesData`` do:

- the SET: an ECDSA/Ed25519 signature by a Rekor key from the trust root (chosen by ``logID``, valid
  at ``integratedTime``) over the RFC 8785 canonical JSON of ``{body, integratedTime, logID,
  logIndex}``;
- that the logged ``hashedrekord`` body names this signature, this payload's sha256 and this
  certificate or key;
- the Fulcio chain at ``integratedTime`` against the trust root's CAs (cryptography's RFC 5280
  path builder, with sigstore-python's own extension policy), the code-signing EKU, and the SCT
  (with sigstore-python's ``verify_sct``) when the trust root lists CT logs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import VerificationError as X509VerificationError

from .keys import PublicKey, check_key, key_id
from .model import Refused
from .util import b64decode, load_object, utc

MAX_TRUSTED_ROOT = 4 * 1024 * 1024


class TrustRootError(ValueError):
    """The configured trusted_root.json cannot be used (raised when the configuration is built)."""


@dataclass(frozen=True, slots=True)
class LogKey:
    key: PublicKey
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """A Rekor entry whose SET verified and whose body matches the signature."""

    integrated_time: datetime
    log_index: int


class SigstoreRoot:
    """A parsed trusted_root.json: sigstore-python's object plus what the legacy checks read."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) > MAX_TRUSTED_ROOT:
            raise TrustRootError("trusted_root.json is too large")
        try:
            # Imported here: sigstore costs ~0.5 s of CPU to import, and every `moorage`
            # command imports this module (the configuration names the trust root).
            from sigstore.models import TrustedRoot
            from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootModel

            model = TrustedRootModel.from_json(raw)
            self.trusted_root = TrustedRoot(model)
        except Exception as exc:  # pydantic/sigstore raise many types for a bad document
            raise TrustRootError(f"not a usable Sigstore trusted_root.json: {exc}") from None
        self.rekor_keys: dict[str, LogKey] = {}
        for tlog in model.tlogs:
            pk = tlog.public_key
            if pk.raw_bytes is None:
                continue
            try:
                key = check_key(serialization.load_der_public_key(pk.raw_bytes))
            except (ValueError, Refused) as exc:
                raise TrustRootError(f"Rekor key for {tlog.base_url}: {exc}") from None
            valid = pk.valid_for
            self.rekor_keys[key_id(key)] = LogKey(
                key,
                utc(valid.start) if valid and valid.start else None,
                utc(valid.end) if valid and valid.end else None,
            )
        try:
            self.fulcio_certs: list[x509.Certificate] = self.trusted_root.get_fulcio_certs()
        except Exception:
            self.fulcio_certs = []
        self.has_ct_logs = bool(model.ctlogs)
        self.has_tsa = bool(model.timestamp_authorities)

    # --- Rekor SET (legacy cosign ``dev.sigstore.cosign/bundle`` annotation) -------------------

    def verify_set(
        self,
        annotation: str,
        *,
        signature: bytes,
        payload_sha256: str,
        signer_pem: bytes | None,
        signer_key: PublicKey,
    ) -> VerifiedEntry:
        """Verify a cosign ``dev.sigstore.cosign/bundle`` annotation; raise :class:`Refused`."""
        doc = load_object(annotation, "Rekor bundle annotation", 64 * 1024)
        payload = doc.get("Payload")
        if not isinstance(payload, dict):
            raise Refused("Rekor bundle has no Payload")
        body_b64 = payload.get("body")
        integrated = payload.get("integratedTime")
        log_index = payload.get("logIndex")
        log_id = payload.get("logID")
        if not (
            isinstance(body_b64, str)
            and isinstance(integrated, int)
            and isinstance(log_index, int)
            and isinstance(log_id, str)
        ) or isinstance(integrated, bool):
            raise Refused("Rekor bundle Payload is malformed")
        log_key = self.rekor_keys.get(log_id.lower())
        if log_key is None:
            raise Refused(f"Rekor entry is from a log not in the trust root (logID {log_id[:16]}…)")
        when = datetime.fromtimestamp(integrated, tz=UTC)
        if (log_key.start and when < log_key.start) or (log_key.end and when > log_key.end):
            raise Refused("Rekor entry's integrated time is outside its log key's validity")
        set_sig = b64decode(doc.get("SignedEntryTimestamp"), "SignedEntryTimestamp", limit=1024)
        canonical = rfc8785.dumps(
            {"body": body_b64, "integratedTime": integrated, "logID": log_id, "logIndex": log_index}
        )
        if not _verify_log_signature(log_key.key, set_sig, canonical):
            raise Refused("Rekor SET does not verify with the trust root's Rekor key")
        body = load_object(b64decode(body_b64, "Rekor entry body", limit=64 * 1024), "Rekor body", 64 * 1024)
        _check_hashedrekord(body, signature, payload_sha256, signer_pem, signer_key)
        return VerifiedEntry(when, log_index)

    # --- Fulcio certificate ---------------------------------------------------------------------

    def verify_fulcio_chain(
        self, leaf: x509.Certificate, chain: list[x509.Certificate], at: datetime
    ) -> list[x509.Certificate]:
        """Path from *leaf* through *chain* to a Fulcio CA of the trust root, valid at *at*."""
        if not self.fulcio_certs:
            raise Refused("the trust root lists no Fulcio certificate authority")
        return verify_code_signing_chain(leaf, chain, self.fulcio_certs, at)

    def verify_sct(self, leaf: x509.Certificate, chain: list[x509.Certificate]) -> None:
        """Check the certificate's embedded SCT against the trust root's CT logs (when it lists any).

        Uses sigstore-python's SCT verifier (``sigstore._internal.sct``): it is the same check its
        bundle verifier runs, not something to write twice. It is internal API, hence the narrow
        pin on sigstore in pyproject.toml and a test on the real Fulcio certificate fixture.
        """
        if not self.has_ct_logs:
            return
        from sigstore._internal.sct import verify_sct
        from sigstore._internal.trust import KeyringPurpose
        from sigstore.errors import VerificationError

        try:
            verify_sct(leaf, chain, self.trusted_root.ct_keyring(KeyringPurpose.VERIFY))
        except VerificationError as exc:
            raise Refused(f"certificate transparency (SCT) check failed: {exc}") from None
        except Exception as exc:
            raise Refused(f"certificate transparency (SCT) check failed: {str(exc)[:200]}") from None


def _verify_log_signature(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False  # Rekor keys are ECDSA or Ed25519
        return True
    except (InvalidSignature, ValueError):
        return False


def _same_signer(logged_pem: bytes, signer_pem: bytes | None, signer_key: PublicKey) -> bool:
    """The logged publicKey.content (a PEM certificate or key) names the signer we verified with."""
    if b"CERTIFICATE" in logged_pem:
        if signer_pem is None:
            return False
        try:
            logged = x509.load_pem_x509_certificate(logged_pem)
            ours = x509.load_pem_x509_certificate(signer_pem)
        except ValueError:
            return False
        return logged == ours
    try:
        logged_key = serialization.load_pem_public_key(logged_pem)
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if not isinstance(logged_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return False
    return logged_key.public_bytes(der, spki) == signer_key.public_bytes(der, spki)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_hashedrekord(
    body: dict[str, Any],
    signature: bytes,
    payload_sha256: str,
    signer_pem: bytes | None,
    signer_key: PublicKey,
) -> None:
    if body.get("kind") != "hashedrekord" or body.get("apiVersion") != "0.0.1":
        raise Refused(f"Rekor entry kind {str(body.get('kind'))[:30]!r} is not hashedrekord 0.0.1")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise Refused("Rekor entry has no spec")
    sig = _obj(spec.get("signature"))
    hash_ = _obj(_obj(spec.get("data")).get("hash"))
    if hash_.get("algorithm") != "sha256" or hash_.get("value") != payload_sha256:
        raise Refused("Rekor entry is for a different payload")
    if b64decode(sig.get("content"), "Rekor entry signature", limit=4096) != signature:
        raise Refused("Rekor entry is for a different signature")
    public_key = _obj(sig.get("publicKey"))
    logged = b64decode(public_key.get("content"), "Rekor entry public key", limit=64 * 1024)
    if not _same_signer(logged, signer_pem, signer_key):
        raise Refused("Rekor entry names a different certificate or key")


def verify_code_signing_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    at: datetime,
    *,
    private_pki: bool = False,
) -> list[x509.Certificate]:
    """RFC 5280 path validation at *at* to one of *roots*, then the code-signing EKU on the leaf.

    For Fulcio the extension policy is sigstore-python's (``Verifier._verify_chain_at_time``): Web
    PKI defaults, except that the EKU may be present without serverAuth/clientAuth. A private CA
    (``private_pki``) is held to what cosign's Go ``x509.Verify`` checks: CA basic constraints on
    issuers, no Web PKI extension profile.
    """
    if private_pki:
        ca_policy = ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, Criticality.AGNOSTIC, None
        )
        ee_policy = ExtensionPolicy.permit_all()
    else:
        ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
            x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
        )
        ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
        )
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(at.astimezone(UTC).replace(tzinfo=None))
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        built = verifier.verify(leaf, intermediates).chain
    except (X509VerificationError, x509.UnsupportedGeneralNameType, ValueError) as exc:
        raise Refused(f"certificate does not chain to a trusted root at {at:%Y-%m-%dT%H:%M:%SZ}: {exc}") from None
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        if private_pki:
            return list(built[1:])  # Go's x509.Verify: no EKU extension means any usage
        raise Refused("signing certificate has no extended key usage (code signing required)") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise Refused("signing certificate lacks the code-signing extended key usage")
    return list(built[1:])


def rekor_key_der(key: PublicKey) -> str:
    """Base64 DER of a key, as trusted_root.json stores it (for tests and tooling)."""
    return base64.b64encode(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
