"""What an OCI manifest holds, for display: a container image, a Helm chart, an SBOM, a
signature, an attestation, a WebAssembly module, an ML model, or another artifact — decided from
media types alone (pure; no I/O).

Precedence follows the image-spec's guidance for artifacts: ``artifactType`` first, then the
config's media type (unless it is the generic image config or the empty descriptor), then the
layers' media types (tag-scheme cosign signatures and SBOMs, Ollama models, … say what they are
only there).

Helm charts (Helm's OCI support, HIP-0006): config ``application/vnd.cncf.helm.config.v1+json``
whose JSON is the chart's Chart.yaml metadata, one layer
``application/vnd.cncf.helm.chart.content.v1.tar+gzip`` (the chart archive) and optionally its
provenance. :func:`parse_helm_config` reads name, version and appVersion from the config blob,
bounded: the blob comes from whoever pushed it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from . import mediatypes as mt
from .manifest import ParsedManifest

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROVENANCE = "application/vnd.cncf.helm.chart.provenance.v1.prov"
MAX_HELM_CONFIG = 1024 * 1024
MAX_FIELD = 1024


@dataclass(frozen=True, slots=True)
class ArtifactKind:
    kind: str  # image, index, helm-chart, sbom, signature, attestation, wasm, ml-model, artifact
    label: str  # for people: "Helm chart", "SBOM (SPDX)", "Signature (cosign)", …
    type: str | None = None  # the media type that decided (None for images and indexes)


# (media type, kind, label): exact matches on artifactType, config or layer media types.
_KNOWN: tuple[tuple[str, str, str], ...] = (
    (HELM_CONFIG, "helm-chart", "Helm chart"),
    (HELM_CHART, "helm-chart", "Helm chart"),
    # SBOMs: SPDX and CycloneDX as artifactType (oras, Moorage's own export) or as cosign's
    # attached-SBOM layer types; Syft's native format.
    ("application/spdx+json", "sbom", "SBOM (SPDX)"),
    ("text/spdx", "sbom", "SBOM (SPDX)"),
    ("text/spdx+json", "sbom", "SBOM (SPDX)"),
    ("text/spdx+xml", "sbom", "SBOM (SPDX)"),
    ("application/vnd.cyclonedx+json", "sbom", "SBOM (CycloneDX)"),
    ("application/vnd.cyclonedx+xml", "sbom", "SBOM (CycloneDX)"),
    ("application/vnd.cyclonedx", "sbom", "SBOM (CycloneDX)"),
    ("application/vnd.syft+json", "sbom", "SBOM (Syft)"),
    # Signatures: cosign's tag scheme (simple-signing payload layers), Sigstore bundles as OCI
    # 1.1 referrers, Notation (Notary Project).
    ("application/vnd.dev.cosign.simplesigning.v1+json", "signature", "Signature (cosign)"),
    ("application/vnd.dev.cosign.artifact.sig.v1+json", "signature", "Signature (cosign)"),
    ("application/vnd.dev.sigstore.bundle.v0.3+json", "signature", "Signature (Sigstore bundle)"),
    (
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "signature",
        "Signature (Sigstore bundle)",
    ),
    (
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "signature",
        "Signature (Sigstore bundle)",
    ),
    ("application/vnd.cncf.notary.signature", "signature", "Signature (Notation)"),
    # Attestations: in-toto statements, DSSE envelopes (cosign attest).
    ("application/vnd.in-toto+json", "attestation", "Attestation (in-toto)"),
    ("application/vnd.dsse.envelope.v1+json", "attestation", "Attestation (in-toto)"),
    # WebAssembly: the CNCF TAG Runtime artifact layout, and wasm-to-oci's older one.
    ("application/vnd.wasm.config.v0+json", "wasm", "WebAssembly module"),
    ("application/wasm", "wasm", "WebAssembly module"),
    ("application/vnd.wasm.config.v1+json", "wasm", "WebAssembly module"),
    ("application/vnd.wasm.content.layer.v1+wasm", "wasm", "WebAssembly module"),
    ("application/vnd.module.wasm.content.layer.v1+wasm", "wasm", "WebAssembly module"),
    # ML models: CNCF ModelPack, KitOps ModelKits, Docker Model Runner (GGUF), Ollama.
    ("application/vnd.cncf.model.manifest.v1+json", "ml-model", "ML model (ModelPack)"),
    ("application/vnd.cncf.model.config.v1+json", "ml-model", "ML model (ModelPack)"),
    ("application/vnd.kitops.modelkit.config.v1+json", "ml-model", "ML model (KitOps ModelKit)"),
    ("application/vnd.docker.ai.model.config.v0.1+json", "ml-model", "ML model (GGUF)"),
    ("application/vnd.docker.ai.gguf.v3", "ml-model", "ML model (GGUF)"),
    ("application/vnd.ollama.image.model", "ml-model", "ML model (Ollama)"),
    # Other well-known artifacts.
    ("application/vnd.cncf.flux.config.v1+json", "artifact", "Flux source"),
    ("application/vnd.cncf.openpolicyagent.config.v1+json", "artifact", "OPA policy bundle"),
    ("application/vnd.sylabs.sif.config.v1+json", "artifact", "Singularity image"),
)
KNOWN_TYPES: dict[str, tuple[str, str]] = {t: (k, label) for t, k, label in _KNOWN}
# Layer types that name the kind of a whole manifest (tag-scheme signatures and SBOMs, models).
_LAYER_PREFIXES = (("application/vnd.cncf.model.", "ml-model", "ML model (ModelPack)"),)
_GENERIC_CONFIGS = frozenset({mt.OCI_CONFIG, mt.DOCKER_CONFIG, mt.OCI_EMPTY})


def _normalize(media_type: str) -> str:
    """Lower case, parameters kept only where they distinguish a type (Sigstore bundles)."""
    base, _, params = media_type.strip().lower().partition(";")
    base = base.strip()
    if params and base + ";" + params.replace(" ", "") in KNOWN_TYPES:
        return base + ";" + params.replace(" ", "")
    return base


def _lookup(media_type: str | None) -> ArtifactKind | None:
    if not media_type:
        return None
    known = KNOWN_TYPES.get(_normalize(media_type))
    return ArtifactKind(known[0], known[1], media_type) if known else None


def classify_types(
    media_type: str,
    artifact_type: str | None = None,
    config_media_type: str | None = None,
    layer_media_types: Iterable[str] = (),
) -> ArtifactKind:
    """The display kind from the media types a manifest row holds (usable without the full
    manifest: the API and UI have these columns)."""
    found = _lookup(artifact_type)
    if found:
        return found
    if config_media_type and config_media_type not in _GENERIC_CONFIGS:
        found = _lookup(config_media_type)
        if found:
            return found
    layers = list(layer_media_types)[:1000]
    for layer in layers:
        found = _lookup(layer)
        if found:
            return found
        for prefix, kind, label in _LAYER_PREFIXES:
            if layer.lower().startswith(prefix):
                return ArtifactKind(kind, label, layer)
    if artifact_type:
        return ArtifactKind("artifact", artifact_type, artifact_type)
    if media_type in mt.INDEXES:
        return ArtifactKind("index", "Multi-platform image index")
    if config_media_type and config_media_type not in _GENERIC_CONFIGS:
        return ArtifactKind("artifact", config_media_type, config_media_type)
    if media_type in mt.SCHEMA1 or config_media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return ArtifactKind("image", "Container image")
    return ArtifactKind("artifact", "OCI artifact")


def classify(manifest: ParsedManifest) -> ArtifactKind:
    return classify_types(
        manifest.media_type,
        manifest.artifact_type,
        manifest.config.media_type if manifest.config else None,
        [layer.media_type for layer in manifest.layers],
    )


def is_helm_chart(manifest: ParsedManifest) -> bool:
    return manifest.config is not None and manifest.config.media_type == HELM_CONFIG


class ArtifactError(ValueError):
    """A config blob that cannot be read as what its media type says."""


@dataclass(frozen=True, slots=True)
class HelmChart:
    name: str
    version: str
    app_version: str | None = None
    description: str | None = None
    api_version: str | None = None
    type: str | None = None  # application or library
    deprecated: bool = False


def parse_helm_config(blob: bytes) -> HelmChart:
    """Chart metadata from a Helm config blob (JSON of Chart.yaml's fields). Size and field
    lengths are bounded; ``name`` and ``version`` are required, as Helm requires them."""
    if len(blob) > MAX_HELM_CONFIG:
        raise ArtifactError(f"Helm chart config is larger than {MAX_HELM_CONFIG} bytes")
    try:
        doc = json.loads(blob)
    except RecursionError:
        raise ArtifactError("Helm chart config is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError("Helm chart config is not JSON") from None
    return helm_chart_from(doc)


def helm_chart_from(doc: object) -> HelmChart:
    """Chart metadata from a Helm config blob already parsed as JSON (the same checks as
    :func:`parse_helm_config`)."""
    if not isinstance(doc, dict):
        raise ArtifactError("Helm chart config is not a JSON object")

    def text(key: str, required: bool = False) -> str | None:
        value = doc.get(key)
        if value is None or value == "":
            if required:
                raise ArtifactError(f"Helm chart config has no {key}")
            return None
        if not isinstance(value, str) or len(value) > MAX_FIELD or not value.isprintable():
            raise ArtifactError(f"Helm chart config: {key} is not a short printable string")
        return value

    def prose(key: str) -> str | None:
        """Free text (description): whitespace collapsed, cut to MAX_FIELD, never an error."""
        value = doc.get(key)
        if not isinstance(value, str):
            return None
        flat = " ".join(value[: MAX_FIELD * 4].split())
        flat = "".join(c for c in flat if c.isprintable())[:MAX_FIELD]
        return flat or None

    name, version = text("name", True), text("version", True)
    assert name is not None and version is not None
    return HelmChart(
        name=name,
        version=version,
        app_version=text("appVersion"),
        description=prose("description"),
        api_version=text("apiVersion"),
        type=text("type"),
        deprecated=doc.get("deprecated") is True,
    )
