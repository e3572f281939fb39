"""Build small OCI images and OCI image layout directories locally (no network).

Every image gets fresh random layer content, so blobs never collide with an earlier run's.
Layers are real gzip-compressed tar files; the config carries the matching ``diff_ids`` so
that clients which verify them (podman, buildah) accept the images.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass
class Image:
    """One single-platform image: manifest, config and layers (all as bytes)."""

    manifest: Blob
    config: Blob
    layers: list[Blob]
    diff_ids: list[str]
    platform: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)  # path in the image -> content

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers, self.manifest]


@dataclass
class ImageIndex:
    """A multi-platform OCI image index and its child images."""

    index: Blob
    images: list[Image]

    @property
    def digest(self) -> str:
        return self.index.digest

    @property
    def manifest(self) -> Blob:
        return self.index

    def blobs(self) -> list[Blob]:
        out: list[Blob] = []
        for image in self.images:
            out.extend(image.blobs())
        out.append(self.index)
        return out


def make_layer(files: dict[str, bytes]) -> tuple[Blob, str]:
    """Return (gzip tar layer blob, diff_id of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = 1_700_000_000
                    tar.addfile(info)
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(files[path])
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(files[path]))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    return Blob(OCI_LAYER_GZIP, gz), sha256(tar_bytes)


def make_image(
    architecture: str = "amd64",
    os_name: str = "linux",
    variant: str | None = None,
    n_layers: int = 2,
    layer_size: int = 4096,
    label: str = "moorage-client-test",
    base: list[tuple[Blob, str]] | None = None,
) -> Image:
    """A small random image with ``n_layers`` gzip tar layers (after the ``base`` layers, as
    (layer, diff_id) pairs from :func:`make_layer`, which several images can share)."""
    layers: list[Blob] = [layer for layer, _ in base or []]
    diff_ids: list[str] = [diff_id for _, diff_id in base or []]
    all_files: dict[str, bytes] = {}
    for i in range(n_layers):
        files = {
            f"moorage/{architecture}/layer{i}/random.bin": os.urandom(layer_size),
            f"moorage/{architecture}/layer{i}/hello.txt": f"hello from layer {i} ({architecture})\n".encode(),
        }
        all_files.update(files)
        layer, diff_id = make_layer(files)
        layers.append(layer)
        diff_ids.append(diff_id)
    platform = {"architecture": architecture, "os": os_name}
    if variant:
        platform["variant"] = variant
    config = {
        "created": "2024-01-01T00:00:00Z",
        **platform,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": {"org.example.test": label},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": f"moorage test layer {i}"}
            for i in range(len(layers))
        ],
    }
    config_blob = Blob(OCI_CONFIG, canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": {"org.opencontainers.image.title": label},
    }
    return Image(
        manifest=Blob(OCI_MANIFEST, canonical_json(manifest)),
        config=config_blob,
        layers=layers,
        diff_ids=diff_ids,
        platform=platform,
        files=all_files,
    )


def make_index(images: list[Image]) -> ImageIndex:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [image.manifest.descriptor(platform=image.platform) for image in images],
    }
    return ImageIndex(index=Blob(OCI_INDEX, canonical_json(index)), images=images)


def make_multiarch_index(n_layers: int = 2) -> ImageIndex:
    return make_index(
        [
            make_image("amd64", n_layers=n_layers, label="multi-amd64"),
            make_image("arm64", variant="v8", n_layers=n_layers, label="multi-arm64"),
        ]
    )


def write_layout(path: Path, refs: Mapping[str, Image | ImageIndex]) -> Path:
    """Write an OCI image layout at ``path`` holding ``refs`` (tag -> image or index)."""
    blob_dir = path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for tag, obj in refs.items():
        for blob in obj.blobs():
            (blob_dir / blob.digest.split(":", 1)[1]).write_bytes(blob.data)
        entries.append(obj.manifest.descriptor(annotations={REF_NAME: tag}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    (path / "index.json").write_text(json.dumps(index))
    return path


class Layout:
    """Read access to an OCI image layout directory written by any tool."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.index: dict[str, Any] = json.loads((self.path / "index.json").read_text())

    def descriptor(self, tag: str) -> dict[str, Any]:
        found = [
            d for d in self.index["manifests"] if d.get("annotations", {}).get(REF_NAME) == tag
        ]
        assert len(found) == 1, f"tag {tag!r} in {self.path}/index.json: {self.index}"
        descriptor: dict[str, Any] = found[0]
        return descriptor

    def blob(self, digest: str) -> bytes:
        algo, hexd = digest.split(":", 1)
        data = (self.path / "blobs" / algo / hexd).read_bytes()
        assert sha256(data) == digest, f"layout blob {digest} has wrong content"
        return data

    def json_blob(self, digest: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.blob(digest))
        return doc
