"""Signature artifacts are attacker-supplied: every malformed input ends in a failed result with a
reason, never an exception (verify_signature's contract)."""

from __future__ import annotations

import json
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moorage.trust import (
    ArtifactForm,
    NamedKey,
    NotationTrustStore,
    SignatureArtifact,
    TrustConfig,
    compile_trust,
    verify_signature,
)

from .helpers import (
    Blobs,
    b64,
    cosign_sign,
    image_subject,
    make_ca,
    make_leaf,
    new_key,
    notation_jws,
    notation_payload,
    public_pem,
    referrer_manifest,
    sha256,
    sig_manifest,
    simple_signing_payload,
)

KEY = new_key("p256")
CA = make_ca("Acme Root")
LEAF = make_leaf(CA, "Test Signer")
SCOPE = "registry.example/app"
POLICY = json.dumps({"version": "1.0", "trustPolicies": [{
    "name": "all", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
    "trustStores": ["ca:acme"], "trustedIdentities": ["*"]}]}).encode()
TRUST = compile_trust(TrustConfig(
    keys=(NamedKey("ci", public_pem(KEY)),),
    notation_stores=(NotationTrustStore("ca", "acme", (CA.pem,)),),
    notation_policy=POLICY,
))
SUBJECT = image_subject(scope=SCOPE)
SIG = "dev.cosignproject.cosign/signature"


async def cosign_result(payload: bytes, annotations: dict[str, Any], blobs: Blobs | None = None) -> Any:
    blobs = blobs or Blobs()
    artifact = sig_manifest(blobs, [(payload, annotations)])
    results = await verify_signature(SUBJECT, artifact, blobs.fetch, TRUST)
    assert len(results) == 1
    return results[0]


async def notation_result(envelope: bytes, media_type: str = "application/jose+json") -> Any:
    blobs = Blobs()
    artifact = referrer_manifest(blobs, SUBJECT, "application/vnd.cncf.notary.signature", envelope, media_type,
                                 ArtifactForm.NOTATION)
    [result] = await verify_signature(SUBJECT, artifact, blobs.fetch, TRUST)
    return result


async def test_malformed_cosign_inputs() -> None:
    good = simple_signing_payload(SUBJECT.digest)
    sig = cosign_sign(KEY, good)
    cases = {
        "not base64": (good, {SIG: "%%%not-base64%%%"}),
        "empty signature": (good, {SIG: ""}),
        "no signature": (good, {}),
        "payload not JSON": (b"\xff\xfe garbage", {SIG: cosign_sign(KEY, b"\xff\xfe garbage")}),
        "payload deeply nested": (b"[" * 100000 + b"]" * 100000, {SIG: sig}),
        "critical not an object": (b'{"critical": "x"}', {SIG: cosign_sign(KEY, b'{"critical": "x"}')}),
        "garbage certificate": (good, {SIG: b64(b"x" * 70), "dev.sigstore.cosign/certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}),
        "huge signature": (good, {SIG: b64(b"x" * 100_000)}),
    }
    for name, (payload, notes) in cases.items():
        result = await cosign_result(payload, notes)
        assert not result.verified and result.reason, name
    # a Rekor bundle is only read when a Rekor key is configured; otherwise it is noted, unchecked
    result = await cosign_result(good, {SIG: sig, "dev.sigstore.cosign/bundle": "{" * 5000})
    assert result.verified and "not checked" in result.warnings[0]
    from .helpers import FakeSigstore

    fake = FakeSigstore()
    with_rekor = compile_trust(TrustConfig(keys=TRUST.config.keys, sigstore_trusted_root=fake.trusted_root()))
    for garbage in ("{" * 5000, "[]", '{"Payload": {"body": "!!", "integratedTime": 1, "logIndex": 1, "logID": "00"}}'):
        blobs = Blobs()
        artifact = sig_manifest(blobs, [(good, {SIG: sig, "dev.sigstore.cosign/bundle": garbage})])
        [result] = await verify_signature(SUBJECT, artifact, blobs.fetch, with_rekor)
        assert not result.verified and result.reason


async def test_blob_store_failures_and_lies() -> None:
    good = simple_signing_payload(SUBJECT.digest)
    blobs = Blobs()
    artifact = sig_manifest(blobs, [(good, {SIG: cosign_sign(KEY, good)})])
    for digest in list(blobs.data):
        blobs.data[digest] = b"something else"  # the store returns bytes that do not match
    [result] = await verify_signature(SUBJECT, artifact, blobs.fetch, TRUST)
    assert not result.verified and "does not match its digest" in result.reason
    blobs.data.clear()  # missing blobs: fetch raises KeyError
    [result] = await verify_signature(SUBJECT, artifact, blobs.fetch, TRUST)
    assert not result.verified and "cannot read the payload" in result.reason


async def test_malformed_manifests() -> None:
    for form in ArtifactForm:
        for manifest in (b"", b"null", b"[]", b"{" * 10_000, json.dumps({"layers": "x", "subject": 1}).encode(),
                         json.dumps({"layers": [{"digest": "sha256:" + "0" * 64, "size": -1, "mediaType": 5}]}).encode(),
                         json.dumps({"layers": [{}] * 1000}).encode(), b"x" * (300 * 1024)):
            artifact = SignatureArtifact(sha256(manifest), manifest, form)
            results = await verify_signature(SUBJECT, artifact, Blobs().fetch, TRUST)
            assert results and not any(r.verified for r in results)
            assert all(r.reason for r in results)


async def test_malformed_notation_envelopes() -> None:
    payload = notation_payload(SUBJECT)
    good = json.loads(notation_jws(LEAF, [CA], payload))
    many = json.loads(notation_jws(LEAF, [CA], payload))
    many["header"]["x5c"] = [b64(CA.der)] * 50
    cases: list[tuple[bytes, str]] = [
        (json.dumps({**good, "protected": "!!"}).encode(), "application/jose+json"),
        (json.dumps({**good, "header": {"x5c": ["not base64 at all"]}}).encode(), "application/jose+json"),
        (json.dumps({**good, "header": {"x5c": [b64(b"not a certificate")]}}).encode(), "application/jose+json"),
        (json.dumps(many).encode(), "application/jose+json"),
        (json.dumps({**good, "header": {"x5c": []}}).encode(), "application/jose+json"),
        (b"\xa0" * 5000, "application/cose"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])), "application/cose"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {33: [b"junk"]}, payload, b"sig"])), "application/cose"),
        (b"\x81" * 10_000 + b"\x00", "application/cose"),  # deeply nested arrays
        (b"\xd2\x9f" * 3000, "application/cose"),  # indefinite-length nesting
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "application/cose"),  # absurd byte-string length
    ]
    for envelope, media_type in cases:
        result = await notation_result(envelope, media_type)
        assert not result.verified and result.reason, envelope[:40]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.sampled_from(["application/jose+json", "application/cose"]))
async def test_random_envelopes_never_raise(data: bytes, media_type: str) -> None:
    result = await notation_result(data, media_type)
    assert not result.verified


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30))
async def test_random_payloads_never_raise(doc: Any) -> None:
    payload = json.dumps(doc).encode()
    result = await cosign_result(payload, {SIG: cosign_sign(KEY, payload)})
    assert not result.verified
