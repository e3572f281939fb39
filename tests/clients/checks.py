"""Assertions shared by the client tests: what the registry serves, byte for byte."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx

from .harness import Registry
from .ocigen import OCI_INDEX, Image, ImageIndex, Layout, sha256


def describe(r: httpx.Response) -> str:
    """One request/response pair, for assertion messages."""
    body = r.content[:600] if r.request.method != "HEAD" else b""
    headers = "\n".join(f"  {k}: {v}" for k, v in r.headers.items())
    return (
        f"{r.request.method} {r.request.url} (Accept: {r.request.headers.get('accept')})\n"
        f"-> {r.status_code}\n{headers}\n  {body!r}"
    )


def assert_manifest_served(
    registry: Registry, repo: str, reference: str, data: bytes, media_type: str
) -> None:
    """GET and HEAD of the manifest return exactly ``data`` with the right digest and type."""
    digest = sha256(data)
    r = registry.get_manifest(repo, reference)
    assert r.status_code == 200, describe(r)
    assert r.content == data, f"manifest bytes differ\n{describe(r)}"
    assert r.headers.get("docker-content-digest") == digest, describe(r)
    assert r.headers.get("content-type", "").split(";")[0].strip() == media_type, describe(r)
    h = registry.get_manifest(repo, reference, method="HEAD")
    assert h.status_code == 200, describe(h)
    assert h.headers.get("docker-content-digest") == digest, describe(h)
    assert int(h.headers.get("content-length", -1)) == len(data), describe(h)
    if reference != digest:
        by_digest = registry.get_manifest(repo, digest)
        assert by_digest.status_code == 200 and by_digest.content == data, describe(by_digest)


def assert_blob_served(registry: Registry, repo: str, digest: str, data: bytes) -> None:
    h = registry.get_blob(repo, digest, method="HEAD")
    assert h.status_code == 200, describe(h)
    assert int(h.headers.get("content-length", -1)) == len(data), describe(h)
    r = registry.get_blob(repo, digest)
    assert r.status_code == 200, describe(r)
    assert sha256(r.content) == digest and r.content == data, f"blob bytes differ\n{describe(r)}"


def assert_image_in_registry(registry: Registry, repo: str, tag: str, image: Image) -> None:
    assert_manifest_served(registry, repo, tag, image.manifest.data, image.manifest.media_type)
    for blob in [image.config, *image.layers]:
        assert_blob_served(registry, repo, blob.digest, blob.data)


def assert_index_in_registry(registry: Registry, repo: str, tag: str, index: ImageIndex) -> None:
    assert_manifest_served(registry, repo, tag, index.index.data, OCI_INDEX)
    for image in index.images:
        assert_manifest_served(
            registry, repo, image.digest, image.manifest.data, image.manifest.media_type
        )
        for blob in [image.config, *image.layers]:
            assert_blob_served(registry, repo, blob.digest, blob.data)


def assert_image_in_layout(layout: Layout, digest: str, image: Image) -> None:
    """The layout holds ``image`` unchanged under manifest ``digest``."""
    assert digest == image.digest
    assert layout.blob(digest) == image.manifest.data
    for blob in [image.config, *image.layers]:
        assert layout.blob(blob.digest) == blob.data


def layer_files(layout_dir: Path, manifest_digest: str | None = None) -> dict[str, bytes]:
    """All regular files of an image in an OCI layout, applying layers in order."""
    layout = Layout(layout_dir)
    if manifest_digest is None:
        assert len(layout.index["manifests"]) == 1, layout.index
        manifest_digest = layout.index["manifests"][0]["digest"]
    manifest = layout.json_blob(manifest_digest)
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        raw = layout.blob(layer["digest"])
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./").lstrip("/")
                if member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    files[name] = f.read()
    return files


def json_out(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc
