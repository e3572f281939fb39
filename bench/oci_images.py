"""Generate OCI image layouts on disk for the benchmark.

Every image is written as an OCI image layout directory (``oci-layout``, ``index.json``,
``blobs/sha256/...``) with a single manifest tagged ``1``, so that
``skopeo copy oci:DIR:1 docker://HOST/REPO:1`` pushes it unchanged.

Content is random (seeded, so a run is reproducible) and therefore incompressible: gzip
costs the server nothing and the byte counts mean what they say.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

TAG = "1"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class OciImage:
    """An image written as an OCI layout directory."""

    path: Path
    manifest: Descriptor
    config: Descriptor
    layers: list[Descriptor] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.manifest.size + self.config.size + sum(d.size for d in self.layers)

    def skopeo_ref(self) -> str:
        return f"oci:{self.path}:{TAG}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class _Layout:
    """Writes blobs into an OCI layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blob_dir = path / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digest.removeprefix("sha256:")

    def add_bytes(self, media_type: str, data: bytes) -> Descriptor:
        digest = sha256_digest(data)
        self.blob_path(digest).write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def link_file(self, media_type: str, src: Path, digest: str) -> Descriptor:
        """Add an existing file as a blob (hard link, so a big blob is not copied)."""
        dst = self.blob_path(digest)
        try:
            os.link(src, dst)
        except OSError:
            with src.open("rb") as fi, dst.open("wb") as fo:
                while chunk := fi.read(_CHUNK):
                    fo.write(chunk)
        return Descriptor(media_type, digest, src.stat().st_size)

    def finish(self, config: Descriptor, layers: list[Descriptor]) -> OciImage:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.to_json(),
            "layers": [d.to_json() for d in layers],
        }
        mdesc = self.add_bytes(MEDIA_MANIFEST, json.dumps(manifest, indent=2).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {**mdesc.to_json(), "annotations": {"org.opencontainers.image.ref.name": TAG}}
            ],
        }
        (self.path / "index.json").write_text(json.dumps(index))
        return OciImage(self.path, mdesc, config, layers)


def _image_config(diff_ids: list[str], label: str) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"bench": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "bench"} for _ in diff_ids],
    }
    return json.dumps(config).encode()


def _random_tar(rng: random.Random, size: int, name: str) -> bytes:
    """An uncompressed tar holding one file of ``size`` random bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 1_700_000_000
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    return buf.getvalue()


def make_small_image(
    path: Path,
    rng: random.Random,
    label: str,
    min_layers: int = 3,
    max_layers: int = 5,
    min_kib: int = 10,
    max_kib: int = 500,
) -> OciImage:
    """A multi-layer image: ``min_layers``..``max_layers`` gzip tar layers of random content."""
    layout = _Layout(path)
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    for i in range(rng.randint(min_layers, max_layers)):
        size = rng.randint(min_kib, max_kib) * 1024
        tar = _random_tar(rng, size, f"{label}/layer{i}.bin")
        diff_ids.append(sha256_digest(tar))
        # mtime=0 keeps the gzip stream (and so the digest) reproducible for a given seed.
        layers.append(layout.add_bytes(MEDIA_LAYER_GZIP, gzip.compress(tar, 1, mtime=0)))
    config = layout.add_bytes(MEDIA_CONFIG, _image_config(diff_ids, label))
    return layout.finish(config, layers)


def make_small_images(root: Path, count: int, seed: int) -> list[OciImage]:
    rng = random.Random(seed)
    return [make_small_image(root / f"img{i}", rng, f"img{i}") for i in range(count)]


def make_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return the sha256 digest.

    os.urandom, not a seeded generator: it is 2-3x faster, which matters for a GiB, and the
    file is made once per run and shared by all servers anyway.
    """
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(_CHUNK * 8, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def make_big_image(path: Path, blob: Path, digest: str) -> OciImage:
    """A one-layer image whose layer is ``blob`` as-is (uncompressed media type).

    The bytes are random rather than a real tar; registries and skopeo do not look inside
    layers, and an uncompressed layer's diff_id is its own digest.
    """
    layout = _Layout(path)
    layer = layout.link_file(MEDIA_LAYER_TAR, blob, digest)
    config = layout.add_bytes(MEDIA_CONFIG, _image_config([digest], "big"))
    return layout.finish(config, [layer])
