"""Notation signatures (JWS and COSE) made here with a test CA: the certificate, scope, level and
header rules of the Notary Project specification."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from moorage.trust import (
    ArtifactForm,
    NotationTrustStore,
    Subject,
    TrustConfig,
    TrustConfigError,
    compile_trust,
    verify_signature,
)

from .helpers import (
    NOW,
    Blobs,
    Issued,
    image_subject,
    make_ca,
    make_leaf,
    notation_cose,
    notation_jws,
    notation_payload,
    referrer_manifest,
)

SCOPE = "registry.example/app"
IDENTITY = "x509.subject: C=US, ST=WA, O=Moorage Test, CN=Test Signer"


def policy(*statements: dict[str, Any]) -> bytes:
    return json.dumps({"version": "1.0", "trustPolicies": list(statements)}).encode()


def statement(name: str = "app", scopes: list[str] | None = None, level: str = "strict",
              stores: list[str] | None = None, identities: list[str] | None = None, **sv: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "registryScopes": scopes or [SCOPE],
        "signatureVerification": {"level": level, **sv},
    }
    if level != "skip":
        out["trustStores"] = stores or ["ca:acme"]
        out["trustedIdentities"] = identities or [IDENTITY]
    return out


class PKI:
    def __init__(self, key_kind: str = "p256") -> None:
        self.root = make_ca("Acme Root", key_kind)
        self.intermediate = make_ca("Acme Intermediate", key_kind, issuer=self.root)

    def store(self, name: str = "acme", kind: str = "ca") -> NotationTrustStore:
        return NotationTrustStore(kind, name, (self.root.pem,))  # type: ignore[arg-type]

    def leaf(self, key_kind: str = "p256", **kw: Any) -> Issued:
        return make_leaf(self.intermediate, "Test Signer", key_kind, **kw)


async def verify(envelope: bytes, media_type: str, config: TrustConfig, subject: Subject | None = None) -> Any:
    subject = subject or image_subject(scope=SCOPE)
    blobs = Blobs()
    artifact = referrer_manifest(blobs, subject, "application/vnd.cncf.notary.signature", envelope,
                                 media_type, ArtifactForm.NOTATION)
    [result] = await verify_signature(subject, artifact, blobs.fetch, compile_trust(config))
    return result


def config(pki: PKI, *statements: dict[str, Any], extra_stores: tuple[NotationTrustStore, ...] = ()) -> TrustConfig:
    return TrustConfig(notation_stores=(pki.store(), *extra_stores), notation_policy=policy(*(statements or (statement(),))))


JWS, COSE = "application/jose+json", "application/cose"


def sign(fmt: str, signer: Issued, chain: list[Issued], subject: Subject, **kw: Any) -> bytes:
    fn = notation_jws if fmt == JWS else notation_cose
    return fn(signer, chain, notation_payload(subject), **kw)


@pytest.mark.parametrize("fmt", [JWS, COSE])
@pytest.mark.parametrize(("key_kind", "alg"), [("p256", "ES256"), ("p384", "ES384"), ("p521", "ES512"),
                                               ("rsa2048", "PS256"), ("rsa3072", "PS384"), ("rsa4096", "PS512")])
async def test_algorithms(fmt: str, key_kind: str, alg: str) -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    leaf = pki.leaf(key_kind)
    result = await verify(sign(fmt, leaf, [pki.intermediate, pki.root], subject, alg=alg), fmt, config(pki))
    assert result.verified, result.reason
    assert result.matched == ("ca:acme",)
    assert result.signer.subject == "CN=Test Signer,O=Moorage Test,ST=WA,C=US"


@pytest.mark.parametrize("fmt", [JWS, COSE])
async def test_tampering_and_wrong_targets(fmt: str) -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    leaf = pki.leaf()
    env = sign(fmt, leaf, [pki.intermediate, pki.root], subject)
    if fmt == JWS:
        doc = json.loads(env)
        doc["signature"] = doc["signature"][:-4] + ("AAAA" if doc["signature"][-4:] != "AAAA" else "BBBB")
        tampered = json.dumps(doc).encode()
    else:
        tampered = env[:-3] + bytes(b ^ 1 for b in env[-3:])
    result = await verify(tampered, fmt, config(pki))
    assert not result.verified and "signature is invalid" in result.reason
    other = image_subject(b'{"other": 1}', scope=SCOPE)
    result = await verify(sign(fmt, leaf, [pki.intermediate, pki.root], other), fmt, config(pki), subject)
    assert not result.verified and "not " + subject.digest in result.reason


@pytest.mark.parametrize("fmt", [JWS, COSE])
async def test_certificate_rules(fmt: str) -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    chain = [pki.intermediate, pki.root]
    cases = {
        "expired": (pki.leaf(not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)),
                    "authenticTimestamp check failed: the verification time is after"),
        "not yet valid": (pki.leaf(not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=30)),
                          "authenticTimestamp check failed: the verification time is before"),
        "no code signing": (pki.leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "code-signing"),
    }
    for leaf, why in cases.values():
        result = await verify(sign(fmt, leaf, chain, subject), fmt, config(pki))
        assert not result.verified and why in result.reason, result.reason
    # an expired certificate is logged, not enforced, at permissive
    expired = cases["expired"][0]
    result = await verify(sign(fmt, expired, chain, subject), fmt, config(pki, statement(level="permissive")))
    assert result.verified and any("authenticTimestamp" in w for w in result.warnings)
    # a chain from another CA does not reach the trust store
    stranger = PKI()
    result = await verify(sign(fmt, stranger.leaf(), [stranger.intermediate, stranger.root], subject), fmt, config(pki))
    assert not result.verified and "does not contain any trusted certificate" in result.reason
    # a chain whose order is broken is an integrity failure
    result = await verify(sign(fmt, pki.leaf(), [pki.root, pki.intermediate], subject), fmt, config(pki))
    assert not result.verified and "chain is broken" in result.reason


async def test_signature_expiry_header() -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    env = sign(JWS, pki.leaf(), [pki.intermediate, pki.root], subject, expiry=NOW - timedelta(hours=1))
    assert not (await verify(env, JWS, config(pki))).verified
    env = sign(COSE, pki.leaf(), [pki.intermediate, pki.root], subject, expiry=NOW + timedelta(hours=1))
    assert (await verify(env, COSE, config(pki))).verified


async def test_scopes_pick_the_statement_and_levels_apply() -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    env = sign(JWS, pki.leaf(), [pki.intermediate, pki.root], subject)
    # an exact scope wins over the wildcard; the wildcard applies to other repositories
    strict_other = statement("other", ["registry.example/other"], identities=["x509.subject: C=US, ST=WA, O=Nobody"])
    wildcard = statement("default", ["*"])
    assert (await verify(env, JWS, config(pki, strict_other, wildcard))).verified
    exact = statement("app", [SCOPE], identities=["x509.subject: C=US, ST=WA, O=Nobody"])
    result = await verify(env, JWS, config(pki, exact, wildcard))
    assert not result.verified and "trusted identity" in result.reason
    # no statement for this scope
    result = await verify(env, JWS, config(pki, strict_other))
    assert not result.verified and "no Notation trust policy statement applies" in result.reason
    # skip: not verified, and said so
    result = await verify(env, JWS, config(pki, statement(level="skip")))
    assert not result.verified and "level 'skip'" in result.reason
    # the wildcard identity accepts any subject from the trusted CA
    assert (await verify(env, JWS, config(pki, statement(identities=["*"])))).verified


async def test_signing_authority_scheme_uses_its_own_stores() -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    env = sign(JWS, pki.leaf(), [pki.intermediate, pki.root], subject, scheme="notary.x509.signingAuthority")
    ca_only = config(pki)
    result = await verify(env, JWS, ca_only)
    assert not result.verified and "does not contain any trusted certificate" in result.reason
    sa = TrustConfig(
        notation_stores=(pki.store("acme", "signingAuthority"),),
        notation_policy=policy(statement(stores=["signingAuthority:acme"])),
    )
    result = await verify(env, JWS, sa)
    assert result.verified and result.matched == ("signingAuthority:acme",)


async def test_unknown_critical_headers_and_plugins_are_refused() -> None:
    pki = PKI()
    subject = image_subject(scope=SCOPE)
    chain = [pki.intermediate, pki.root]
    env = sign(JWS, pki.leaf(), chain, subject, extra={"com.example.mustUnderstand": "x"},
               crit_extra=["com.example.mustUnderstand"])
    result = await verify(env, JWS, config(pki))
    assert not result.verified and "unsupported critical header" in result.reason
    env = sign(JWS, pki.leaf(), chain, subject, extra={"io.cncf.notary.verificationPlugin": "com.example.hsm"},
               crit_extra=["io.cncf.notary.verificationPlugin"])
    result = await verify(env, JWS, config(pki))
    assert not result.verified and "verification plugin" in result.reason
    env = sign(JWS, pki.leaf(), chain, subject, extra={"io.cncf.notary.expiry": "2999-01-01T00:00:00Z"})
    result = await verify(env, JWS, config(pki))
    assert not result.verified and "must be marked critical" in result.reason


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (policy(statement(), statement()), "used twice"),
        (policy(statement("a"), statement("b")), "more than one statement"),
        (policy(statement(scopes=["*", SCOPE])), "only registry scope"),
        (policy(statement(level="paranoid")), "unknown signatureVerification level"),
        (policy(statement(override={"integrity": "log"})), "cannot override"),
        (policy(statement(identities=["x509.subject: CN=no country"])), "mandatory"),
        (policy(statement(stores=["ca:missing"])), "not configured"),
        (policy(statement(stores=["store-without-type"])), "ca|signingAuthority|tsa"),
        (json.dumps({"version": "2.0", "trustPolicies": []}).encode(), "version"),
    ],
)
def test_invalid_policies_are_refused_when_configured(doc: bytes, why: str) -> None:
    with pytest.raises(TrustConfigError, match=why):
        compile_trust(TrustConfig(notation_stores=(PKI().store(),), notation_policy=doc))
