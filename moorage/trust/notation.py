"""Notation (Notary Project) signatures: verification as ``notation verify`` does it, offline.

Steps and how the trust policy's level treats each (strict / permissive / audit; ``skip`` skips):

- integrity (always enforced): the envelope parses, its critical headers are known, the signature
  verifies with the leaf certificate, the certificate chain is well-formed (each certificate signed
  by the next, CA constraints, a code-signing leaf), and the signed descriptor (digest, size, media
  type) equals the subject manifest;
- authenticity: the chain leads to a certificate of one of the statement's trust stores (``ca``
  for ``notary.x509``, ``signingAuthority`` for ``notary.x509.signingAuthority``) and the leaf's
  subject matches a trusted identity;
- authentic timestamp: the chain is valid at the authentic signing time (signing authority), or at
  the RFC 3161 timestamp countersignature's time when the statement has a ``tsa`` store and
  ``verifyTimestamp`` asks for it (verified with rfc3161-client against that store), or else now;
- expiry: the ``io.cncf.notary.expiry`` header is in the future;
- revocation: OCSP/CRL need the network, which verification must not use: not checked, noted as a
  warning unless the policy skips it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from cryptography.x509.verification import VerificationError as X509VerificationError

from .config import CompiledTrust
from .envelope import (
    COSE,
    JWS,
    SCHEME_AUTHORITY,
    Envelope,
    parse_envelope,
    verify_envelope_signature,
)
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
from .notation_policy import Statement
from .util import check_digest, load_object, subject_of

_FMT = "%Y-%m-%dT%H:%M:%SZ"


def _fail(artifact: SignatureArtifact, reason: str, **kw: object) -> SignatureResult:
    return SignatureResult(SignatureKind.NOTATION, artifact.digest, False, reason, **kw)  # type: ignore[arg-type]


async def verify_notation_artifact(
    subject: Subject,
    artifact: SignatureArtifact,
    fetch_blob: FetchBlob,
    trust: CompiledTrust,
    now: datetime | None = None,
) -> SignatureResult:
    try:
        manifest = load_object(artifact.manifest, "signature manifest", 256 * 1024)
        sub = manifest.get("subject")
        if not isinstance(sub, dict) or sub.get("digest") != subject.digest:
            raise Refused(f"signature's subject is not {subject.digest}")
        layers = manifest.get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            raise Refused("a Notation signature manifest has exactly one layer (the envelope)")
        layer = layers[0]
        media_type = layer.get("mediaType")
        if media_type not in (JWS, COSE) or not isinstance(layer.get("digest"), str):
            raise Refused(f"unsupported envelope media type {str(media_type)[:80]!r}")
        size = layer.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_PAYLOAD:
            raise Refused(f"envelope size must be 1..{MAX_PAYLOAD} bytes")
        statement = _statement(subject, trust)
        if statement.level == "skip":
            return _fail(artifact, f"not verified: trust policy {statement.name!r} has level 'skip'")
        try:
            raw = await fetch_blob(layer["digest"], MAX_PAYLOAD)
        except Exception as exc:
            raise Refused(f"cannot read the envelope: {str(exc)[:200]}") from None
        check_digest(raw, layer["digest"], "envelope")
        return verify_envelope(subject, artifact.digest, media_type, raw, trust, now=now)
    except Refused as exc:
        return _fail(artifact, str(exc))


def _statement(subject: Subject, trust: CompiledTrust) -> Statement:
    if trust.notation_policy is None:
        raise Refused("no Notation trust policy is configured")
    statement = trust.notation_policy.statement_for(subject.scope)
    if statement is None:
        raise Refused(f"no Notation trust policy statement applies to {subject.scope!r}")
    return statement


def verify_envelope(
    subject: Subject,
    signature_digest: str,
    media_type: str,
    raw: bytes,
    trust: CompiledTrust,
    *,
    now: datetime | None = None,
) -> SignatureResult:
    """Verify one envelope under the trust policy statement for ``subject.scope``; raise Refused."""
    now = now or datetime.now(UTC)
    statement = _statement(subject, trust)
    if statement.level == "skip":
        raise Refused(f"not verified: trust policy {statement.name!r} has level 'skip'")
    actions = statement.actions
    warnings: list[str] = []

    def check(name: str, failure: str | None) -> None:
        """Apply the policy's action for a failed check: enforce refuses, log warns."""
        if failure is None or actions[name] == "skip":
            return
        if actions[name] == "enforce":
            raise Refused(f"{name} check failed: {failure}")
        warnings.append(f"{name}: {failure}")

    # integrity
    env = parse_envelope(media_type, raw)
    verify_envelope_signature(env)
    _check_chain_structure(env.chain)
    _check_target(env, subject)
    leaf = env.chain[0]
    signer = Signer(subject=subject_of(leaf), issuer=leaf.issuer.rfc4514_string())

    # authenticity
    store_type = "signingAuthority" if env.scheme == SCHEME_AUTHORITY else "ca"
    matched = _anchoring_stores(env.chain, statement, store_type, trust)
    failure = None
    if not matched:
        failure = "the signature's certificate chain does not contain any trusted certificate"
    elif not any(ident.matches(leaf) for ident in statement.identities):
        failure = f"signing certificate subject {signer.subject!r} matches no trusted identity"
        matched = ()
    check("authenticity", failure)

    # expiry
    if env.expiry is not None and now > env.expiry:
        check("expiry", f"digital signature has expired on {env.expiry:{_FMT}}")

    # authentic timestamp
    signed_at = env.authentic_signing_time or env.signing_time
    ts_failure, ts_time = _authentic_timestamp(env, statement, trust, now)
    check("authenticTimestamp", ts_failure)
    if ts_time is not None:
        signed_at = ts_time

    if actions["revocation"] != "skip":
        warnings.append("revocation: not checked (OCSP/CRL need the network)")

    return SignatureResult(
        SignatureKind.NOTATION,
        signature_digest,
        True,
        f"verified under trust policy {statement.name!r} (level {statement.level})",
        signer=signer,
        signed_at=signed_at,
        matched=matched,
        warnings=tuple(warnings),
    )


def _check_target(env: Envelope, subject: Subject) -> None:
    payload = load_object(env.payload, "signature payload", MAX_PAYLOAD)
    target = payload.get("targetArtifact")
    if not isinstance(target, dict):
        raise Refused("signature payload has no targetArtifact")
    if target.get("digest") != subject.digest:
        raise Refused(f"signature signs {str(target.get('digest'))[:80]}, not {subject.digest}")
    if target.get("size") != subject.size:
        raise Refused(f"signed size {target.get('size')!r} is not the manifest's size {subject.size}")
    if target.get("mediaType") != subject.media_type:
        raise Refused(f"signed media type {str(target.get('mediaType'))[:80]!r} is not {subject.media_type!r}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_chain_structure(chain: tuple[x509.Certificate, ...]) -> None:
    """Notary Project certificate requirements that do not depend on trust or time."""
    leaf = chain[0]
    for i, cert in enumerate(chain):
        key = cert.public_key()
        size = getattr(key, "key_size", 256)
        if hasattr(key, "curve"):
            if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
                raise Refused(f"certificate {i} uses an unsupported curve")
        elif size < 2048:
            raise Refused(f"certificate {i} has an RSA key of {size} bits (2048 required)")
    if _is_ca(leaf):
        raise Refused("the signing certificate is a CA certificate")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise Refused("the signing certificate has no key usage extension") from None
    if not usage.digital_signature:
        raise Refused("the signing certificate's key usage lacks digitalSignature")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise Refused("the signing certificate lacks the code-signing extended key usage")
    for i in range(len(chain) - 1):
        try:
            chain[i].verify_directly_issued_by(chain[i + 1])
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise Refused(f"certificate chain is broken at {i}: {str(exc)[:120] or type(exc).__name__}") from None
        if not _is_ca(chain[i + 1]):
            raise Refused(f"certificate {i + 1} in the chain is not a CA")


def _anchoring_stores(
    chain: tuple[x509.Certificate, ...], statement: Statement, store_type: str, trust: CompiledTrust
) -> tuple[str, ...]:
    """``type:name`` of the statement's stores (of *store_type*) that anchor a valid path.

    The path is validated with cryptography's RFC 5280 verifier at a time inside every chain
    certificate's validity (when each one was valid is the authentic-timestamp check's business).
    """
    start = max(c.not_valid_before_utc for c in chain)
    end = min(c.not_valid_after_utc for c in chain)
    if start > end:
        return ()
    out = []
    ca_policy = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    ee_policy = ExtensionPolicy.permit_all()
    chain_der = {c.public_bytes(Encoding.DER) for c in chain}
    for kind, name in statement.trust_stores:
        if kind != store_type:
            continue
        roots = trust.stores.get((kind, name), [])
        # Notation trusts a chain when one of its certificates is in the store.
        if not any(r.public_bytes(Encoding.DER) in chain_der for r in roots):
            continue
        verifier = (
            PolicyBuilder()
            .store(Store(roots))
            .time(start.replace(tzinfo=None))
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            verifier.verify(chain[0], list(chain[1:]))
        except (X509VerificationError, ValueError):
            continue
        out.append(f"{kind}:{name}")
    return tuple(out)


def _validity_failure(chain: tuple[x509.Certificate, ...], lo: datetime, hi: datetime, what: str) -> str | None:
    for cert in chain:
        if lo < cert.not_valid_before_utc:
            return f"{what} is before certificate {subject_of(cert)!r} is valid (from {cert.not_valid_before_utc:{_FMT}})"
        if hi > cert.not_valid_after_utc:
            return f"{what} is after certificate {subject_of(cert)!r} expired ({cert.not_valid_after_utc:{_FMT}})"
    return None


def _authentic_timestamp(
    env: Envelope, statement: Statement, trust: CompiledTrust, now: datetime
) -> tuple[str | None, datetime | None]:
    """(failure or None, the authentic time established)."""
    if env.scheme == SCHEME_AUTHORITY:
        assert env.authentic_signing_time is not None
        t = env.authentic_signing_time
        return _validity_failure(env.chain, t, t, "the authentic signing time"), t
    tsa_roots = [c for kind, name in statement.trust_stores if kind == "tsa" for c in trust.stores.get((kind, name), [])]
    use_timestamp = bool(tsa_roots)
    if use_timestamp and statement.verify_timestamp == "afterCertExpiry":
        use_timestamp = any(now > c.not_valid_after_utc for c in env.chain)
    if not use_timestamp:
        return _validity_failure(env.chain, now, now, "the verification time"), None
    if env.timestamp_token is None:
        return "no timestamp countersignature was found in the signature envelope", None
    try:
        lo, hi = verify_timestamp_token(env.timestamp_token, env.signature, tsa_roots)
    except Refused as exc:
        return f"timestamp countersignature: {exc}", None
    return _validity_failure(env.chain, lo, hi, "the timestamp"), lo + (hi - lo) / 2


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at *pos*; Refused on BER or truncation."""
    if pos + 2 > len(buf):
        raise Refused("truncated DER")
    tag, first = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise Refused("multi-byte DER tags are not expected here")
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or start + n > len(buf):
            raise Refused("unsupported DER length")
        length = int.from_bytes(buf[start : start + n], "big")
        start += n
    end = start + length
    if end > len(buf):
        raise Refused("truncated DER")
    return tag, start, end


def _children(buf: bytes, start: int, end: int) -> list[bytes]:
    out = []
    while start < end:
        _, _, child_end = _tlv(buf, start)
        out.append(buf[start:child_end])
        start = child_end
    return out


def _wrap(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _sort_certificate_set(token: bytes) -> bytes:
    """Re-encode a TimeStampToken's ``certificates`` SET in DER order.

    Some TSAs (GlobalSign's among them, in Notation's own test data) emit the SignedData
    ``certificates`` SET OF unsorted, which rfc3161-client's strict DER parser refuses. That field
    is not covered by the token's signature, so sorting it leaves every signed byte unchanged.
    """
    tag, start, end = _tlv(token, 0)
    if tag != 0x30 or end != len(token):
        raise Refused("timestamp token is not a DER SEQUENCE")
    info = _children(token, start, end)
    if len(info) != 2 or info[1][0] != 0xA0:
        raise Refused("timestamp token is not a CMS ContentInfo")
    _, s, e = _tlv(info[1], 0)
    _, sd_start, sd_end = _tlv(info[1], s)
    signed_data = _children(info[1], sd_start, sd_end)
    for i, child in enumerate(signed_data):
        if child[0] == 0xA0:
            _, c_start, c_end = _tlv(child, 0)
            certs = sorted(_children(child, c_start, c_end))
            signed_data[i] = _wrap(0xA0, b"".join(certs))
    inner = _wrap(0x30, b"".join(signed_data))
    return _wrap(0x30, info[0] + _wrap(0xA0, inner))


def verify_timestamp_token(
    token: bytes, signature: bytes, roots: list[x509.Certificate]
) -> tuple[datetime, datetime]:
    """Verify an RFC 3161 TimeStampToken over *signature*; return its time range (± accuracy).

    rfc3161-client verifies TimeStampResp messages, so the token is wrapped in a granted response
    (``SEQUENCE { PKIStatusInfo { status 0 }, token }``) — the token itself is what is verified.
    """
    from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

    status = b"\x30\x03\x02\x01\x00"
    response = _wrap(0x30, status + _sort_certificate_set(token))
    try:
        tsr = decode_timestamp_response(response)
        builder = VerifierBuilder()
        for root in roots:
            builder = builder.add_root_certificate(root)
        builder.build().verify_message(tsr, signature)
        info = tsr.tst_info
        gen = info.gen_time
        gen = gen if gen.tzinfo else gen.replace(tzinfo=UTC)
        acc = info.accuracy
        delta = timedelta(
            seconds=(acc.seconds or 0) if acc else 0,
            milliseconds=(acc.millis or 0) if acc else 0,
            microseconds=(acc.micros or 0) if acc else 0,
        )
    except VerificationError as exc:
        raise Refused(str(exc)[:200]) from None
    except Exception as exc:  # malformed DER surfaces as ValueError or library-specific errors
        raise Refused(f"malformed timestamp token: {str(exc)[:160]}") from None
    return gen - delta, gen + delta
