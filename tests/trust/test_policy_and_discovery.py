"""The verdict function (pure) and signature-artifact recognition (pure)."""

from __future__ import annotations

import json

from moorage.trust import (
    ArtifactForm,
    NamedKey,
    SignatureKind,
    SignatureResult,
    TrustConfig,
    TrustPolicy,
    compile_trust,
    cosign_signature_tag,
    recognise,
    subject_of_signature_tag,
    verdict,
    verify_signature,
)

from .helpers import (
    Blobs,
    cosign_sign,
    image_subject,
    new_key,
    public_pem,
    sig_manifest,
    simple_signing_payload,
)


def result(digest: str, verified: bool = True, matched: tuple[str, ...] = (), ref: str | None = None,
           kind: SignatureKind = SignatureKind.COSIGN) -> SignatureResult:
    return SignatureResult(kind, digest, verified, "test", matched=matched, docker_reference=ref)


def test_unsigned_untrusted_trusted() -> None:
    assert verdict([], TrustPolicy()).status == "unsigned"
    assert verdict([], TrustPolicy(signers=("alice",))).missing == ("alice",)
    failed = verdict([result("sha256:a", verified=False)], TrustPolicy())
    assert failed.status == "untrusted" and failed.missing == ("a verified signature",)
    ok = verdict([result("sha256:a", matched=("alice",))], TrustPolicy())
    assert ok.status == "trusted" and ok.accepted == ("sha256:a",)


def test_named_signers_any_and_two_person_rule() -> None:
    alice = result("sha256:a", matched=("alice",))
    bob = result("sha256:b", matched=("bob",))
    mallory = result("sha256:m", matched=("mallory",))
    any_of = TrustPolicy(signers=("alice", "bob"))
    assert verdict([alice], any_of).status == "trusted"
    v = verdict([mallory], any_of)
    assert v.status == "untrusted" and v.missing == ("alice", "bob")
    two_person = TrustPolicy(signers=("alice", "bob"), require_all=True)
    v = verdict([alice, mallory], two_person)
    assert v.status == "untrusted" and v.missing == ("bob",) and "missing bob" in v.reason
    v = verdict([alice, bob], two_person)
    assert v.status == "trusted" and set(v.accepted) == {"sha256:a", "sha256:b"}
    # a failed signature naming a signer does not count
    assert verdict([alice, result("sha256:b", False, ("bob",))], two_person).status == "untrusted"


def test_docker_reference_is_optional_and_matches_exactly_or_by_pattern() -> None:
    signed = result("sha256:a", ref="registry.example/team/app")
    assert verdict([signed], TrustPolicy()).status == "trusted"  # not required by default
    assert verdict([signed], TrustPolicy(docker_reference="registry.example/team/app")).status == "trusted"
    assert verdict([signed], TrustPolicy(docker_reference="registry.example/team/*")).status == "trusted"
    v = verdict([signed], TrustPolicy(docker_reference="mirror.example/*"))
    assert v.status == "untrusted" and "another reference" in v.reason
    # Notation signatures carry no reference; the rule restricts cosign signatures only
    notation = result("sha256:n", kind=SignatureKind.NOTATION)
    assert verdict([notation], TrustPolicy(docker_reference="mirror.example/*")).status == "trusted"


async def test_a_policy_change_flips_the_verdict_without_reverifying() -> None:
    alice, bob = new_key("p256"), new_key("ed25519")
    config = compile_trust(TrustConfig(keys=(NamedKey("alice", public_pem(alice)), NamedKey("bob", public_pem(bob)))))
    subject = image_subject()
    payload = simple_signing_payload(subject.digest)
    blobs = Blobs()
    artifact = sig_manifest(blobs, [(payload, {"dev.cosignproject.cosign/signature": cosign_sign(alice, payload)})])
    results = await verify_signature(subject, artifact, blobs.fetch, config)
    reads = blobs.reads
    assert verdict(results, TrustPolicy(signers=("alice",))).status == "trusted"
    assert verdict(results, TrustPolicy(signers=("alice", "bob"), require_all=True)).status == "untrusted"
    assert verdict(results, TrustPolicy(signers=("bob",))).status == "untrusted"
    assert blobs.reads == reads
    # bob co-signs (cosign appends a layer to the .sig manifest): the two-person rule is met
    artifact = sig_manifest(blobs, [
        (payload, {"dev.cosignproject.cosign/signature": cosign_sign(alice, payload)}),
        (payload, {"dev.cosignproject.cosign/signature": cosign_sign(bob, payload)}),
    ])
    results = await verify_signature(subject, artifact, blobs.fetch, config)
    assert verdict(results, TrustPolicy(signers=("alice", "bob"), require_all=True)).status == "trusted"


def test_recognise_signature_artifacts() -> None:
    digest = "sha256:" + "ab" * 32
    assert cosign_signature_tag(digest) == "sha256-" + "ab" * 32 + ".sig"
    assert subject_of_signature_tag(cosign_signature_tag(digest)) == digest
    got = recognise(b"{}", tag=cosign_signature_tag(digest))
    assert got is not None and got.form == ArtifactForm.COSIGN_TAG and got.subject_digest == digest
    for tag in ("sha256-" + "ab" * 32 + ".att", "sha256-" + "ab" * 32 + ".sbom", "latest", "sha256-abc.sig"):
        assert recognise(b"{}", tag=tag) is None

    def referrer(artifact_type: str, annotations: dict[str, str] | None = None) -> bytes:
        doc = {"schemaVersion": 2, "artifactType": artifact_type, "subject": {"digest": digest, "size": 1,
               "mediaType": "application/vnd.oci.image.manifest.v1+json"}, "layers": []}
        if annotations:
            doc["annotations"] = annotations
        return json.dumps(doc).encode()

    got = recognise(referrer("application/vnd.cncf.notary.signature"))
    assert got is not None and got.form == ArtifactForm.NOTATION and got.subject_digest == digest
    got = recognise(referrer("application/vnd.dev.sigstore.bundle.v0.3+json"))
    assert got is not None and got.form == ArtifactForm.SIGSTORE_BUNDLE
    signature = {"dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"}
    assert recognise(referrer("application/vnd.dev.sigstore.bundle.v0.3+json", signature)) is not None
    provenance = {"dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1"}
    assert recognise(referrer("application/vnd.dev.sigstore.bundle.v0.3+json", provenance)) is None
    assert recognise(referrer("application/spdx+json")) is None
    assert recognise(b"not json") is None
    assert recognise(json.dumps({"artifactType": "application/vnd.cncf.notary.signature"}).encode()) is None
