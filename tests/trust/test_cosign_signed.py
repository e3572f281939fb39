"""cosign tag-scheme signatures made here with generated keys and a private Fulcio-like CA."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from moorage.trust import (
    KeylessIdentity,
    NamedKey,
    TrustConfig,
    TrustConfigError,
    compile_trust,
    verify_signature,
)

from .helpers import (
    NOW,
    Blobs,
    FakeSigstore,
    cosign_sign,
    image_subject,
    new_key,
    public_pem,
    rekor_bundle_annotation,
    sig_manifest,
    simple_signing_payload,
)

SIG = "dev.cosignproject.cosign/signature"
KEY_KINDS = ["p256", "p384", "p521", "rsa2048", "rsa4096", "ed25519"]


async def verify_one(payload: bytes, annotations: dict[str, str], config: TrustConfig, subject=None):  # type: ignore[no-untyped-def]
    blobs = Blobs()
    artifact = sig_manifest(blobs, [(payload, annotations)])
    [result] = await verify_signature(subject or image_subject(), artifact, blobs.fetch, compile_trust(config))
    return result


@pytest.mark.parametrize("kind", KEY_KINDS)
async def test_every_key_type_verifies_and_rejects_tampering(kind: str) -> None:
    key = new_key(kind)
    subject = image_subject()
    payload = simple_signing_payload(subject.digest)
    config = TrustConfig(keys=(NamedKey("ci", public_pem(key)),))
    good = await verify_one(payload, {SIG: cosign_sign(key, payload)}, config)
    assert good.verified, good.reason
    assert good.matched == ("ci",) and good.signer.key == "ci"
    assert good.docker_reference == "registry.example/app"

    tampered = payload.replace(b"registry.example/app", b"registry.example/evil")
    bad = await verify_one(tampered, {SIG: cosign_sign(key, payload)}, config)
    assert not bad.verified and "does not verify with any configured key" in bad.reason

    other = new_key(kind)
    wrong_key = await verify_one(payload, {SIG: cosign_sign(other, payload)}, config)
    assert not wrong_key.verified


async def test_rsa_pss_and_larger_ecdsa_hashes_as_sigstore_verifiers_use() -> None:
    subject = image_subject()
    payload = simple_signing_payload(subject.digest)
    rsa_key = new_key("rsa3072")
    result = await verify_one(payload, {SIG: cosign_sign(rsa_key, payload, pss=True)},
                              TrustConfig(keys=(NamedKey("rsa", public_pem(rsa_key)),)))
    assert result.verified, result.reason
    p384 = new_key("p384")
    result = await verify_one(payload, {SIG: cosign_sign(p384, payload, ec_hash=hashes.SHA384())},
                              TrustConfig(keys=(NamedKey("p384", public_pem(p384)),)))
    assert result.verified, result.reason


async def test_payload_must_name_this_digest_and_be_a_cosign_signature() -> None:
    key = new_key("p256")
    config = TrustConfig(keys=(NamedKey("ci", public_pem(key)),))
    subject = image_subject()
    other = image_subject(b'{"other": true}')
    payload = simple_signing_payload(other.digest)
    result = await verify_one(payload, {SIG: cosign_sign(key, payload)}, config, subject)
    assert not result.verified and f"payload signs {other.digest}, not {subject.digest}" in result.reason
    wrong_type = simple_signing_payload(subject.digest, type_="atomic container signature")
    result = await verify_one(wrong_type, {SIG: cosign_sign(key, wrong_type)}, config, subject)
    assert not result.verified and "payload type" in result.reason


async def test_several_keys_name_the_one_that_verified() -> None:
    a, b = new_key("p256"), new_key("ed25519")
    config = TrustConfig(keys=(NamedKey("alice", public_pem(a)), NamedKey("bob", public_pem(b))))
    payload = simple_signing_payload(image_subject().digest)
    result = await verify_one(payload, {SIG: cosign_sign(b, payload)}, config)
    assert result.verified and result.matched == ("bob",)


async def test_key_signature_with_rekor_entry() -> None:
    fake = FakeSigstore()
    key = new_key("p256")
    payload = simple_signing_payload(image_subject().digest)
    sig = cosign_sign(key, payload)
    entry = rekor_bundle_annotation(fake.rekor, sig, payload, public_pem(key), int(NOW.timestamp()))
    base = {"keys": (NamedKey("ci", public_pem(key)),), "sigstore_trusted_root": fake.trusted_root()}
    ok = await verify_one(payload, {SIG: sig, "dev.sigstore.cosign/bundle": entry},
                          TrustConfig(require_tlog_for_keys=True, **base))
    assert ok.verified, ok.reason
    assert ok.signed_at is not None and abs((ok.signed_at - NOW).total_seconds()) < 2
    missing = await verify_one(payload, {SIG: sig}, TrustConfig(require_tlog_for_keys=True, **base))
    assert not missing.verified and "no Rekor entry" in missing.reason
    # an entry for another signature, or another payload, does not count
    other_sig = cosign_sign(key, payload + b" ")
    mismatched = rekor_bundle_annotation(fake.rekor, other_sig, payload, public_pem(key), int(NOW.timestamp()))
    bad = await verify_one(payload, {SIG: sig, "dev.sigstore.cosign/bundle": mismatched}, TrustConfig(**base))
    assert not bad.verified and "different signature" in bad.reason
    forged = json.loads(entry)
    forged["Payload"]["integratedTime"] += 1
    bad = await verify_one(payload, {SIG: sig, "dev.sigstore.cosign/bundle": json.dumps(forged)}, TrustConfig(**base))
    assert not bad.verified and "SET does not verify" in bad.reason


def keyless_annotations(fake: FakeSigstore, payload: bytes, *, at=None, chain: bool = True, **cert_kw):  # type: ignore[no-untyped-def]
    leaf = fake.fulcio_cert(**cert_kw)
    sig = cosign_sign(leaf.key, payload)
    when = int((at or NOW).timestamp())
    ann = {
        SIG: sig,
        "dev.sigstore.cosign/certificate": leaf.pem.decode(),
        "dev.sigstore.cosign/bundle": rekor_bundle_annotation(fake.rekor, sig, payload, leaf.pem, when),
    }
    if chain:
        ann["dev.sigstore.cosign/chain"] = (fake.intermediate.pem + fake.root.pem).decode()
    return ann


IDENT = KeylessIdentity("dev", "dev@example.com", "https://issuer.example")


async def test_keyless_legacy_annotations_against_a_private_trust_root() -> None:
    fake = FakeSigstore()
    payload = simple_signing_payload(image_subject().digest)
    config = TrustConfig(keyless=(IDENT,), sigstore_trusted_root=fake.trusted_root())
    ok = await verify_one(payload, keyless_annotations(fake, payload), config)
    assert ok.verified, ok.reason
    assert ok.signer.san == ("dev@example.com",) and ok.signer.issuer == "https://issuer.example"
    assert ok.matched == ("dev",)

    pattern = KeylessIdentity("team", r".*@example\.com", "https://issuer.example", identity_regex=True)
    ok = await verify_one(payload, keyless_annotations(fake, payload),
                          TrustConfig(keyless=(pattern,), sigstore_trusted_root=fake.trusted_root()))
    assert ok.verified and ok.matched == ("team",)

    wrong_issuer = await verify_one(payload, keyless_annotations(fake, payload, issuer="https://evil.example"), config)
    assert not wrong_issuer.verified and "matches no configured keyless identity" in wrong_issuer.reason


@pytest.mark.parametrize(
    ("cert_kw", "at", "why"),
    [
        ({"not_before": NOW - timedelta(hours=2), "not_after": NOW - timedelta(hours=1)}, None, "chain"),
        ({"not_before": NOW + timedelta(hours=1), "not_after": NOW + timedelta(hours=2)}, None, "chain"),
        ({"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}, None, "code-signing"),
    ],
    ids=["expired-at-log-time", "not-yet-valid-at-log-time", "no-code-signing-eku"],
)
async def test_keyless_certificate_checks(cert_kw: dict, at, why: str) -> None:  # type: ignore[no-untyped-def]
    fake = FakeSigstore()
    payload = simple_signing_payload(image_subject().digest)
    config = TrustConfig(keyless=(IDENT,), sigstore_trusted_root=fake.trusted_root())
    result = await verify_one(payload, keyless_annotations(fake, payload, at=at, **cert_kw), config)
    assert not result.verified and why in result.reason


async def test_keyless_untrusted_root() -> None:
    fake, other = FakeSigstore(), FakeSigstore()
    payload = simple_signing_payload(image_subject().digest)
    config = TrustConfig(keyless=(IDENT,), sigstore_trusted_root=other.trusted_root())
    result = await verify_one(payload, keyless_annotations(fake, payload), config)
    assert not result.verified  # its Rekor entry is from a log the trust root does not list
    # and with the right Rekor key but another Fulcio root, the chain fails
    from .helpers import trusted_root

    mixed = trusted_root(rekor_keys=[fake.rekor.public_key()], fulcio_chains=[[other.root.cert]])
    result = await verify_one(payload, keyless_annotations(fake, payload),
                              TrustConfig(keyless=(IDENT,), sigstore_trusted_root=mixed))
    assert not result.verified and "does not chain to a trusted root" in result.reason


def test_bad_configuration_is_refused_when_compiled() -> None:
    with pytest.raises(TrustConfigError, match="not a public key"):
        compile_trust(TrustConfig(keys=(NamedKey("k", b"-----BEGIN PUBLIC KEY-----\ngarbage\n"),)))
    with pytest.raises(TrustConfigError, match="already used"):
        k = public_pem(new_key("p256"))
        compile_trust(TrustConfig(keys=(NamedKey("k", k), NamedKey("k", k))))
    with pytest.raises(TrustConfigError, match="trusted_root"):
        compile_trust(TrustConfig(keyless=(IDENT,)))
    with pytest.raises(TrustConfigError, match="trusted_root"):
        compile_trust(TrustConfig(sigstore_trusted_root=b'{"mediaType": "nope"}'))
    with pytest.raises(TrustConfigError, match="RSA key size"):
        compile_trust(TrustConfig(keys=(NamedKey("small", public_pem(new_key("rsa1024"))),)))
