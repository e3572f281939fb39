"""Test helpers for content trust: artifacts and blob stores in memory, a test PKI, signers.

Everything is signed for real with `cryptography`; nothing here decides an outcome.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moorage.trust import ArtifactForm, SignatureArtifact, Subject

DATA = Path(__file__).resolve().parent.parent / "data" / "trust"
COSIGN_DATA = DATA / "cosign"
NOTATION_DATA = DATA / "notation"
PUBLIC_GOOD_ROOT = DATA / "sigstore" / "public-good-trusted_root.json"

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blobs:
    """An in-memory blob store with the fetch_blob contract (digest, limit) -> bytes."""

    data: dict[str, bytes] = field(default_factory=dict)
    reads: int = 0

    def add(self, blob: bytes) -> str:
        digest = sha256(blob)
        self.data[digest] = blob
        return digest

    async def fetch(self, digest: str, limit: int) -> bytes:
        self.reads += 1
        blob = self.data[digest]
        if len(blob) > limit:
            raise ValueError(f"blob {digest} is larger than {limit} bytes")
        return blob


def image_subject(manifest: bytes | None = None, scope: str = "registry.example/app") -> Subject:
    manifest = manifest or json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "n": 1}).encode()
    return Subject(sha256(manifest), OCI_MANIFEST, len(manifest), scope)


def simple_signing_payload(digest: str, reference: str = "registry.example/app", type_: str = "cosign container image signature") -> bytes:
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": type_,
            },
            "optional": None,
        }
    ).encode()


def sig_manifest(blobs: Blobs, layers: list[tuple[bytes, dict[str, str]]], media_type: str = SIMPLE_SIGNING) -> SignatureArtifact:
    """A cosign `.sig` manifest with one layer per (payload, annotations)."""
    descs = []
    for payload, notes in layers:
        descs.append(
            {"mediaType": media_type, "digest": blobs.add(payload), "size": len(payload), "annotations": notes}
        )
    config = blobs.add(b"{}")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": descs,
        }
    ).encode()
    return SignatureArtifact(sha256(manifest), manifest, ArtifactForm.COSIGN_TAG)


def referrer_manifest(
    blobs: Blobs, subject: Subject, artifact_type: str, blob: bytes, blob_type: str, form: ArtifactForm,
    annotations: dict[str, str] | None = None,
) -> SignatureArtifact:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": blobs.add(b"{}"), "size": 2},
        "layers": [{"mediaType": blob_type, "digest": blobs.add(blob), "size": len(blob)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    if annotations:
        doc["annotations"] = annotations
    manifest = json.dumps(doc).encode()
    return SignatureArtifact(sha256(manifest), manifest, form)


# --- keys -----------------------------------------------------------------------------------------

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def new_key(kind: str) -> PrivateKey:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:] or 2048))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cosign_sign(key: PrivateKey, payload: bytes, *, pss: bool = False, ec_hash: hashes.HashAlgorithm | None = None) -> str:
    """Sign as cosign does: ECDSA/SHA-256 DER, RSA PKCS#1 v1.5 (or PSS), Ed25519 pure."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(payload, ec.ECDSA(ec_hash or hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32) if pss else padding.PKCS1v15()
        )
        sig = key.sign(payload, pad, hashes.SHA256())
    else:
        sig = key.sign(payload)
    return base64.b64encode(sig).decode()


# --- a test PKI -----------------------------------------------------------------------------------

NOW = datetime.now(UTC)


def name(cn: str, org: str = "Moorage Test", c: str = "US", st: str = "WA") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, c),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, st),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _sign_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(cn: str = "Test Root", key_kind: str = "p256", *, issuer: Issued | None = None,
            not_before: datetime | None = None, not_after: datetime | None = None) -> Issued:
    key = new_key(key_kind)
    subject = name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=365))
        .not_valid_after(not_after or NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                (issuer.key if issuer else key).public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, _sign_hash(signer)), key)  # type: ignore[arg-type]


def make_leaf(
    ca: Issued,
    cn: str = "Test Signer",
    key_kind: str = "p256",
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    san: list[x509.GeneralName] | None = None,
    extra: list[tuple[x509.ExtensionType, bool]] | None = None,
    org: str = "Moorage Test",
) -> Issued:
    key = new_key(key_kind)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn, org=org) if cn else x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if eku is None:
        eku = [ExtendedKeyUsageOID.CODE_SIGNING]
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=True)
    for ext, critical in extra or []:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(builder.sign(ca.key, _sign_hash(ca.key)), key)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_spki(pem_or_key: bytes | Any) -> bytes:
    key = serialization.load_pem_public_key(pem_or_key) if isinstance(pem_or_key, bytes) else pem_or_key
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_details(der: bytes) -> str:
    key = serialization.load_der_public_key(der)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "PKIX_ED25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "PKIX_ECDSA_P256_SHA_256", "secp384r1": "PKIX_ECDSA_P384_SHA_384"}[key.curve.name]
    return "PKIX_RSA_PKCS1V15_2048_SHA256"


def trusted_root(
    *,
    rekor_keys: list[bytes | Any] = (),  # type: ignore[assignment]
    fulcio_chains: list[list[x509.Certificate]] = (),  # type: ignore[assignment]
    ct_keys: list[bytes | Any] = (),  # type: ignore[assignment]
) -> bytes:
    """A Sigstore trusted_root.json as `cosign trusted-root create` would write for a private instance."""
    start = "2000-01-01T00:00:00Z"

    def log(key: bytes | Any, url: str) -> dict[str, Any]:
        der = _der_spki(key)
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(der), "keyDetails": _key_details(der), "validFor": {"start": start}},
            "logId": {"keyId": b64(hashlib.sha256(der).digest())},
        }

    doc = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log(k, "https://rekor.example") for k in rekor_keys],
        "certificateAuthorities": [
            {
                "subject": {"organization": "test", "commonName": "test"},
                "uri": "https://fulcio.example",
                "certChain": {"certificates": [{"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))} for c in chain]},
                "validFor": {"start": start},
            }
            for chain in fulcio_chains
        ],
        "ctlogs": [log(k, "https://ctfe.example") for k in ct_keys],
        "timestampAuthorities": [],
    }
    return json.dumps(doc).encode()


def rekor_bundle_annotation(
    rekor_key: ec.EllipticCurvePrivateKey, signature_b64: str, payload: bytes, signer_pem: bytes,
    integrated_time: int, log_index: int = 7,
) -> str:
    """A cosign `dev.sigstore.cosign/bundle` annotation: a hashedrekord entry and its SET."""
    import rfc8785

    body = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": signature_b64, "publicKey": {"content": b64(signer_pem)}},
        },
    }
    log_id = hashlib.sha256(_der_spki(rekor_key.public_key())).hexdigest()
    entry = {
        "body": b64(json.dumps(body).encode()),
        "integratedTime": integrated_time,
        "logIndex": log_index,
        "logID": log_id,
    }
    set_sig = rekor_key.sign(rfc8785.dumps(entry), ec.ECDSA(hashes.SHA256()))
    return json.dumps({"SignedEntryTimestamp": b64(set_sig), "Payload": entry})


@dataclass
class FakeSigstore:
    """A private Sigstore instance: Fulcio root + intermediate, a Rekor key, no CT log."""

    root: Issued = field(default_factory=lambda: make_ca("fulcio-root", "p384"))
    rekor: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.intermediate = make_ca("fulcio-intermediate", "p384", issuer=self.root)

    def trusted_root(self, with_intermediate: bool = False) -> bytes:
        chain = [self.intermediate.cert, self.root.cert] if with_intermediate else [self.root.cert]
        return trusted_root(rekor_keys=[self.rekor.public_key()], fulcio_chains=[chain])

    def fulcio_cert(self, email: str = "dev@example.com", issuer: str = "https://issuer.example",
                    **kw: Any) -> Issued:
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), issuer.encode())
        kw.setdefault("not_before", NOW - timedelta(minutes=5))
        kw.setdefault("not_after", NOW + timedelta(minutes=5))
        return make_leaf(self.intermediate, "", san=[x509.RFC822Name(email)], extra=[(ext, False)], **kw)


def _notation_sign(key: PrivateKey, data: bytes, alg: str) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("PS"):
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
    n = (key.curve.key_size + 7) // 8
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def notation_payload(subject: Subject) -> bytes:
    return json.dumps(
        {"targetArtifact": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}}
    ).encode()


def notation_jws(
    signer: Issued, chain: list[Issued], payload: bytes, *, alg: str = "ES256",
    signing_time: datetime | None = None, expiry: datetime | None = None,
    scheme: str = "notary.x509", extra: dict[str, Any] | None = None, crit_extra: list[str] | None = None,
) -> bytes:
    protected: dict[str, Any] = {
        "alg": alg,
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": scheme,
    }
    crit = ["io.cncf.notary.signingScheme"]
    t = (signing_time or NOW).strftime("%Y-%m-%dT%H:%M:%SZ")
    if scheme == "notary.x509":
        protected["io.cncf.notary.signingTime"] = t
    else:
        protected["io.cncf.notary.authenticSigningTime"] = t
        crit.append("io.cncf.notary.authenticSigningTime")
    if expiry:
        protected["io.cncf.notary.expiry"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        crit.append("io.cncf.notary.expiry")
    protected.update(extra or {})
    protected["crit"] = crit + (crit_extra or [])
    p64 = b64url(json.dumps(protected).encode())
    pl64 = b64url(payload)
    sig = _notation_sign(signer.key, f"{p64}.{pl64}".encode(), alg)
    return json.dumps(
        {
            "payload": pl64,
            "protected": p64,
            "header": {"x5c": [b64(c.der) for c in [signer, *chain]], "io.cncf.notary.signingAgent": "moorage-tests"},
            "signature": b64url(sig),
        }
    ).encode()


def notation_cose(
    signer: Issued, chain: list[Issued], payload: bytes, *, alg: str = "ES256",
    signing_time: datetime | None = None, expiry: datetime | None = None,
) -> bytes:
    import cbor2

    alg_id = {"PS256": -37, "PS384": -38, "PS512": -39, "ES256": -7, "ES384": -35, "ES512": -36}[alg]
    protected: dict[Any, Any] = {
        1: alg_id,
        2: ["io.cncf.notary.signingScheme"] + (["io.cncf.notary.expiry"] if expiry else []),
        3: "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": cbor2.CBORTag(1, int((signing_time or NOW).timestamp())),
    }
    if expiry:
        protected["io.cncf.notary.expiry"] = cbor2.CBORTag(1, int(expiry.timestamp()))
    pbytes = cbor2.dumps(protected)
    sig = _notation_sign(signer.key, cbor2.dumps(["Signature1", pbytes, b"", payload]), alg)
    unprotected = {33: [c.der for c in [signer, *chain]], "io.cncf.notary.signingAgent": "moorage-tests"}
    return cbor2.dumps(cbor2.CBORTag(18, [pbytes, unprotected, payload, sig]))
