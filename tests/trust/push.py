"""Pushing images and signature artifacts over /v2 (for the trust capability's tests).

Signatures are made here in the formats the real tools push: cosign's ``sha256-<hex>.sig``
manifest (simple-signing payload layers with the ``dev.cosignproject.cosign/signature``
annotation) and Notation's referrer (artifact type ``application/vnd.cncf.notary.signature``,
one JWS or COSE envelope layer, ``subject`` = the image).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import httpx

from moorage.trust import Subject

from .helpers import (
    Issued,
    PrivateKey,
    cosign_sign,
    notation_jws,
    notation_payload,
    simple_signing_payload,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
NOTATION = "application/vnd.cncf.notary.signature"
JWS = "application/jose+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_blob(c: httpx.AsyncClient, repo: str, data: bytes) -> str:
    digest = sha256(data)
    r = await c.post(f"/v2/{repo}/blobs/uploads/?digest={digest}", content=data)
    assert r.status_code == 201, r.text
    return digest


async def put_manifest(
    c: httpx.AsyncClient, repo: str, ref: str, doc: dict[str, Any], media_type: str = OCI_MANIFEST
) -> tuple[str, bytes]:
    payload = json.dumps(doc).encode()
    r = await c.put(
        f"/v2/{repo}/manifests/{ref}", content=payload, headers={"Content-Type": media_type}
    )
    assert r.status_code == 201, r.text
    return r.headers["docker-content-digest"], payload


async def push_image(c: httpx.AsyncClient, repo: str, tag: str) -> tuple[str, bytes]:
    """A small image with a random layer; returns (digest, manifest bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(8).hex()}).encode()
    layer = os.urandom(256)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": await push_blob(c, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": await push_blob(c, repo, layer),
                "size": len(layer),
            }
        ],
    }
    return await put_manifest(c, repo, tag, doc)


def cosign_layers(
    digest: str, keys: list[PrivateKey], reference: str = "registry.example/app"
) -> list[tuple[bytes, dict[str, str]]]:
    payload = simple_signing_payload(digest, reference)
    return [
        (payload, {"dev.cosignproject.cosign/signature": cosign_sign(k, payload)}) for k in keys
    ]


async def push_cosign_signature(
    c: httpx.AsyncClient,
    repo: str,
    digest: str,
    keys: list[PrivateKey],
    reference: str = "registry.example/app",
) -> str:
    """cosign's tag scheme: one manifest under ``sha256-<hex>.sig`` holding every signature."""
    config = await push_blob(c, repo, b"{}")
    layers = []
    for payload, notes in cosign_layers(digest, keys, reference):
        layers.append(
            {
                "mediaType": SIMPLE_SIGNING,
                "digest": await push_blob(c, repo, payload),
                "size": len(payload),
                "annotations": notes,
            }
        )
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers,
    }
    sig, _ = await put_manifest(c, repo, digest.replace(":", "-") + ".sig", doc)
    return sig


async def push_notation_signature(
    c: httpx.AsyncClient,
    repo: str,
    subject: Subject,
    signer: Issued,
    chain: list[Issued],
) -> str:
    envelope = notation_jws(signer, chain, notation_payload(subject), alg="ES256")
    empty = await push_blob(c, repo, b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": NOTATION,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [
            {"mediaType": JWS, "digest": await push_blob(c, repo, envelope), "size": len(envelope)}
        ],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
    }
    sig, _ = await put_manifest(c, repo, sha256(json.dumps(doc).encode()), doc)
    return sig
