"""Public keys and raw signature checks for cosign (key-based) signatures.

cosign signs the payload bytes with the key's natural scheme: ECDSA (ASN.1 DER signature) over a
SHA-256 digest (cosign 2 always hashes with SHA-256 for a loaded key; sigstore's newer "default"
verifiers pick SHA-384 for P-384 and SHA-512 for P-521, so both are accepted), RSA with
PKCS#1 v1.5 or PSS (sigstore's RSA-PSS verifier uses an automatic salt length), and Ed25519 over
the raw message. Accepting every sound scheme for one key is safe: none lets a signature made with
another key verify.
"""

from __future__ import annotations

import hashlib
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .model import Refused

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192


def load_public_key(pem: bytes) -> PublicKey:
    """Load a PEM (or DER) SubjectPublicKeyInfo; refuse key types and sizes cosign does not use."""
    try:
        if pem.lstrip().startswith(b"-----"):
            key = serialization.load_pem_public_key(pem)
        else:
            key = serialization.load_der_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise Refused(f"not a public key: {exc}") from None
    return check_key(key)


def check_key(key: object) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise Refused(f"unsupported elliptic curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not _MIN_RSA_BITS <= key.key_size <= _MAX_RSA_BITS:
            raise Refused(f"RSA key size {key.key_size} outside {_MIN_RSA_BITS}-{_MAX_RSA_BITS}")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise Refused(f"unsupported public key type {type(key).__name__}")


def key_description(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return "Ed25519"


def key_id(key: PublicKey) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: how Rekor names its log keys (``logID``)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _ecdsa_hashes(key: ec.EllipticCurvePublicKey) -> list[hashes.HashAlgorithm]:
    name = key.curve.name
    if name == "secp384r1":
        return [hashes.SHA256(), hashes.SHA384()]
    if name == "secp521r1":
        return [hashes.SHA256(), hashes.SHA512()]
    return [hashes.SHA256()]


def verify_message(key: PublicKey, signature: bytes, message: bytes) -> bool:
    """True when *signature* over *message* verifies with *key* under a scheme cosign uses."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            for algorithm in _ecdsa_hashes(key):
                try:
                    key.verify(signature, message, ec.ECDSA(algorithm))
                    return True
                except InvalidSignature:
                    continue
            return False
        for pad in (
            padding.PKCS1v15(),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
        ):
            try:
                key.verify(signature, message, pad, hashes.SHA256())
                return True
            except InvalidSignature:
                continue
        return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
