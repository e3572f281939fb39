"""Notation signatures made by notation-go (its own test data), with the outcomes its tests assert
(tests/data/trust/notation/expected.json names each upstream test)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from moorage.trust import (
    ArtifactForm,
    NotationTrustStore,
    Subject,
    TrustConfig,
    compile_trust,
    verify_signature,
)
from moorage.trust.envelope import COSE, JWS, parse_envelope
from moorage.trust.notation import verify_envelope

from .helpers import NOTATION_DATA, Blobs, referrer_manifest

EXPECTED = {c["id"]: c for c in json.loads((NOTATION_DATA / "expected.json").read_text())["cases"]}
SCOPE = "registry.acme-rockets.io/software/net-monitor"
ROOT_IDENTITY = "x509.subject:CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"
MOCK = EXPECTED["go-ca-valid"]
MOCK_SUBJECT = Subject(
    MOCK["signed_descriptor"]["digest"], MOCK["signed_descriptor"]["mediaType"], MOCK["signed_descriptor"]["size"], SCOPE
)
STORES = NOTATION_DATA / "verifier/testdata/truststore/x509"


def path(rel: str) -> Path:
    return NOTATION_DATA / rel.removeprefix("notation-go/")


def store(kind: str, name: str, folder: Path) -> NotationTrustStore:
    return NotationTrustStore(kind, name, tuple(f.read_bytes() for f in sorted(folder.iterdir())))  # type: ignore[arg-type]


def policy(stores: list[str], identities: list[str] | None = None, level: str = "strict", **sv: Any) -> bytes:
    return json.dumps(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "net-monitor",
                    "registryScopes": [SCOPE],
                    "signatureVerification": {"level": level, **sv},
                    "trustStores": stores,
                    "trustedIdentities": identities or [ROOT_IDENTITY],
                }
            ],
        }
    ).encode()


ALL_STORES = (
    store("ca", "valid-trust-store", STORES / "ca/valid-trust-store"),
    store("ca", "valid-trust-store-2", STORES / "ca/valid-trust-store-2"),
    store("signingAuthority", "valid-trust-store", STORES / "signingAuthority/valid-trust-store"),
    store("tsa", "test-timestamp", STORES / "tsa/test-timestamp"),
)
DEFAULT_POLICY = policy(["ca:valid-trust-store", "signingAuthority:valid-trust-store"])


def trust(policy_doc: bytes = DEFAULT_POLICY, stores: tuple[NotationTrustStore, ...] = ALL_STORES) -> Any:
    return compile_trust(TrustConfig(notation_stores=stores, notation_policy=policy_doc))


async def verify_file(rel: str, subject: Subject = MOCK_SUBJECT, policy_doc: bytes = DEFAULT_POLICY,
                      stores: tuple[NotationTrustStore, ...] = ALL_STORES) -> Any:
    """Push-shaped: the envelope as the layer of a Notation referrer, verified through the API."""
    raw = path(rel).read_bytes()
    media_type = JWS if raw[:1] == b"{" else COSE
    blobs = Blobs()
    artifact = referrer_manifest(
        blobs, subject, "application/vnd.cncf.notary.signature", raw, media_type, ArtifactForm.NOTATION
    )
    [result] = await verify_signature(subject, artifact, blobs.fetch, trust(policy_doc, stores))
    return result


@pytest.mark.parametrize("case_id", ["go-ca-valid", "go-sa-valid"])
async def test_valid_envelopes_verify(case_id: str) -> None:
    result = await verify_file(EXPECTED[case_id]["envelope"])
    assert result.verified, result.reason
    assert result.kind == "notation"
    assert result.signer.subject == "CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"
    kind = "signingAuthority" if case_id.startswith("go-sa") else "ca"
    assert result.matched == (f"{kind}:valid-trust-store",)
    assert result.signed_at == datetime(2020, 11, 9, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize("case_id", ["go-ca-invalid", "go-sa-invalid"])
async def test_invalid_envelopes_fail_integrity(case_id: str) -> None:
    result = await verify_file(EXPECTED[case_id]["envelope"])
    assert not result.verified
    assert "base64" in result.reason


async def test_untrusted_store_fails_authenticity() -> None:
    result = await verify_file(MOCK["envelope"], policy_doc=policy(["ca:valid-trust-store-2"]))
    assert not result.verified
    assert "does not contain any trusted certificate" in result.reason


async def test_wrong_trusted_identity_fails_authenticity() -> None:
    doc = policy(["ca:valid-trust-store"], EXPECTED["go-valid-wrong-identity"]["trusted_identities"])
    result = await verify_file(MOCK["envelope"], policy_doc=doc)
    assert not result.verified and "matches no trusted identity" in result.reason
    # audit logs authenticity instead of enforcing it: verified, but no trust store vouches for it
    audit = await verify_file(MOCK["envelope"], policy_doc=policy(
        ["ca:valid-trust-store"], EXPECTED["go-valid-wrong-identity"]["trusted_identities"], level="audit"))
    assert audit.verified and audit.matched == ()
    assert any(w.startswith("authenticity:") for w in audit.warnings)


@pytest.mark.parametrize("case_id", ["go-ca-expired", "go-sa-expired"])
async def test_expired_signatures(case_id: str) -> None:
    rel = EXPECTED[case_id]["envelope"]
    strict = await verify_file(rel)
    assert not strict.verified
    assert "digital signature has expired on 2022-07-29T23:59:00Z" in strict.reason
    for level in ("permissive", "audit"):  # expiry is logged, not enforced
        logged = await verify_file(rel, policy_doc=policy(["ca:valid-trust-store", "signingAuthority:valid-trust-store"], level=level))
        assert logged.verified, logged.reason
        assert any("expired" in w for w in logged.warnings)
    overridden = await verify_file(rel, policy_doc=policy(
        ["ca:valid-trust-store", "signingAuthority:valid-trust-store"], override={"expiry": "log"}))
    assert overridden.verified


async def test_plugin_envelopes_need_their_plugin() -> None:
    for name in ("ca_plugin_sig_env.json", "sa_plugin_sig_env.json"):
        result = await verify_file(f"internal/mock/testdata/{name}")
        assert not result.verified and "critical header" in result.reason


async def test_signed_descriptor_must_equal_the_subject() -> None:
    meta = EXPECTED["go-metadata"]["signed_descriptor"]
    good = Subject(meta["digest"], meta["mediaType"], meta["size"], SCOPE)
    rel = EXPECTED["go-metadata"]["envelope"]
    for wrong in (
        Subject(meta["digest"], meta["mediaType"], meta["size"] + 1, SCOPE),
        Subject(meta["digest"], "application/vnd.oci.image.manifest.v1+json", meta["size"], SCOPE),
    ):
        result = await verify_file(rel, subject=wrong)
        assert not result.verified and "signed" in result.reason
    # the certificate of this envelope is short-lived and expired long ago: audit logs that
    audit = await verify_file(rel, subject=good, policy_doc=policy(
        ["ca:valid-trust-store", "signingAuthority:valid-trust-store"], ["*"], level="audit"))
    assert audit.verified, audit.reason


def _timestamp_subject(rel: str) -> Subject:
    raw = path(rel).read_bytes()
    env = parse_envelope(JWS if raw[:1] == b"{" else COSE, raw)
    target = json.loads(env.payload)["targetArtifact"]
    return Subject(target["digest"], target["mediaType"], target["size"], SCOPE)


TS = "verifier/testdata/timestamp/sigEnv/"
TS_POLICY = policy(["ca:valid-trust-store", "tsa:test-timestamp"], ["*"])


@pytest.mark.parametrize("name", ["jwsWithTimestamp.sig", "coseWithTimestamp.sig"])
async def test_authentic_timestamps_verify(name: str) -> None:
    result = await verify_file(TS + name, subject=_timestamp_subject(TS + name), policy_doc=TS_POLICY)
    assert result.verified, result.reason
    assert result.signed_at is not None and result.signed_at.date().isoformat() == "2024-06-18"


async def test_missing_timestamp_is_refused_when_a_tsa_store_is_configured() -> None:
    rel = TS + "withoutTimestamp.sig"
    result = await verify_file(rel, subject=_timestamp_subject(rel), policy_doc=TS_POLICY)
    assert not result.verified
    assert "no timestamp countersignature was found in the signature envelope" in result.reason


async def test_expired_certificate_without_tsa_store_fails_at_verification_time() -> None:
    """go-ts-expired-cose-no-tsa: the signing certificate (self-signed, valid for one day in 2024)
    is trusted, but without a tsa store the chain must be valid now. notation-go's test trusts that
    certificate in its store; it was not copied, so the store here holds the envelope's own x5c."""
    for name in ("coseExpiredWithTimestamp.sig", "jwsExpiredWithTimestamp.sig"):
        rel = TS + name
        raw = path(rel).read_bytes()
        env = parse_envelope(JWS if raw[:1] == b"{" else COSE, raw)
        from cryptography.hazmat.primitives.serialization import Encoding

        own = NotationTrustStore("ca", "test-tsa-leaf", (env.chain[0].public_bytes(Encoding.PEM),))
        result = await verify_file(rel, subject=_timestamp_subject(rel),
                                   policy_doc=policy(["ca:test-tsa-leaf"], ["*"]), stores=(own,))
        assert not result.verified
        assert "verification time is after certificate 'CN=testTSA" in result.reason
        # with the TSA store, the authentic timestamp (inside the one-day validity) vouches for it
        both = await verify_file(rel, subject=_timestamp_subject(rel),
                                 policy_doc=policy(["ca:test-tsa-leaf", "tsa:test-timestamp"], ["*"]),
                                 stores=(own, ALL_STORES[3]))
        assert both.verified, both.reason


async def test_timestamp_before_not_before_is_refused() -> None:
    rel = TS + "timestampBeforeNotBefore.sig"
    result = await verify_file(rel, subject=_timestamp_subject(rel), policy_doc=TS_POLICY)
    assert not result.verified and "before certificate 'CN=testTSA" in result.reason


async def test_local_cose_signature_verifies_over_its_manifest() -> None:
    """go-cose-local: PS256 over the OCI layout's manifest, self-signed CN=alpine signer."""
    case = EXPECTED["go-cose-local"]
    manifest = path(case["signed_manifest"]).read_bytes()
    rel = case["envelope"]
    raw = path(rel).read_bytes()
    env = parse_envelope(COSE, raw)
    from cryptography.hazmat.primitives.serialization import Encoding

    own = NotationTrustStore("ca", "alpine", (env.chain[0].public_bytes(Encoding.PEM),))
    subject = Subject("sha256:" + Path(case["signed_manifest"]).name, "application/vnd.oci.image.manifest.v1+json", len(manifest), SCOPE)
    result = await verify_file(rel, subject=subject, policy_doc=policy(["ca:alpine"], ["*"]), stores=(own,))
    assert result.verified, result.reason


def test_envelope_signature_directly() -> None:
    raw = path(MOCK["envelope"]).read_bytes()
    result = verify_envelope(MOCK_SUBJECT, "sha256:" + "0" * 64, JWS, raw, trust())
    assert result.verified
