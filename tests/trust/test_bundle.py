"""cosign signatures as Sigstore bundles attached as OCI 1.1 referrers."""

from __future__ import annotations

import json

from moorage.trust import (
    ArtifactForm,
    KeylessIdentity,
    NamedKey,
    TrustConfig,
    compile_trust,
    recognise,
    verify_signature,
)

from .fake_sigstore import KeylessInstance, dsse_key_bundle
from .helpers import Blobs, image_subject, new_key, public_pem, referrer_manifest

BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IDENT = KeylessIdentity("dev", "dev@example.com", "https://issuer.example")


async def verify(bundle: bytes, config: TrustConfig, subject=None):  # type: ignore[no-untyped-def]
    subject = subject or image_subject()
    blobs = Blobs()
    artifact = referrer_manifest(blobs, subject, BUNDLE, bundle, BUNDLE, ArtifactForm.SIGSTORE_BUNDLE)
    assert recognise(artifact.manifest) is not None
    [result] = await verify_signature(subject, artifact, blobs.fetch, compile_trust(config))
    return result


async def test_keyless_bundle_verified_by_sigstore_python() -> None:
    instance = KeylessInstance()
    subject = image_subject()
    config = TrustConfig(keyless=(IDENT,), sigstore_trusted_root=instance.trusted_root())
    result = await verify(instance.message_signature_bundle(subject.digest), config, subject)
    assert result.verified, result.reason
    assert result.signer.san == ("dev@example.com",) and result.matched == ("dev",)
    assert result.signed_at is not None

    # another identity, another image, another trust root: refused, each with its reason
    other = TrustConfig(keyless=(KeylessIdentity("x", "x@example.com", "https://issuer.example"),),
                        sigstore_trusted_root=instance.trusted_root())
    result = await verify(instance.message_signature_bundle(subject.digest), other, subject)
    assert not result.verified and "Sigstore verification failed" in result.reason
    other_image = image_subject(b'{"x": 2}')
    result = await verify(instance.message_signature_bundle(other_image.digest), config, subject)
    assert not result.verified
    stranger = KeylessInstance()
    result = await verify(instance.message_signature_bundle(subject.digest),
                          TrustConfig(keyless=(IDENT,), sigstore_trusted_root=stranger.trusted_root()), subject)
    assert not result.verified


async def test_tampered_bundle_is_refused() -> None:
    instance = KeylessInstance()
    subject = image_subject()
    config = TrustConfig(keyless=(IDENT,), sigstore_trusted_root=instance.trusted_root())
    doc = json.loads(instance.message_signature_bundle(subject.digest))
    doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = "1"
    result = await verify(json.dumps(doc).encode(), config, subject)
    assert not result.verified


async def test_key_based_dsse_bundle() -> None:
    key = new_key("p256")
    subject = image_subject()
    config = TrustConfig(keys=(NamedKey("ci", public_pem(key)),))
    result = await verify(dsse_key_bundle(key, subject.digest), config, subject)
    assert result.verified and result.matched == ("ci",)
    result = await verify(dsse_key_bundle(new_key("p256"), subject.digest), config, subject)
    assert not result.verified and "does not verify with any configured key" in result.reason
    result = await verify(dsse_key_bundle(key, image_subject(b'{"y": 1}').digest), config, subject)
    assert not result.verified and "does not name" in result.reason
    result = await verify(dsse_key_bundle(key, subject.digest, "https://slsa.dev/provenance/v1"), config, subject)
    assert not result.verified and "attestation" in result.reason
    required = TrustConfig(keys=config.keys, require_tlog_for_keys=True)
    result = await verify(dsse_key_bundle(key, subject.digest), required, subject)
    assert not result.verified and "transparency log" in result.reason
