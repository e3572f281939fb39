"""The replication test set, built locally and pushed with plain HTTP (not with the code under
test), so that a bug in the client cannot hide in the setup.

One repository holds:

* ``multi``: an OCI index of linux/amd64, linux/arm64/v8 and linux/s390x images plus a buildx
  style attestation manifest for the amd64 image (platform unknown/unknown);
* ``single``: one OCI image; ``docker``: a Docker schema 2 image (Docker media types);
* a cosign-style signature of ``multi`` under the tag ``sha256-<hex>.sig`` (simple-signing
  payload layer, ECDSA P-256 signature annotation, as cosign writes it);
* an SPDX SBOM referrer of ``multi`` (OCI 1.1 ``subject``), a signature referrer of that SBOM
  (level 2), and an SBOM referrer of the amd64 child.

Registries without the referrers API (Distribution 2.8.2) get the ``sha256-<hex>`` referrers tag,
as an OCI 1.1 client maintains it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.clients.ocigen import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Image,
    canonical_json,
    make_image,
    make_layer,
)

SPDX = "application/spdx+json"
COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
EMPTY = Blob(OCI_EMPTY, b"{}")


def referrers_tag(digest: str) -> str:
    return digest.replace(":", "-")


@dataclass
class Manifest:
    """A manifest to push: its bytes, where (tag or digest), and what it needs first."""

    blob: Blob
    ref: str
    blobs: list[Blob] = field(default_factory=list)
    subject: str | None = None

    @property
    def digest(self) -> str:
        return self.blob.digest


@dataclass
class ImageSet:
    manifests: list[Manifest]  # push order: children before indexes, subjects before referrers
    tags: dict[str, str]  # tag -> digest
    index: Blob
    children: dict[str, str]  # platform ("linux/amd64", "attestation") -> child digest
    signature_tag: str
    sbom: str
    sbom_signature: str
    child_sbom: str

    def digests(self) -> set[str]:
        return {m.digest for m in self.manifests}


def _image_manifest(image: Image) -> Manifest:
    return Manifest(image.manifest, image.digest, [image.config, *image.layers])


def _artifact(
    artifact_type: str, layer: Blob, subject: Blob, annotations: dict[str, str] | None = None
) -> Manifest:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY.descriptor(),
        "layers": [layer.descriptor()],
        "subject": subject.descriptor(),
    }
    if annotations:
        doc["annotations"] = annotations
    blob = Blob(OCI_MANIFEST, canonical_json(doc))
    return Manifest(blob, blob.digest, [EMPTY, layer], subject=subject.digest)


def cosign_signature(subject: str, reference: str) -> Manifest:
    """A cosign key signature as cosign stores it: simple-signing payload as the layer, the
    ECDSA signature in the layer's annotation, under the tag ``sha256-<hex>.sig``."""
    payload = canonical_json(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": subject},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    )
    key = ec.generate_private_key(ec.SECP256R1())
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = Blob(COSIGN_PAYLOAD, payload)
    config = Blob(
        OCI_CONFIG,
        canonical_json(
            {
                "architecture": "",
                "config": {},
                "created": "0001-01-01T00:00:00Z",
                "history": [{"created": "0001-01-01T00:00:00Z"}],
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor(annotations={"dev.cosignproject.cosign/signature": signature})],
    }
    blob = Blob(OCI_MANIFEST, canonical_json(doc))
    return Manifest(blob, referrers_tag(subject) + ".sig", [config, layer])


def docker_image() -> Manifest:
    layer, diff_id = make_layer({"docker/hello.txt": os.urandom(2048)})
    layer = Blob(DOCKER_LAYER_GZIP, layer.data)
    config = Blob(
        DOCKER_CONFIG,
        canonical_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/true"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ),
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    # Docker's own indentation: a copy must keep these bytes, not re-serialize them.
    blob = Blob(DOCKER_MANIFEST, json.dumps(doc, indent=3).encode())
    return Manifest(blob, "docker", [config, layer])


def build_set(reference: str = "example.test/app") -> ImageSet:
    amd64 = make_image("amd64", label="amd64")
    arm64 = make_image("arm64", variant="v8", label="arm64")
    s390x = make_image("s390x", label="s390x")
    attestation_layer = Blob("application/vnd.in-toto+json", canonical_json({"predicate": {}}))
    attestation_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": EMPTY.descriptor(),
        "layers": [attestation_layer.descriptor()],
    }
    attestation = Blob(OCI_MANIFEST, canonical_json(attestation_doc))
    index_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            *(img.manifest.descriptor(platform=img.platform) for img in (amd64, arm64, s390x)),
            attestation.descriptor(
                platform={"architecture": "unknown", "os": "unknown"},
                annotations={
                    "vnd.docker.reference.digest": amd64.digest,
                    "vnd.docker.reference.type": "attestation-manifest",
                },
            ),
        ],
    }
    index = Blob(OCI_INDEX, canonical_json(index_doc))
    single = make_image("amd64", label="single")
    docker = docker_image()
    signature = cosign_signature(index.digest, f"{reference}:multi")
    sbom = _artifact(
        SPDX,
        Blob(
            SPDX,
            canonical_json({"spdxVersion": "SPDX-2.3", "name": "multi", "n": os.urandom(4).hex()}),
        ),
        index,
        {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    )
    sbom_sig = _artifact(SIG_ARTIFACT, Blob(SIG_ARTIFACT, os.urandom(64)), sbom.blob)
    child_sbom = _artifact(
        SPDX,
        Blob(SPDX, canonical_json({"spdxVersion": "SPDX-2.3", "name": "amd64"})),
        amd64.manifest,
    )
    manifests = [
        _image_manifest(amd64),
        _image_manifest(arm64),
        _image_manifest(s390x),
        Manifest(attestation, attestation.digest, [EMPTY, attestation_layer]),
        Manifest(index, "multi"),
        Manifest(single.manifest, "single", [single.config, *single.layers]),
        docker,
        signature,
        sbom,
        sbom_sig,
        child_sbom,
    ]
    return ImageSet(
        manifests=manifests,
        tags={
            "multi": index.digest,
            "single": single.digest,
            "docker": docker.digest,
            signature.ref: signature.digest,
        },
        index=index,
        children={
            "linux/amd64": amd64.digest,
            "linux/arm64/v8": arm64.digest,
            "linux/s390x": s390x.digest,
            "attestation": attestation.digest,
        },
        signature_tag=signature.ref,
        sbom=sbom.digest,
        sbom_signature=sbom_sig.digest,
        child_sbom=child_sbom.digest,
    )


class Pusher:
    """Pushes with plain httpx (Basic credentials when given)."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=base_url, auth=auth, timeout=120, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def blob(self, repo: str, blob: Blob) -> None:
        if self.http.head(f"/v2/{repo}/blobs/{blob.digest}").status_code == 200:
            return
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = httpx.URL(self.http.base_url).join(r.headers["location"])
        r = self.http.put(location.copy_merge_params({"digest": blob.digest}), content=blob.data)
        assert r.status_code == 201, r.text

    def manifest(self, repo: str, m: Manifest) -> None:
        for b in m.blobs:
            self.blob(repo, b)
        r = self.http.put(
            f"/v2/{repo}/manifests/{m.ref}",
            content=m.blob.data,
            headers={"Content-Type": m.blob.media_type},
        )
        assert r.status_code == 201, r.text
        if m.subject is not None and "oci-subject" not in r.headers:
            self._add_to_referrers_tag(repo, m)

    def _add_to_referrers_tag(self, repo: str, m: Manifest) -> None:
        assert m.subject is not None
        tag = referrers_tag(m.subject)
        r = self.http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_INDEX})
        index = (
            r.json()
            if r.status_code == 200
            else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        )
        doc = json.loads(m.blob.data)
        entry = m.blob.descriptor(artifactType=doc["artifactType"])
        if doc.get("annotations"):
            entry["annotations"] = doc["annotations"]
        index["manifests"].append(entry)
        r = self.http.put(
            f"/v2/{repo}/manifests/{tag}",
            content=canonical_json(index),
            headers={"Content-Type": OCI_INDEX},
        )
        assert r.status_code == 201, r.text

    def push_set(self, repo: str, test_set: ImageSet) -> None:
        for m in test_set.manifests:
            self.manifest(repo, m)

    def get(self, repo: str, ref: str) -> httpx.Response:
        accept = ", ".join(
            [
                OCI_MANIFEST,
                OCI_INDEX,
                DOCKER_MANIFEST,
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
        )
        return self.http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})

    def blob_digest(self, repo: str, digest: str) -> str:
        """Download a blob and return the sha256 of what came back."""
        h = hashlib.sha256()
        with self.http.stream("GET", f"/v2/{repo}/blobs/{digest}", follow_redirects=True) as r:
            assert r.status_code == 200, r.status_code
            for chunk in r.iter_raw():
                h.update(chunk)
        return "sha256:" + h.hexdigest()
