"""A private Sigstore instance in memory, to make real keyless bundles for sigstore-python to verify.

Fulcio (root + intermediate issuing short-lived code-signing certificates with an embedded SCT),
a CT log key, and a Rekor log of one entry (inclusion proof of a one-leaf tree, signed checkpoint,
SET). Every signature is real; sigstore-python's Verifier decides.
"""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import timedelta
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from .helpers import NOW, FakeSigstore, Issued, b64, make_leaf, trusted_root

SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _octet_string(data: bytes) -> bytes:
    n = len(data)
    length = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return b"\x04" + length + data


class KeylessInstance(FakeSigstore):
    def __init__(self) -> None:
        super().__init__()
        self.ct = ec.generate_private_key(ec.SECP256R1())

    def trusted_root(self, with_intermediate: bool = True) -> bytes:  # type: ignore[override]
        chain = [self.intermediate.cert, self.root.cert] if with_intermediate else [self.root.cert]
        return trusted_root(rekor_keys=[self.rekor.public_key()], fulcio_chains=[chain], ct_keys=[self.ct.public_key()])

    def certificate(self, email: str = "dev@example.com", issuer: str = "https://issuer.example",
                    not_after: Any = None) -> Issued:
        """A Fulcio-style certificate whose SCT is signed by this instance's CT log."""
        issuer_ext = x509.UnrecognizedExtension(ISSUER_OID, issuer.encode())
        placeholder = x509.UnrecognizedExtension(SCT_OID, _octet_string(b"\x00\x00"))
        kw: dict[str, Any] = {
            "san": [x509.RFC822Name(email)],
            "not_before": NOW - timedelta(minutes=5),
            "not_after": not_after or NOW + timedelta(minutes=5),
        }
        draft = make_leaf(self.intermediate, "", extra=[(issuer_ext, False), (placeholder, False)], **kw)
        timestamp = int(NOW.timestamp() * 1000)
        tbs = draft.cert.tbs_precertificate_bytes
        issuer_key_hash = hashlib.sha256(_spki(self.intermediate.cert.public_key())).digest()
        signed = (
            b"\x00\x00" + struct.pack(">Q", timestamp) + b"\x00\x01" + issuer_key_hash
            + len(tbs).to_bytes(3, "big") + tbs + b"\x00\x00"
        )
        sig = self.ct.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(_spki(self.ct.public_key())).digest()
        sct = b"\x00" + log_id + struct.pack(">Q", timestamp) + b"\x00\x00" + b"\x04\x03" + struct.pack(">H", len(sig)) + sig
        sct_list = struct.pack(">H", len(sct) + 2) + struct.pack(">H", len(sct)) + sct
        real = x509.UnrecognizedExtension(SCT_OID, _octet_string(sct_list))
        # Same key and fields as the draft, so the precertificate TBS the SCT signs is unchanged.
        builder = (
            x509.CertificateBuilder()
            .subject_name(draft.cert.subject)
            .issuer_name(draft.cert.issuer)
            .public_key(draft.key.public_key())  # type: ignore[arg-type]
            .serial_number(draft.cert.serial_number)
            .not_valid_before(draft.cert.not_valid_before_utc)
            .not_valid_after(draft.cert.not_valid_after_utc)
        )
        for ext in draft.cert.extensions:
            value = real if ext.oid == SCT_OID else ext.value
            builder = builder.add_extension(value, critical=ext.critical)
        cert = builder.sign(self.intermediate.key, hashes.SHA256())  # type: ignore[arg-type]
        assert cert.tbs_precertificate_bytes == tbs
        return Issued(cert, draft.key)

    def _log_entry(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        canonical = json.dumps(body).encode()
        log_key_id = hashlib.sha256(_spki(self.rekor.public_key())).digest()
        integrated = int(NOW.timestamp())
        set_payload = {
            "body": b64(canonical), "integratedTime": integrated, "logID": log_key_id.hex(), "logIndex": 0,
        }
        set_sig = self.rekor.sign(rfc8785.dumps(set_payload), ec.ECDSA(hashes.SHA256()))
        root_hash = hashlib.sha256(b"\x00" + canonical).digest()
        note = f"rekor.example - 1\n1\n{b64(root_hash)}\n"
        note_sig = self.rekor.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + "\n" + f"\u2014 rekor.example {b64(log_key_id[:4] + note_sig)}\n"
        return {
            "logIndex": "0",
            "logId": {"keyId": b64(log_key_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": b64(set_sig)},
            "inclusionProof": {
                "logIndex": "0", "rootHash": b64(root_hash), "treeSize": "1", "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": b64(canonical),
        }

    def message_signature_bundle(self, image_digest: str, cert: Issued | None = None) -> bytes:
        """A v0.3 bundle whose message signature covers the image manifest digest."""
        cert = cert or self.certificate()
        digest = bytes.fromhex(image_digest.removeprefix("sha256:"))
        sig = cert.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # type: ignore[call-arg, arg-type]
        body = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                "signature": {"content": b64(sig), "publicKey": {"content": b64(cert.pem)}},
            },
        }
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {
                    "certificate": {"rawBytes": b64(cert.der)},
                    "tlogEntries": [self._log_entry(body, "hashedrekord")],
                },
                "messageSignature": {
                    "messageDigest": {"algorithm": "SHA2_256", "digest": b64(digest)},
                    "signature": b64(sig),
                },
            }
        ).encode()


def dsse_key_bundle(key: Any, image_digest: str, predicate: str = "https://sigstore.dev/cosign/sign/v1") -> bytes:
    """A key-based bundle (public key hint) around a DSSE in-toto statement, as cosign --key writes."""
    from .helpers import cosign_sign

    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example/app", "digest": {"sha256": image_digest.removeprefix("sha256:")}}],
            "predicateType": predicate,
            "predicate": {},
        }
    ).encode()
    payload_type = "application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(statement), statement)
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "ci"}},
            "dsseEnvelope": {
                "payload": b64(statement),
                "payloadType": payload_type,
                "signatures": [{"sig": cosign_sign(key, pae)}],
            },
        }
    ).encode()
