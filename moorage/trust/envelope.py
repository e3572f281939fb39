"""Notation signature envelopes (JWS JSON and COSE_Sign1) reduced to one shape.

Parsing checks the envelope's integrity rules from the Notary Project signature specification:
the supported algorithms, the payload content type, the critical headers (every one must be
known and present; the mandatory ones must be listed), and the signer's certificate chain. The
cryptographic check is :func:`verify_envelope_signature`. COSE is decoded with cbor2 (bounded
depth, no duplicate keys) and the ``Sig_structure`` built per RFC 9052 §4.4; pycose was not used:
its last release is from 2023 and Notation's text-labelled, time-tagged headers need custom
handling with it anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .model import MAX_CHAIN, MAX_PAYLOAD, Refused
from .util import b64decode, load_der_certificate, load_object, parse_rfc3339

JWS = "application/jose+json"
COSE = "application/cose"
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_AUTHORITY = "notary.x509.signingAuthority"

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_PLUGIN = "io.cncf.notary.verificationPlugin"
H_PLUGIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
H_TIMESTAMP = "io.cncf.notary.timestampSignature"
H_AGENT = "io.cncf.notary.signingAgent"
KNOWN_CRITICAL = frozenset({H_SCHEME, H_AUTHENTIC_TIME, H_EXPIRY, H_PLUGIN, H_PLUGIN_VERSION})

# (hash, RSA-PSS?, EC curve name)
_JWS_ALGS = {
    "PS256": (hashes.SHA256, True, None),
    "PS384": (hashes.SHA384, True, None),
    "PS512": (hashes.SHA512, True, None),
    "ES256": (hashes.SHA256, False, "secp256r1"),
    "ES384": (hashes.SHA384, False, "secp384r1"),
    "ES512": (hashes.SHA512, False, "secp521r1"),
}
_COSE_ALGS = {-37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512"}


@dataclass(frozen=True, slots=True)
class Envelope:
    media_type: str
    alg: str
    signed_bytes: bytes  # what the signature covers
    signature: bytes
    payload: bytes
    scheme: str
    signing_time: datetime | None
    authentic_signing_time: datetime | None
    expiry: datetime | None
    chain: tuple[x509.Certificate, ...]
    timestamp_token: bytes | None
    signing_agent: str | None


def parse_envelope(media_type: str, raw: bytes) -> Envelope:
    if len(raw) > MAX_PAYLOAD:
        raise Refused("signature envelope is too large")
    if media_type == JWS:
        return _parse_jws(raw)
    if media_type == COSE:
        return _parse_cose(raw)
    raise Refused(f"unsupported signature envelope type {media_type[:80]!r}")


def _check_protected(alg: str, cty: Any, crit: Any, headers: Mapping[str, Any]) -> None:
    if alg not in _JWS_ALGS:
        raise Refused(f"unsupported signature algorithm {str(alg)[:20]!r}")
    if cty != PAYLOAD_TYPE:
        raise Refused(f"payload content type {str(cty)[:80]!r} is not {PAYLOAD_TYPE}")
    if not isinstance(crit, list | tuple) or not all(isinstance(c, str) for c in crit):
        raise Refused("protected header 'crit' must list the critical headers")
    for name in crit:
        if name not in KNOWN_CRITICAL:
            raise Refused(f"unsupported critical header {name[:80]!r}")
        if name not in headers:
            raise Refused(f"critical header {name!r} is listed but absent")
    for name in (H_SCHEME, H_EXPIRY, H_AUTHENTIC_TIME, H_PLUGIN, H_PLUGIN_VERSION):
        if name in headers and name not in crit:
            raise Refused(f"header {name!r} must be marked critical")
    if H_SCHEME not in headers:
        raise Refused("protected header has no signing scheme")
    if H_PLUGIN in headers:
        raise Refused(f"signature requires verification plugin {str(headers[H_PLUGIN])[:80]!r}")


def _chain(ders: list[bytes]) -> tuple[x509.Certificate, ...]:
    if not ders:
        raise Refused("signature has no certificate chain (x5c)")
    if len(ders) > MAX_CHAIN:
        raise Refused(f"certificate chain longer than {MAX_CHAIN}")
    return tuple(load_der_certificate(der, f"x5c[{i}]") for i, der in enumerate(ders))


def _scheme_times(
    scheme: Any, signing: datetime | None, authentic: datetime | None
) -> tuple[str, datetime | None, datetime | None]:
    if scheme == SCHEME_X509:
        if signing is None:
            raise Refused("notary.x509 signature has no signing time")
    elif scheme == SCHEME_AUTHORITY:
        if authentic is None:
            raise Refused("signingAuthority signature has no authentic signing time")
    else:
        raise Refused(f"unsupported signing scheme {str(scheme)[:60]!r}")
    return scheme, signing, authentic


def _parse_jws(raw: bytes) -> Envelope:
    doc = load_object(raw, "JWS envelope", MAX_PAYLOAD)
    for name in ("payload", "protected", "signature"):
        if not isinstance(doc.get(name), str):
            raise Refused(f"JWS envelope has no {name}")
    protected_b64: str = doc["protected"]
    payload_b64: str = doc["payload"]
    protected = load_object(b64decode(protected_b64, "JWS protected header", urlsafe=True), "JWS protected header", 64 * 1024)
    payload = b64decode(payload_b64, "JWS payload", urlsafe=True, limit=MAX_PAYLOAD)
    signature = b64decode(doc["signature"], "JWS signature", urlsafe=True, limit=4096)
    alg = protected.get("alg")
    _check_protected(str(alg), protected.get("cty"), protected.get("crit"), protected)
    header = doc.get("header")
    if not isinstance(header, dict):
        raise Refused("JWS envelope has no unprotected header")
    x5c = header.get("x5c")
    if not isinstance(x5c, list):
        raise Refused("JWS header has no x5c certificate chain")
    chain = _chain([b64decode(c, "x5c certificate", limit=64 * 1024) for c in x5c[: MAX_CHAIN + 1]])
    token = header.get(H_TIMESTAMP)
    ts = b64decode(token, "timestamp signature", limit=64 * 1024) if token is not None else None
    signing = parse_rfc3339(protected[H_SIGNING_TIME], "signing time") if H_SIGNING_TIME in protected else None
    authentic = (
        parse_rfc3339(protected[H_AUTHENTIC_TIME], "authentic signing time")
        if H_AUTHENTIC_TIME in protected
        else None
    )
    expiry = parse_rfc3339(protected[H_EXPIRY], "expiry") if H_EXPIRY in protected else None
    scheme, signing, authentic = _scheme_times(protected.get(H_SCHEME), signing, authentic)
    agent = header.get(H_AGENT)
    return Envelope(
        media_type=JWS,
        alg=str(alg),
        signed_bytes=f"{protected_b64}.{payload_b64}".encode("ascii", "replace"),
        signature=signature,
        payload=payload,
        scheme=scheme,
        signing_time=signing,
        authentic_signing_time=authentic,
        expiry=expiry,
        chain=chain,
        timestamp_token=ts,
        signing_agent=agent if isinstance(agent, str) else None,
    )


def _cbor(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data, max_depth=16, allow_duplicate_keys=False)
    except Exception as exc:  # cbor2 raises CBORDecodeError and friends, some from C
        raise Refused(f"{what} is not valid CBOR: {str(exc)[:120]}") from None


def _cose_time(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, cbor2.CBORTag) and value.tag == 1 and isinstance(value.value, int):
        value = value.value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40:
        return datetime.fromtimestamp(value, tz=UTC)
    raise Refused(f"{what} is not a CBOR epoch time")


def _parse_cose(raw: bytes) -> Envelope:
    msg = _cbor(raw, "COSE envelope")
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != 18:
        raise Refused("COSE envelope is not a tagged COSE_Sign1 message")
    body = msg.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise Refused("COSE_Sign1 must be a 4-element array")
    protected_bytes, unprotected, payload, signature = body
    if not isinstance(protected_bytes, bytes) or not isinstance(unprotected, Mapping):
        raise Refused("COSE_Sign1 headers are malformed")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise Refused("COSE_Sign1 payload or signature is not a byte string (detached payloads unsupported)")
    protected = _cbor(protected_bytes, "COSE protected header")
    if not isinstance(protected, Mapping):
        raise Refused("COSE protected header is not a map")
    alg_label = protected.get(1)
    alg = _COSE_ALGS.get(alg_label) if isinstance(alg_label, int) else None
    if alg is None:
        raise Refused(f"unsupported COSE algorithm {str(protected.get(1))[:20]}")
    # COSE labels crit (2) and content type (3); Notation's own headers are text labels.
    headers = {k: v for k, v in protected.items() if isinstance(k, str)}
    _check_protected(alg, protected.get(3), protected.get(2, []), headers)
    x5 = unprotected.get(33)
    ders = [x5] if isinstance(x5, bytes) else list(x5) if isinstance(x5, list | tuple) else None
    if ders is None or not all(isinstance(d, bytes) for d in ders):
        raise Refused("COSE header has no x5chain certificate chain")
    chain = _chain(ders[: MAX_CHAIN + 1])
    ts = unprotected.get(H_TIMESTAMP)
    if ts is not None and not isinstance(ts, bytes):
        raise Refused("COSE timestamp signature is not a byte string")
    signing = _cose_time(headers[H_SIGNING_TIME], "signing time") if H_SIGNING_TIME in headers else None
    authentic = (
        _cose_time(headers[H_AUTHENTIC_TIME], "authentic signing time")
        if H_AUTHENTIC_TIME in headers
        else None
    )
    expiry = _cose_time(headers[H_EXPIRY], "expiry") if H_EXPIRY in headers else None
    scheme, signing, authentic = _scheme_times(headers.get(H_SCHEME), signing, authentic)
    agent = unprotected.get(H_AGENT)
    return Envelope(
        media_type=COSE,
        alg=alg,
        signed_bytes=cbor2.dumps(["Signature1", protected_bytes, b"", payload]),
        signature=signature,
        payload=payload,
        scheme=scheme,
        signing_time=signing,
        authentic_signing_time=authentic,
        expiry=expiry,
        chain=chain,
        timestamp_token=ts,
        signing_agent=agent if isinstance(agent, str) else None,
    )


def verify_envelope_signature(env: Envelope) -> None:
    """The signature over the envelope's signed bytes, with the leaf certificate's key."""
    hash_cls, pss, curve = _JWS_ALGS[env.alg]
    try:
        key = env.chain[0].public_key()
    except ValueError as exc:
        raise Refused(f"signing certificate key is unreadable: {exc}") from None
    try:
        if pss:
            if not isinstance(key, rsa.RSAPublicKey):
                raise Refused(f"{env.alg} needs an RSA key")
            if key.key_size < 2048:
                raise Refused(f"RSA key of {key.key_size} bits is too small")
            h = hash_cls()
            key.verify(
                env.signature, env.signed_bytes, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h
            )
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
                raise Refused(f"{env.alg} needs an ECDSA key on {curve}")
            half = (key.curve.key_size + 7) // 8
            if len(env.signature) != 2 * half:
                raise Refused("ECDSA signature has the wrong length")
            r = int.from_bytes(env.signature[:half], "big")
            s = int.from_bytes(env.signature[half:], "big")
            key.verify(encode_dss_signature(r, s), env.signed_bytes, ec.ECDSA(hash_cls()))
    except InvalidSignature:
        raise Refused("signature is invalid: it does not verify with the signing certificate") from None
