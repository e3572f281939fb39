"""Micro-benchmark: the cost of verifying one signature (a verdict-cache miss in phase 2).

Each case runs ``verify_signature`` end to end on an in-memory artifact (manifest parse, blob
fetch, digest check, cryptography, trust checks) with a trust configuration compiled once, as
phase 2 will hold it per configuration version. Prints the median and p90 per verification.

    PYTHONPATH=. python bench/trust_verify.py [--rounds 200]

Run under ``flock /tmp/moorage-bench.lock`` on a shared machine; compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moorage.trust import (  # noqa: E402
    ArtifactForm,
    KeylessIdentity,
    NamedKey,
    NotationTrustStore,
    Subject,
    TrustConfig,
    compile_trust,
    verify_signature,
)
from tests.trust.helpers import (  # noqa: E402
    COSIGN_DATA,
    NOTATION_DATA,
    PUBLIC_GOOD_ROOT,
    Blobs,
    cosign_sign,
    image_subject,
    make_ca,
    make_leaf,
    new_key,
    notation_cose,
    notation_payload,
    public_pem,
    referrer_manifest,
    sha256,
    sig_manifest,
    simple_signing_payload,
)

Case = Callable[[], Awaitable[None]]


def cosign_key_case(kind: str) -> Case:
    key = new_key(kind)
    subject = image_subject()
    payload = simple_signing_payload(subject.digest)
    blobs = Blobs()
    artifact = sig_manifest(blobs, [(payload, {"dev.cosignproject.cosign/signature": cosign_sign(key, payload)})])
    trust = compile_trust(TrustConfig(keys=(NamedKey("ci", public_pem(key)),)))

    async def run() -> None:
        [r] = await verify_signature(subject, artifact, blobs.fetch, trust)
        assert r.verified, r.reason

    return run


def cosign_keyless_fixture_case() -> Case:
    """containers/image's real Fulcio+Rekor signature against the public-good trusted root."""
    d = COSIGN_DATA / "fixtures" / "dir-img-cosign-fulcio-rekor-valid"
    raw = (d / "signature-1").read_bytes()
    doc = json.loads(raw.split(b"\n", 1)[1])
    payload = base64.b64decode(doc["payload"])
    manifest = (d / "manifest.json").read_bytes()
    subject = Subject(sha256(manifest), "application/vnd.docker.distribution.manifest.v2+json", len(manifest))
    blobs = Blobs()
    artifact = sig_manifest(blobs, [(payload, doc["annotations"])])
    trust = compile_trust(TrustConfig(
        keyless=(KeylessIdentity("mitr", "mitr@redhat.com", "https://github.com/login/oauth"),),
        sigstore_trusted_root=PUBLIC_GOOD_ROOT.read_bytes(),
    ))

    async def run() -> None:
        [r] = await verify_signature(subject, artifact, blobs.fetch, trust)
        assert r.verified, r.reason

    return run


def notation_policy(store: str) -> bytes:
    return json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "p", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": [store], "trustedIdentities": ["*"]}]}).encode()


def notation_jws_fixture_case() -> Case:
    """notation-go's PS384 JWS envelope (leaf + root chain) against its trust store."""
    raw = (NOTATION_DATA / "internal/mock/testdata/ca_valid_sig_env.json").read_bytes()
    subject = Subject("sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e",
                      "application/vnd.docker.distribution.manifest.v2+json", 528, "registry.example/app")
    root = (NOTATION_DATA / "verifier/testdata/truststore/x509/ca/valid-trust-store/NotationTestRoot.pem").read_bytes()
    trust = compile_trust(TrustConfig(notation_stores=(NotationTrustStore("ca", "s", (root,)),),
                                      notation_policy=notation_policy("ca:s")))
    blobs = Blobs()
    artifact = referrer_manifest(blobs, subject, "application/vnd.cncf.notary.signature", raw,
                                 "application/jose+json", ArtifactForm.NOTATION)

    async def run() -> None:
        [r] = await verify_signature(subject, artifact, blobs.fetch, trust)
        assert r.verified, r.reason

    return run


def notation_cose_case() -> Case:
    """An ES256 COSE envelope, leaf + intermediate + root, made here."""
    root = make_ca("Root")
    inter = make_ca("Intermediate", issuer=root)
    leaf = make_leaf(inter, "Signer")
    subject = image_subject(scope="registry.example/app")
    env = notation_cose(leaf, [inter, root], notation_payload(subject))
    trust = compile_trust(TrustConfig(notation_stores=(NotationTrustStore("ca", "s", (root.pem,)),),
                                      notation_policy=notation_policy("ca:s")))
    blobs = Blobs()
    artifact = referrer_manifest(blobs, subject, "application/vnd.cncf.notary.signature", env,
                                 "application/cose", ArtifactForm.NOTATION)

    async def run() -> None:
        [r] = await verify_signature(subject, artifact, blobs.fetch, trust)
        assert r.verified, r.reason

    return run


async def measure(case: Case, rounds: int) -> tuple[float, float]:
    for _ in range(5):
        await case()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await case()
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.9)] * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    cases = {
        "cosign key ECDSA P-256 (.sig tag)": cosign_key_case("p256"),
        "cosign key Ed25519 (.sig tag)": cosign_key_case("ed25519"),
        "cosign key RSA-3072 (.sig tag)": cosign_key_case("rsa3072"),
        "cosign keyless Fulcio+Rekor SET+SCT (real fixture)": cosign_keyless_fixture_case(),
        "Notation JWS PS384, 2-cert chain (notation-go fixture)": notation_jws_fixture_case(),
        "Notation COSE ES256, 3-cert chain": notation_cose_case(),
    }
    print(f"{'case':58} {'median µs':>10} {'p90 µs':>10}")
    for name, case in cases.items():
        median, p90 = await measure(case, args.rounds)
        print(f"{name:58} {median:10.0f} {p90:10.0f}")


if __name__ == "__main__":
    asyncio.run(main())
