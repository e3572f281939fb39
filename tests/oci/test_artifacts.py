"""Artifact recognition (moorage.oci.artifacts): Helm charts and their metadata, and the display
kind of signatures, SBOMs, attestations, WebAssembly modules, ML models and other artifacts, from
manifests laid out as each tool's published format says (Helm HIP-0006, cosign's signature
spec, Notary Project, CNCF TAG Runtime's Wasm artifact layout, CNCF ModelPack, KitOps)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.oci import artifacts as a
from moorage.oci import mediatypes as mt
from moorage.oci.manifest import parse_manifest

D = ["sha256:" + c * 64 for c in "0123456789abcdef"]


def manifest(
    config_type: str = mt.OCI_CONFIG,
    layers: list[str] | None = None,
    artifact_type: str | None = None,
    media_type: str = mt.OCI_MANIFEST,
) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": D[0], "size": 2},
        "layers": [
            {"mediaType": t, "digest": D[i + 1], "size": 10} for i, t in enumerate(layers or [])
        ],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    return json.dumps(doc).encode()


def kind_of(payload: bytes, content_type: str = mt.OCI_MANIFEST) -> a.ArtifactKind:
    return a.classify(parse_manifest(payload, content_type))


@pytest.mark.parametrize(
    ("payload", "kind", "label"),
    [
        (
            manifest(layers=["application/vnd.oci.image.layer.v1.tar+gzip"]),
            "image",
            "Container image",
        ),
        (
            manifest(
                mt.DOCKER_CONFIG,
                ["application/vnd.docker.image.rootfs.diff.tar.gzip"],
                media_type=mt.DOCKER_MANIFEST,
            ),
            "image",
            "Container image",
        ),
        # helm push: Helm's config type and the chart archive (and optionally its provenance).
        (manifest(a.HELM_CONFIG, [a.HELM_CHART]), "helm-chart", "Helm chart"),
        (manifest(a.HELM_CONFIG, [a.HELM_CHART, a.HELM_PROVENANCE]), "helm-chart", "Helm chart"),
        # cosign sign (tag scheme sha256-<hex>.sig): image config + simple-signing layers.
        (
            manifest(layers=["application/vnd.dev.cosign.simplesigning.v1+json"]),
            "signature",
            "Signature (cosign)",
        ),
        # cosign with OCI 1.1 referrers: a Sigstore bundle artifact.
        (
            manifest(
                mt.OCI_EMPTY,
                ["application/vnd.dev.sigstore.bundle.v0.3+json"],
                "application/vnd.dev.sigstore.bundle.v0.3+json",
            ),
            "signature",
            "Signature (Sigstore bundle)",
        ),
        # notation sign: artifactType of the Notary Project, JWS or COSE envelope layer.
        (
            manifest(
                mt.OCI_EMPTY, ["application/jose+json"], "application/vnd.cncf.notary.signature"
            ),
            "signature",
            "Signature (Notation)",
        ),
        # cosign attest: DSSE envelope layers.
        (
            manifest(layers=["application/vnd.dsse.envelope.v1+json"]),
            "attestation",
            "Attestation (in-toto)",
        ),
        (
            manifest(
                mt.OCI_EMPTY, ["application/vnd.in-toto+json"], "application/vnd.in-toto+json"
            ),
            "attestation",
            "Attestation (in-toto)",
        ),
        # SBOMs: oras attach --artifact-type, cosign attach sbom (tag scheme layer types).
        (
            manifest(mt.OCI_EMPTY, ["application/spdx+json"], "application/spdx+json"),
            "sbom",
            "SBOM (SPDX)",
        ),
        (manifest(layers=["text/spdx"]), "sbom", "SBOM (SPDX)"),
        (
            manifest(
                mt.OCI_EMPTY, ["application/vnd.cyclonedx+json"], "application/vnd.cyclonedx+json"
            ),
            "sbom",
            "SBOM (CycloneDX)",
        ),
        (manifest(layers=["application/vnd.syft+json"]), "sbom", "SBOM (Syft)"),
        # WebAssembly (TAG Runtime layout; wasm-to-oci).
        (
            manifest("application/vnd.wasm.config.v0+json", ["application/wasm"]),
            "wasm",
            "WebAssembly module",
        ),
        (
            manifest(
                "application/vnd.wasm.config.v1+json",
                ["application/vnd.wasm.content.layer.v1+wasm"],
            ),
            "wasm",
            "WebAssembly module",
        ),
        # ML models.
        (
            manifest(
                "application/vnd.cncf.model.config.v1+json",
                ["application/vnd.cncf.model.weight.v1.tar"],
                "application/vnd.cncf.model.manifest.v1+json",
            ),
            "ml-model",
            "ML model (ModelPack)",
        ),
        (
            manifest(mt.OCI_EMPTY, ["application/vnd.cncf.model.weight.v1.raw"]),
            "ml-model",
            "ML model (ModelPack)",
        ),
        (
            manifest(
                "application/vnd.kitops.modelkit.config.v1+json",
                ["application/vnd.kitops.modelkit.model.v1.tar+gzip"],
            ),
            "ml-model",
            "ML model (KitOps ModelKit)",
        ),
        (
            manifest(
                "application/vnd.docker.ai.model.config.v0.1+json",
                ["application/vnd.docker.ai.gguf.v3"],
            ),
            "ml-model",
            "ML model (GGUF)",
        ),
        (
            manifest(
                mt.DOCKER_CONFIG,
                ["application/vnd.ollama.image.model"],
                media_type=mt.DOCKER_MANIFEST,
            ),
            "ml-model",
            "ML model (Ollama)",
        ),
        # Unknown artifacts keep their type as the label.
        (
            manifest(
                mt.OCI_EMPTY, ["application/octet-stream"], "application/vnd.example.thing.v1"
            ),
            "artifact",
            "application/vnd.example.thing.v1",
        ),
        (
            manifest("application/vnd.example.config.v1+json", ["application/octet-stream"]),
            "artifact",
            "application/vnd.example.config.v1+json",
        ),
        (manifest(mt.OCI_EMPTY, ["application/octet-stream"]), "artifact", "OCI artifact"),
    ],
)
def test_classification(payload: bytes, kind: str, label: str) -> None:
    content_type = json.loads(payload)["mediaType"]
    got = kind_of(payload, content_type)
    assert (got.kind, got.label) == (kind, label)


def test_indexes() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": D[1],
                "size": 10,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    assert kind_of(json.dumps(index).encode(), mt.OCI_INDEX).kind == "index"
    index["artifactType"] = "application/vnd.cncf.model.manifest.v1+json"
    assert kind_of(json.dumps(index).encode(), mt.OCI_INDEX).kind == "ml-model"


def test_classify_from_stored_columns() -> None:
    """The API and UI have media type, artifact type and config type columns, not the layers."""
    assert a.classify_types(mt.OCI_MANIFEST, None, a.HELM_CONFIG).kind == "helm-chart"
    assert (
        a.classify_types(mt.OCI_MANIFEST, "application/vnd.cncf.notary.signature").kind
        == "signature"
    )
    assert a.classify_types(mt.OCI_MANIFEST, None, mt.OCI_CONFIG).kind == "image"
    assert a.classify_types(mt.DOCKER_SCHEMA1_SIGNED).kind == "image"
    # Sigstore's parameterised bundle type (the parameter decides; the registry's own manifest
    # grammar refuses parameters in artifactType, but a layer or a stored column may carry it).
    got = a.classify_types(
        mt.OCI_MANIFEST,
        None,
        mt.OCI_EMPTY,
        ["application/vnd.dev.sigstore.bundle+json; version=0.3"],
    )
    assert got.label == "Signature (Sigstore bundle)"
    got = a.classify_types(
        mt.OCI_MANIFEST,
        None,
        mt.OCI_EMPTY,
        ["application/vnd.dev.sigstore.bundle+json;version=0.9"],
    )
    assert got.kind == "artifact"


HELM_CONFIG_BLOB = json.dumps(
    {
        "name": "nginx",
        "version": "15.4.2",
        "description": "NGINX Open Source is a web server\nthat can also be used as a reverse proxy.",
        "apiVersion": "v2",
        "appVersion": "1.25.3",
        "type": "application",
        "annotations": {"category": "Infrastructure"},
    }
).encode()


def test_helm_config() -> None:
    chart = a.parse_helm_config(HELM_CONFIG_BLOB)
    assert (chart.name, chart.version, chart.app_version) == ("nginx", "15.4.2", "1.25.3")
    assert chart.api_version == "v2" and chart.type == "application" and not chart.deprecated
    assert (
        chart.description
        == "NGINX Open Source is a web server that can also be used as a reverse proxy."
    )
    minimal = a.parse_helm_config(b'{"name":"lib","version":"0.1.0","deprecated":true}')
    assert minimal.app_version is None and minimal.deprecated
    long_text = a.parse_helm_config(
        json.dumps({"name": "x", "version": "1", "description": "y" * 100_000}).encode()
    )
    assert long_text.description is not None and len(long_text.description) == a.MAX_FIELD


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"version":"1.0.0"}',
        b'{"name":"x"}',
        b'{"name":"","version":"1"}',
        b'{"name":5,"version":"1"}',
        b'{"name":"x","version":"1","appVersion":{"a":1}}',
        json.dumps({"name": "a" * 5000, "version": "1"}).encode(),
        b'{"name":"x\\u0000y","version":"1"}',
        b"[" * 100_000 + b"]" * 100_000,
        b" " * (a.MAX_HELM_CONFIG + 1),
    ],
)
def test_hostile_helm_configs_are_refused_clearly(blob: bytes) -> None:
    with pytest.raises(a.ArtifactError):
        a.parse_helm_config(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_helm_config_bytes_give_a_chart_or_an_artifact_error(blob: bytes) -> None:
    try:
        chart = a.parse_helm_config(blob)
    except a.ArtifactError:
        return
    assert chart.name and chart.version
