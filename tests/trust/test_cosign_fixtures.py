"""cosign signatures made by the real tools (containers/image test data), with the outcomes that
project's own tests assert (tests/data/trust/cosign/expected.json names each upstream test)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from moorage.trust import (
    CosignPKI,
    KeylessIdentity,
    NamedKey,
    Subject,
    TrustConfig,
    TrustPolicy,
    compile_trust,
    verdict,
    verify_signature,
)
from moorage.trust.sigstore_root import SigstoreRoot

from .helpers import COSIGN_DATA, PUBLIC_GOOD_ROOT, Blobs, sha256, sig_manifest, trusted_root

EXPECTED = json.loads((COSIGN_DATA / "expected.json").read_text())["cases"]
CASES = {c["id"]: c for c in EXPECTED}


def path(rel: str) -> Path:
    return COSIGN_DATA / rel.removeprefix("containers-image/")


def read_signature(rel: str) -> tuple[str, bytes, dict[str, str]]:
    """containers/image's on-disk form: 0x00 'sigstore-json' '\\n' then JSON."""
    raw = path(rel).read_bytes()
    if not raw.startswith(b"\x00sigstore-json\n"):
        raise ValueError("not a sigstore signature file")
    doc = json.loads(raw.split(b"\n", 1)[1])
    return doc["mimeType"], base64.b64decode(doc["payload"]), dict(doc["annotations"])


def trust_for(spec: dict[str, Any]) -> TrustConfig:
    keys = tuple(NamedKey(f"key{i}", path(p).read_bytes()) for i, p in enumerate(spec.get("public_keys", [])))
    rekor = [path(p).read_bytes() for p in spec.get("rekor_public_keys", [])]
    from cryptography import x509

    chains = []
    if "fulcio_ca" in spec:
        chains = [x509.load_pem_x509_certificates(path(spec["fulcio_ca"]).read_bytes())]
    keyless: tuple[KeylessIdentity, ...] = ()
    if "oidc_issuer" in spec:
        keyless = (KeylessIdentity("fulcio-user", spec["subject_email"], spec["oidc_issuer"]),)
    pki: tuple[CosignPKI, ...] = ()
    if "ca_roots" in spec:
        pki = (
            CosignPKI(
                "pki",
                path(spec["ca_roots"]).read_bytes(),
                path(spec["ca_intermediates"]).read_bytes() if "ca_intermediates" in spec else b"",
                subject_email=spec.get("subject_email"),
                subject_hostname=spec.get("subject_hostname"),
            ),
        )
        keyless = ()
    root = trusted_root(rekor_keys=rekor, fulcio_chains=chains) if (rekor or chains) else None
    return TrustConfig(
        keys=keys,
        keyless=keyless,
        cosign_pki=pki,
        sigstore_trusted_root=root,
        # containers/image requires the Rekor SET whenever a Rekor key is configured
        require_tlog_for_keys=bool(rekor),
    )


def subject_for(case: dict[str, Any]) -> Subject:
    rel = case.get("manifest") or str(Path(case["signature"]).parent / "manifest.json")
    if path(rel).exists():  # mutated cases use the manifest beside their signature, as upstream
        manifest = path(rel).read_bytes()
        return Subject(sha256(manifest), "application/vnd.docker.distribution.manifest.v2+json", len(manifest))
    # No manifest (upstream: "Error reading image manifest"): the signature is checked against
    # some other image, as a registry would when a signature names a manifest it does not hold.
    return Subject("sha256:" + "ab" * 32, "application/vnd.oci.image.manifest.v1+json", 10)


async def run(case: dict[str, Any], signatures: list[str] | None = None) -> list[Any]:
    blobs = Blobs()
    layers = []
    media_type = None
    for rel in signatures or [case["signature"]]:
        media_type, payload, annotations = read_signature(rel)
        mutation = case.get("mutation", "")
        if mutation.startswith("remove annotation "):
            annotations.pop(mutation.removeprefix("remove annotation "))
        layers.append((payload, annotations))
    assert media_type is not None
    artifact = sig_manifest(blobs, layers, media_type=media_type)
    return await verify_signature(subject_for(case), artifact, blobs.fetch, compile_trust(trust_for(case["trust"])))


SINGLE = [c["id"] for c in EXPECTED if "signature" in c and c["expected"] in ("accept", "reject")]


@pytest.mark.parametrize("case_id", SINGLE)
async def test_expected_outcome(case_id: str) -> None:
    case = CASES[case_id]
    [result] = await run(case)
    policy = TrustPolicy()
    if case.get("identity_policy") == "matchExact":
        policy = TrustPolicy(docker_reference=case["identity"])
    trusted = verdict([result], policy).status == "trusted"
    if case["expected"] == "accept":
        assert result.verified, result.reason
        assert trusted
        if "identity" in case and ":" not in case["identity"].rsplit("/", 1)[-1]:
            assert result.docker_reference == case["identity"]
    else:
        assert not trusted, result


async def test_keyless_reasons_name_the_failed_check() -> None:
    [wrong_email] = await run(CASES["ci-fulcio-wrong-email"])
    assert "matches no configured keyless identity" in wrong_email.reason
    [no_rekor] = await run(CASES["ci-fulcio-no-rekor"])
    assert "trust root" in no_rekor.reason or "Rekor" in no_rekor.reason
    [no_chain] = await run(CASES["ci-fulcio-missing-chain"])
    assert "does not chain to a trusted root" in no_chain.reason
    [wrong_rekor] = await run(CASES["ci-key-rekor-wrong-rekor-key"])
    assert "log not in the trust root" in wrong_rekor.reason


async def test_fulcio_signature_against_the_public_good_trust_root() -> None:
    """The same keyless signature against Sigstore's real trusted_root.json (as shipped by
    sigstore-python): Fulcio intermediate + root, Rekor key and CT logs — so the SCT is checked."""
    case = CASES["ci-fulcio-rekor-valid"]
    blobs = Blobs()
    _, payload, annotations = read_signature(case["signature"])
    artifact = sig_manifest(blobs, [(payload, annotations)])
    trust = compile_trust(
        TrustConfig(
            keyless=(KeylessIdentity("mitr", "mitr@redhat.com", "https://github.com/login/oauth"),),
            sigstore_trusted_root=PUBLIC_GOOD_ROOT.read_bytes(),
        )
    )
    assert trust.sigstore is not None and trust.sigstore.has_ct_logs
    [result] = await verify_signature(subject_for(case), artifact, blobs.fetch, trust)
    assert result.verified, result.reason
    assert result.signer is not None and result.signer.san == ("mitr@redhat.com",)
    assert result.signer.issuer == "https://github.com/login/oauth"
    assert result.signed_at is not None and result.signed_at.year == 2023
    assert result.matched == ("mitr",)

    # An SCT by a CT log the trust root does not list is refused.
    doc = json.loads(PUBLIC_GOOD_ROOT.read_text())
    from cryptography.hazmat.primitives.asymmetric import ec

    from .helpers import _der_spki

    other = _der_spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    for ctlog in doc["ctlogs"]:
        ctlog["publicKey"]["rawBytes"] = base64.b64encode(other).decode()
    bad = compile_trust(
        TrustConfig(keyless=trust.keyless, sigstore_trusted_root=json.dumps(doc).encode())
    )
    [result] = await verify_signature(subject_for(case), artifact, blobs.fetch, bad)
    assert not result.verified and "SCT" in result.reason


async def test_one_valid_signature_among_several_suffices() -> None:
    for case_id in ("ci-mixed", "ci-valid-2"):
        case = CASES[case_id]
        results = await run(case, case["signatures"])
        assert len(results) == 2
        assert verdict(results, TrustPolicy()).status == "trusted"
    mixed = await run(CASES["ci-mixed"], CASES["ci-mixed"]["signatures"])
    assert [r.verified for r in mixed] == [False, True]


async def test_other_attachment_and_unsigned_images_are_refused() -> None:
    [other] = await run(CASES["ci-other-attachment"])
    assert not other.verified and "text/plain" in other.reason
    assert verdict([], TrustPolicy()).status == "unsigned"  # ci-unsigned: no signature at all
    # ci-gpg-only: a GPG simple-signing signature is not a sigstore signature at all
    with pytest.raises(ValueError):
        read_signature(CASES["ci-gpg-only"]["signature"])


def test_rekor_set_unit_vector() -> None:
    case = CASES["ci-rekor-set-unit"]
    files = {k: path(v) for k, v in case["files"].items()}
    root = SigstoreRoot(trusted_root(rekor_keys=[files["rekor_pub"].read_bytes()]))
    from cryptography import x509

    cert_pem = files["cert"].read_bytes()
    payload = files["payload"].read_bytes()
    import hashlib

    entry = root.verify_set(
        files["set"].read_text(),
        signature=base64.b64decode(files["sig_b64"].read_text()),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        signer_pem=cert_pem,
        signer_key=x509.load_pem_x509_certificate(cert_pem).public_key(),  # type: ignore[arg-type]
    )
    assert int(entry.integrated_time.timestamp()) == 1670870899
