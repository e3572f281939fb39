"""Bounded parsing helpers shared by the verifiers: every input here is attacker-supplied.

Each helper raises :class:`~moorage.trust.model.Refused` with a short reason instead of letting a
``ValueError``/``binascii.Error``/``RecursionError`` escape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .model import MAX_CHAIN, MAX_JSON_DEPTH, Refused

_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping early past *limit*."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def load_json(data: bytes | str, what: str, limit: int) -> Any:
    """Parse bounded UTF-8 JSON; refuse oversize, undecodable or too deeply nested documents."""
    if len(data) > limit:
        raise Refused(f"{what} is larger than {limit} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = json.loads(text)
    except RecursionError:
        raise Refused(f"{what} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"{what} is not valid JSON: {str(exc)[:120]}") from None
    if _depth(doc, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise Refused(f"{what} is nested too deeply")
    return doc


def load_object(data: bytes | str, what: str, limit: int) -> dict[str, Any]:
    doc = load_json(data, what, limit)
    if not isinstance(doc, dict):
        raise Refused(f"{what} is not a JSON object")
    return doc


def b64decode(value: Any, what: str, *, urlsafe: bool = False, limit: int = 1 << 20) -> bytes:
    """Strict base64 (standard, or unpadded URL-safe for JOSE); refuse garbage with a reason."""
    if not isinstance(value, str):
        raise Refused(f"{what} is not a base64 string")
    if len(value) > limit * 4 // 3 + 4:
        raise Refused(f"{what} is too large")
    # Go's decoders (cosign, notation) skip CR and LF; so do we. Anything else outside the
    # alphabet is refused.
    value = value.replace("\r", "").replace("\n", "")
    try:
        if urlsafe:
            if not re.fullmatch(r"[A-Za-z0-9_-]*", value):
                raise ValueError("characters outside the base64url alphabet")
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused(f"{what} is not valid base64: {exc}") from None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, digest: str, what: str) -> None:
    """Refuse bytes that do not hash to the digest they were fetched by (sha256/sha512)."""
    algorithm, _, hex_ = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise Refused(f"{what}: unsupported digest algorithm {algorithm[:20]!r}")
    if hashlib.new(algorithm, data).hexdigest() != hex_:
        raise Refused(f"{what} does not match its digest {digest[:80]}")


def load_pem_certificates(data: bytes | str, what: str, limit: int = MAX_CHAIN) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, at most *limit* of them."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > 64 * 1024 * limit:
        raise Refused(f"{what} is too large")
    blocks = _PEM_CERT_RE.findall(raw)
    if not blocks:
        raise Refused(f"{what} holds no PEM certificate")
    if len(blocks) > limit:
        raise Refused(f"{what} holds more than {limit} certificates")
    out = []
    for block in blocks:
        try:
            der = base64.b64decode(b"".join(block.split()), validate=True)
            out.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError) as exc:
            raise Refused(f"{what}: not a valid certificate: {str(exc)[:120]}") from None
    return out


def load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise Refused(f"{what}: not a valid certificate: {str(exc)[:120]}") from None


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """PEM (one or many) or a single DER certificate: how Notation trust store files come."""
    if b"-----BEGIN" in data:
        return load_pem_certificates(data, what, limit=1000)
    return [load_der_certificate(data, what)]


def check_certificate_key(cert: x509.Certificate, what: str) -> None:
    """Refuse weak keys (RSA under 2048 bits, curves other than P-256/384/521)."""
    try:
        key = cert.public_key()
    except ValueError as exc:
        raise Refused(f"{what}: unreadable public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise Refused(f"{what}: RSA key of {key.key_size} bits is too small")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise Refused(f"{what}: unsupported curve {key.curve.name}")


def subject_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def sans_of(cert: x509.Certificate) -> tuple[str, ...]:
    """Emails, URIs and DNS names from the SAN extension (how keyless identities are named)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    values: list[str] = []
    values += ext.get_values_for_type(x509.RFC822Name)
    values += ext.get_values_for_type(x509.UniformResourceIdentifier)
    values += ext.get_values_for_type(x509.DNSName)
    for other in ext.get_values_for_type(x509.OtherName):
        # Fulcio's username SAN (1.3.6.1.4.1.57264.1.7) is a DER UTF8String.
        if other.type_id.dotted_string == "1.3.6.1.4.1.57264.1.7" and other.value[:1] == b"\x0c":
            values.append(other.value[2:].decode("utf-8", "replace"))
    return tuple(values)


# Fulcio's OIDC issuer extensions: .1.1 holds the raw string, .1.8 a DER UTF8String.
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def oidc_issuer_of(cert: x509.Certificate) -> str | None:
    try:
        exts = cert.extensions
    except ValueError:
        return None
    for oid, der in ((_ISSUER_V2, True), (_ISSUER_V1, False)):
        try:
            value = exts.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(value, "value", b"")
        if der and raw[:1] == b"\x0c" and len(raw) > 2:
            # short-form length is all an issuer URL needs; long form: skip the length bytes
            n = raw[1]
            body = raw[2:] if n < 0x80 else raw[2 + (n & 0x7F) :]
            return body.decode("utf-8", "replace")
        if not der:
            return bytes(raw).decode("utf-8", "replace")
    return None


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_rfc3339(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise Refused(f"{what} is not an RFC 3339 time")
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise Refused(f"{what} is not an RFC 3339 time: {value[:40]!r}") from None
