"""Manifest and index parsing and validation (OCI image-spec v1.1, Docker schema 2).

Pure: takes the request bytes and the client's Content-Type, returns a :class:`ParsedManifest` or
raises :class:`ManifestError` naming what is wrong. Checks that need the database (do the referenced
blobs exist in this repository?) are the caller's; this module tells it what is referenced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from . import mediatypes as mt
from .digest import Digest, InvalidDigest

# RFC 6838 media type, as the image-spec descriptor grammar requires.
MEDIA_TYPE_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z"
)
# Layers that a client fetches from elsewhere (``urls``) need not be stored here.
_FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


class ManifestError(ValueError):
    """The payload is not a manifest the registry accepts. ``code`` is the OCI error code."""

    def __init__(self, message: str, code: str = "MANIFEST_INVALID") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass(slots=True)
class ParsedManifest:
    media_type: str
    artifact_type: str | None
    config: Descriptor | None
    layers: list[Descriptor] = field(default_factory=list)
    manifests: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    def required_blobs(self) -> list[Digest]:
        """Blobs that must be linked into the repository for this manifest to be accepted."""
        out: list[Digest] = []
        if self.config is not None:
            out.append(self.config.digest)
        for layer in self.layers:
            if layer.urls and layer.media_type in _FOREIGN_LAYER_TYPES:
                continue
            out.append(layer.digest)
        return out

    def required_manifests(self) -> list[Digest]:
        return [m.digest for m in self.manifests]

    def referrer_artifact_type(self) -> str | None:
        """``artifactType`` as the referrers API reports it (falls back to the config type)."""
        if self.artifact_type:
            return self.artifact_type
        if self.config is not None and not self.is_index:
            return self.config.media_type
        return None


def _require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be a JSON object")
    return value


def _media_type(value: Any, where: str) -> str:
    if not isinstance(value, str) or not MEDIA_TYPE_RE.match(value):
        raise ManifestError(f"{where} must be a valid media type")
    return value


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    obj = _require_dict(value, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise ManifestError(f"{where} must map strings to strings")
    return obj


def parse_descriptor(value: Any, where: str) -> Descriptor:
    obj = _require_dict(value, where)
    media_type = _media_type(obj.get("mediaType"), f"{where}.mediaType")
    raw_digest = obj.get("digest")
    if not isinstance(raw_digest, str):
        raise ManifestError(f"{where}.digest must be a string")
    try:
        digest = Digest.parse(raw_digest)
    except InvalidDigest as exc:
        raise ManifestError(f"{where}.digest: {exc}") from None
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > 2**63 - 1:
        raise ManifestError(f"{where}.size must be a non-negative integer")
    artifact_type = obj.get("artifactType")
    if artifact_type is not None:
        artifact_type = _media_type(artifact_type, f"{where}.artifactType")
    urls = obj.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{where}.urls must be a list of strings")
    platform = obj.get("platform")
    if platform is not None:
        platform = _require_dict(platform, f"{where}.platform")
        if not isinstance(platform.get("os"), str) or not isinstance(
            platform.get("architecture"), str
        ):
            raise ManifestError(f"{where}.platform needs string 'os' and 'architecture'")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type,
        annotations=_annotations(obj.get("annotations"), f"{where}.annotations"),
        platform=platform,
        urls=tuple(urls),
    )


def _descriptor_list(value: Any, where: str) -> list[Descriptor]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{where} must be an array")
    return [parse_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _load_json(payload: bytes) -> dict[str, Any]:
    try:
        # RFC 8259: exchanged JSON is UTF-8 (no BOM); json.loads(bytes) would guess UTF-16/32.
        doc = json.loads(payload.decode("utf-8"))
    except RecursionError:
        raise ManifestError("manifest JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    return _require_dict(doc, "manifest")


def parse_manifest(payload: bytes, content_type: str | None) -> ParsedManifest:
    """Parse a manifest or index pushed with *content_type*; raise :class:`ManifestError`."""
    content_type = (content_type or "").split(";", 1)[0].strip().lower() or None
    if content_type in mt.SCHEMA1:
        raise ManifestError(
            "Docker image manifest schema 1 is not supported: push schema 2 or OCI "
            "(e.g. skopeo copy --format v2s2)",
            code="MANIFEST_INVALID",
        )
    doc = _load_json(payload)
    version = doc.get("schemaVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError("schemaVersion must be the integer 2")
    if version == 1:
        raise ManifestError("Docker image manifest schema 1 is not supported: push schema 2 or OCI")
    if version != 2:
        raise ManifestError("schemaVersion must be 2")

    declared = doc.get("mediaType")
    if declared is not None:
        declared = _media_type(declared, "mediaType")
    if declared and content_type and declared != content_type:
        raise ManifestError(
            f"mediaType {declared!r} does not match Content-Type {content_type[:100]!r}"
        )
    media_type = declared or content_type
    if media_type is None or media_type not in mt.MANIFEST_TYPES:
        # OCI allows omitting mediaType; classify by structure.
        if media_type is None or media_type in ("application/json", "application/octet-stream"):
            media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
        else:
            raise ManifestError(f"unsupported manifest media type {media_type[:100]!r}")
    if media_type in (mt.DOCKER_MANIFEST, mt.DOCKER_LIST) and declared is None:
        raise ManifestError("Docker schema 2 manifests must declare mediaType")

    artifact_type = doc.get("artifactType")
    if artifact_type is not None:
        artifact_type = _media_type(artifact_type, "artifactType")
    subject = doc.get("subject")
    parsed_subject = parse_descriptor(subject, "subject") if subject is not None else None
    annotations = _annotations(doc.get("annotations"), "annotations")

    if media_type in mt.INDEXES:
        if "config" in doc or "layers" in doc:
            raise ManifestError("an index must not have 'config' or 'layers'")
        if "manifests" not in doc:
            raise ManifestError("an index needs a 'manifests' array")
        manifests = _descriptor_list(doc.get("manifests"), "manifests")
        for i, child in enumerate(manifests):
            if media_type == mt.DOCKER_LIST and child.media_type not in mt.MANIFEST_TYPES:
                raise ManifestError(f"manifests[{i}] is not a manifest media type")
        return ParsedManifest(
            media_type=media_type,
            artifact_type=artifact_type,
            config=None,
            manifests=manifests,
            subject=parsed_subject,
            annotations=annotations,
        )

    if "manifests" in doc:
        raise ManifestError("an image manifest must not have 'manifests'")
    if "config" not in doc:
        raise ManifestError("an image manifest needs a 'config' descriptor")
    config = parse_descriptor(doc["config"], "config")
    if "layers" not in doc and media_type == mt.DOCKER_MANIFEST:
        raise ManifestError("a Docker schema 2 manifest needs a 'layers' array")
    layers = _descriptor_list(doc.get("layers"), "layers")
    return ParsedManifest(
        media_type=media_type,
        artifact_type=artifact_type,
        config=config,
        layers=layers,
        subject=parsed_subject,
        annotations=annotations,
    )
