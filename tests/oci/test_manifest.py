"""Manifest and index parsing (image-spec v1.1 manifest/index/descriptor, Docker schema 2).

parse_manifest(payload, content_type) either returns a ParsedManifest or raises ManifestError — for
any input whatsoever: no RecursionError, UnicodeDecodeError, TypeError or OverflowError escapes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.oci import mediatypes as mt
from moorage.oci.digest import Digest
from moorage.oci.manifest import ManifestError, ParsedManifest, parse_descriptor, parse_manifest


def _digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # b"{}"
DROP = object()  # marks a key to remove from a document


def desc(
    media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip",
    seed: str = "l",
    size: int = 10,
    **extra: Any,
) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(seed), "size": size, **extra}


def oci_manifest(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG, "config", 100),
        "layers": [desc(seed="l1"), desc(seed="l2")],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not DROP}


def oci_index(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, "amd64", 500, platform={"os": "linux", "architecture": "amd64"}),
            desc(mt.OCI_MANIFEST, "arm64", 501, platform={"os": "linux", "architecture": "arm64"}),
        ],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not DROP}


def parse(doc: Any, content_type: str | None = None) -> ParsedManifest:
    return parse_manifest(json.dumps(doc).encode(), content_type)


def refused(doc: Any, content_type: str | None = None, match: str | None = None) -> ManifestError:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(ManifestError, match=match) as info:
        parse_manifest(payload, content_type)
    assert info.value.code == "MANIFEST_INVALID"
    return info.value


# --- accepted shapes --------------------------------------------------------------------------


def test_oci_image_manifest() -> None:
    p = parse(oci_manifest(), mt.OCI_MANIFEST)
    assert p.media_type == mt.OCI_MANIFEST and not p.is_index
    assert p.config is not None and p.config.media_type == mt.OCI_CONFIG
    assert [str(d) for d in p.required_blobs()] == [_digest("config"), _digest("l1"), _digest("l2")]
    assert p.required_manifests() == []
    assert p.referrer_artifact_type() == mt.OCI_CONFIG


def test_oci_index() -> None:
    p = parse(oci_index(), mt.OCI_INDEX)
    assert p.is_index and p.config is None and p.layers == []
    assert [str(d) for d in p.required_manifests()] == [_digest("amd64"), _digest("arm64")]
    assert p.required_blobs() == []
    assert p.manifests[0].platform == {"os": "linux", "architecture": "amd64"}
    assert p.referrer_artifact_type() is None


def test_docker_schema2_manifest() -> None:
    doc = oci_manifest(
        mediaType=mt.DOCKER_MANIFEST,
        config=desc(mt.DOCKER_CONFIG, "config", 100),
        layers=[desc("application/vnd.docker.image.rootfs.diff.tar.gzip", "l1")],
    )
    p = parse(doc, mt.DOCKER_MANIFEST)
    assert p.media_type == mt.DOCKER_MANIFEST
    assert len(p.required_blobs()) == 2


def test_docker_manifest_list() -> None:
    doc = oci_index(
        mediaType=mt.DOCKER_LIST,
        manifests=[
            desc(mt.DOCKER_MANIFEST, "amd64", platform={"os": "linux", "architecture": "amd64"})
        ],
    )
    p = parse(doc, mt.DOCKER_LIST)
    assert p.media_type == mt.DOCKER_LIST and p.is_index


def test_artifact_manifest_with_artifact_type_and_empty_config() -> None:
    """image-spec "Guidelines for Artifact Usage": artifactType set, config is the empty descriptor."""
    doc = oci_manifest(
        artifactType="application/vnd.example.sbom.v1+json",
        config={"mediaType": mt.OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        layers=[desc("application/spdx+json", "sbom")],
    )
    p = parse(doc, mt.OCI_MANIFEST)
    assert p.artifact_type == "application/vnd.example.sbom.v1+json"
    assert p.referrer_artifact_type() == "application/vnd.example.sbom.v1+json"
    assert p.config is not None and str(p.config.digest) == EMPTY_DIGEST


def test_artifact_without_layers_uses_the_empty_descriptor() -> None:
    doc = oci_manifest(
        artifactType="application/vnd.example.signature",
        config={"mediaType": mt.OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        layers=[{"mediaType": mt.OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}],
    )
    assert parse(doc, mt.OCI_MANIFEST).artifact_type == "application/vnd.example.signature"


def test_subject_is_parsed() -> None:
    subject = desc(mt.OCI_MANIFEST, "subject", 1234)
    p = parse(oci_manifest(subject=subject, artifactType="application/vnd.example+type"))
    assert p.subject is not None
    assert str(p.subject.digest) == _digest("subject") and p.subject.size == 1234


def test_index_with_subject_and_artifact_type() -> None:
    p = parse(oci_index(subject=desc(mt.OCI_MANIFEST, "s"), artifactType="application/x.y"))
    assert p.subject is not None and p.referrer_artifact_type() == "application/x.y"


def test_annotations_are_kept() -> None:
    p = parse(
        oci_manifest(annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    )
    assert p.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}


def test_foreign_layers_with_urls_are_not_required() -> None:
    foreign = desc(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "win",
        urls=["https://example.com/layer"],
    )
    doc = oci_manifest(
        mediaType=mt.DOCKER_MANIFEST,
        config=desc(mt.DOCKER_CONFIG, "c"),
        layers=[foreign, desc(seed="own")],
    )
    required = [str(d) for d in parse(doc, mt.DOCKER_MANIFEST).required_blobs()]
    assert _digest("win") not in required and _digest("own") in required


def test_ordinary_layer_with_urls_is_still_required() -> None:
    doc = oci_manifest(layers=[desc(seed="l", urls=["https://example.com/x"])])
    assert _digest("l") in [str(d) for d in parse(doc).required_blobs()]


@pytest.mark.parametrize(
    ("content_type", "doc", "expected"),
    [
        pytest.param(None, oci_manifest(mediaType=DROP), mt.OCI_MANIFEST, id="no-ct-manifest"),
        pytest.param(None, oci_index(mediaType=DROP), mt.OCI_INDEX, id="no-ct-index"),
        pytest.param(mt.OCI_MANIFEST, oci_manifest(mediaType=DROP), mt.OCI_MANIFEST, id="ct-only"),
        pytest.param(mt.OCI_INDEX, oci_index(mediaType=DROP), mt.OCI_INDEX, id="ct-only-index"),
        pytest.param(
            "application/json", oci_manifest(mediaType=DROP), mt.OCI_MANIFEST, id="json-ct"
        ),
        pytest.param(None, oci_manifest(), mt.OCI_MANIFEST, id="body-only"),
        pytest.param(
            mt.OCI_MANIFEST + "; charset=utf-8", oci_manifest(), mt.OCI_MANIFEST, id="ct-params"
        ),
        pytest.param(mt.OCI_MANIFEST.upper(), oci_manifest(), mt.OCI_MANIFEST, id="ct-uppercase"),
    ],
)
def test_media_type_from_body_or_content_type(
    content_type: str | None, doc: dict[str, Any], expected: str
) -> None:
    """image-spec: mediaType SHOULD be set; the registry falls back to Content-Type or structure."""
    assert parse(doc, content_type).media_type == expected


# --- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED])
def test_schema1_content_type_is_refused(content_type: str) -> None:
    refused(
        b'{"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []}', content_type, "schema 1"
    )
    refused(oci_manifest(), content_type, "schema 1")  # whatever the body


@pytest.mark.parametrize("content_type", [None, mt.OCI_MANIFEST, "application/json"])
def test_schema1_body_is_refused(content_type: str | None) -> None:
    refused({"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []}, content_type, "schema 1")


@pytest.mark.parametrize("version", [0, 3, "2", None, [2], {"v": 2}, -2, 2**64])
def test_schema_version_must_be_2(version: object) -> None:
    refused(oci_manifest(schemaVersion=version), mt.OCI_MANIFEST)


def test_missing_schema_version() -> None:
    refused(oci_manifest(schemaVersion=DROP), mt.OCI_MANIFEST, "schemaVersion")


@pytest.mark.parametrize(
    ("content_type", "doc"),
    [
        pytest.param(mt.OCI_INDEX, oci_manifest(), id="manifest-as-index"),
        pytest.param(mt.OCI_MANIFEST, oci_index(), id="index-as-manifest"),
        pytest.param(mt.DOCKER_MANIFEST, oci_manifest(), id="oci-as-docker"),
        pytest.param("text/plain", oci_manifest(), id="text-plain"),
        pytest.param("application/octet-stream", oci_manifest(), id="octet-stream"),
    ],
)
def test_body_media_type_must_match_content_type(content_type: str, doc: dict[str, Any]) -> None:
    refused(doc, content_type, "does not match")


@pytest.mark.parametrize(
    "media_type",
    ["text/plain", "application/vnd.oci.image.config.v1+json", "application/vnd.example+json"],
)
def test_unsupported_media_type(media_type: str) -> None:
    refused(oci_manifest(mediaType=media_type), None, "unsupported")
    refused(oci_manifest(mediaType=DROP), media_type, "unsupported")


@pytest.mark.parametrize("media_type", ["", "not a type", "a/b/c", "/x", "x/", 42, None, ["x/y"]])
def test_malformed_declared_media_type(media_type: object) -> None:
    if media_type is None:
        # mediaType: null is the same as absent — classified by structure.
        assert parse(oci_manifest(mediaType=None)).media_type == mt.OCI_MANIFEST
        return
    refused(oci_manifest(mediaType=media_type))


def test_docker_manifest_must_declare_media_type() -> None:
    doc = oci_manifest(mediaType=DROP, config=desc(mt.DOCKER_CONFIG, "c"))
    refused(doc, mt.DOCKER_MANIFEST, "must declare mediaType")


def test_docker_manifest_needs_layers() -> None:
    doc = oci_manifest(
        mediaType=mt.DOCKER_MANIFEST, config=desc(mt.DOCKER_CONFIG, "c"), layers=DROP
    )
    refused(doc, mt.DOCKER_MANIFEST, "layers")


def test_image_manifest_needs_config() -> None:
    refused(oci_manifest(config=DROP), mt.OCI_MANIFEST, "config")


@pytest.mark.parametrize("config", [None, [], "sha256:abc", 1, True])
def test_config_must_be_a_descriptor(config: object) -> None:
    refused(oci_manifest(config=config), mt.OCI_MANIFEST, "config")


@pytest.mark.parametrize("key", ["config", "layers"])
def test_index_must_not_have_config_or_layers(key: str) -> None:
    extra = {key: desc(mt.OCI_CONFIG, "c") if key == "config" else [desc()]}
    refused(oci_index(**extra), mt.OCI_INDEX, "must not have")


def test_index_needs_manifests() -> None:
    refused(oci_index(manifests=DROP), mt.OCI_INDEX, "manifests")


@pytest.mark.parametrize("manifests", [{}, "x", 1, [1], [None], [[]]])
def test_index_manifests_must_be_descriptors(manifests: object) -> None:
    refused(oci_index(manifests=manifests), mt.OCI_INDEX)


def test_image_manifest_must_not_have_manifests() -> None:
    refused(oci_manifest(manifests=[desc(mt.OCI_MANIFEST)]), mt.OCI_MANIFEST, "must not have")


def test_docker_list_children_must_be_manifests() -> None:
    doc = oci_index(mediaType=mt.DOCKER_LIST, manifests=[desc("application/vnd.example+json", "x")])
    refused(doc, mt.DOCKER_LIST, "not a manifest media type")


@pytest.mark.parametrize("layers", [{}, "layer", 5, [None], ["sha256:x"], [[desc()]]])
def test_layers_must_be_an_array_of_descriptors(layers: object) -> None:
    refused(oci_manifest(layers=layers), mt.OCI_MANIFEST)


@pytest.mark.parametrize("value", ["x", 1, ["a"], {"a": 1}, {"a": None}, {"a": ["b"]}])
def test_annotations_must_map_strings_to_strings(value: object) -> None:
    refused(oci_manifest(annotations=value), mt.OCI_MANIFEST, "annotations")


@pytest.mark.parametrize("artifact_type", ["", "nope", 7, ["a/b"]])
def test_artifact_type_must_be_a_media_type(artifact_type: object) -> None:
    refused(oci_manifest(artifactType=artifact_type), mt.OCI_MANIFEST, "artifactType")


@pytest.mark.parametrize("subject", ["sha256:x", [], 1, {"digest": _digest("s")}])
def test_subject_must_be_a_descriptor(subject: object) -> None:
    refused(oci_manifest(subject=subject), mt.OCI_MANIFEST, "subject")


# --- descriptors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool-true"),
        pytest.param(False, id="bool-false"),
        pytest.param(1.0, id="float-integral"),
        pytest.param(1.5, id="float"),
        pytest.param("10", id="string"),
        pytest.param(None, id="null"),
        pytest.param([10], id="list"),
        pytest.param(2**63, id="2^63"),
        pytest.param(10**30, id="huge"),
    ],
)
def test_descriptor_size_must_be_a_non_negative_int64(size: object) -> None:
    refused(oci_manifest(layers=[desc(size=size)]), mt.OCI_MANIFEST, "size")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 2**63 - 1])
def test_descriptor_size_bounds(size: int) -> None:
    assert parse(oci_manifest(layers=[desc(size=size)])).layers[0].size == size


def test_descriptor_missing_size() -> None:
    layer = desc()
    del layer["size"]
    refused(oci_manifest(layers=[layer]), mt.OCI_MANIFEST, "size")


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../etc/passwd",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 32,
        "",
        "sha256:",
        None,
        42,
        ["sha256:" + "a" * 64],
        "sha256:" + "a" * 64 + "\x00",
    ],
)
def test_descriptor_digest_must_be_valid(digest: object) -> None:
    refused(oci_manifest(layers=[desc(digest=digest)]), mt.OCI_MANIFEST, "digest")


@pytest.mark.parametrize(
    "media_type",
    ["", "layer", "a/b/c", "a /b", "a/" + "b" * 200, "ä/b", None, 1, ["a/b"]],
)
def test_descriptor_media_type_must_be_valid(media_type: object) -> None:
    refused(oci_manifest(layers=[desc(media_type=media_type)]), mt.OCI_MANIFEST, "mediaType")  # type: ignore[arg-type]


@pytest.mark.parametrize("urls", ["https://x", [1], [None], {"u": "x"}])
def test_descriptor_urls_must_be_strings(urls: object) -> None:
    refused(oci_manifest(layers=[desc(urls=urls)]), mt.OCI_MANIFEST, "urls")


@pytest.mark.parametrize(
    "platform",
    [
        {},
        {"os": "linux"},
        {"architecture": "amd64"},
        {"os": 1, "architecture": "amd64"},
        "linux",
        [],
    ],
)
def test_descriptor_platform_needs_os_and_architecture(platform: object) -> None:
    doc = oci_index(manifests=[desc(mt.OCI_MANIFEST, platform=platform)])
    refused(doc, mt.OCI_INDEX, "platform")


def test_parse_descriptor_reports_where() -> None:
    with pytest.raises(ManifestError, match=r"layers\[3\]\.size"):
        parse_descriptor({"mediaType": "a/b", "digest": _digest("x"), "size": -1}, "layers[3]")


def test_descriptor_to_json_round_trip() -> None:
    d = parse_descriptor(
        desc(
            artifactType="application/x.y",
            annotations={"a": "b"},
            platform={"os": "linux", "architecture": "arm"},
        ),
        "d",
    )
    assert parse_descriptor(d.to_json(), "d") == d
    assert isinstance(d.digest, Digest)


# --- hostile payloads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"schemaVersion": 2,}', id="trailing-comma"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b'"manifest"', id="string"),
        pytest.param(b"true", id="bool"),
        pytest.param(b"\xff\xfe\x00\x00", id="invalid-utf8"),
        pytest.param(b'{"schemaVersion": 2, "x": "\xc3\x28"}', id="invalid-utf8-in-string"),
        pytest.param(b"\x00" * 64, id="nul-bytes"),
        pytest.param(bytes(range(256)) * 4, id="binary"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"\x00" * 20, id="gzip-magic"),
    ],
)
def test_garbage_payloads(payload: bytes) -> None:
    refused(payload, mt.OCI_MANIFEST)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 100_000, id="100k-open-arrays"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100k-nested-arrays"),
        pytest.param(b'{"a":' * 100_000, id="100k-open-objects"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="100k-nested-objects"),
        pytest.param(
            b'{"schemaVersion":2,"annotations":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            id="deep-inside-a-manifest",
        ),
    ],
)
def test_deeply_nested_json_is_a_manifest_error_not_recursion_error(payload: bytes) -> None:
    refused(payload, mt.OCI_MANIFEST)


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(b"1" + b"0" * 5000, id="5000-digit-int"),
        pytest.param(b"1e400", id="float-overflow"),
        pytest.param(b"-1e400", id="negative-float-overflow"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"1e-400", id="float-underflow"),
        pytest.param(b"18446744073709551616", id="2^64"),
    ],
)
def test_huge_or_odd_numbers_as_sizes(literal: bytes) -> None:
    payload = (
        b'{"schemaVersion":2,"mediaType":"' + mt.OCI_MANIFEST.encode() + b'","config":'
        b'{"mediaType":"'
        + mt.OCI_CONFIG.encode()
        + b'","digest":"'
        + _digest("c").encode()
        + b'","size":'
        + literal
        + b'},"layers":[]}'
    )
    refused(payload, mt.OCI_MANIFEST)


def test_huge_number_as_schema_version() -> None:
    refused(b'{"schemaVersion":' + b"2" * 5000 + b"}", mt.OCI_MANIFEST)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "schemaVersion",
                    "mediaType",
                    "config",
                    "layers",
                    "manifests",
                    "subject",
                    "artifactType",
                    "annotations",
                    "digest",
                    "size",
                    "urls",
                    "platform",
                    "os",
                    "architecture",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(doc=JSON, content_type=st.sampled_from([None, *sorted(mt.MANIFEST_TYPES), "text/plain"]))
def test_arbitrary_json_parses_or_raises_manifest_error(
    doc: object, content_type: str | None
) -> None:
    try:
        parse_manifest(json.dumps(doc).encode(), content_type)
    except ManifestError:
        pass


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_raise_manifest_error(payload: bytes) -> None:
    try:
        parse_manifest(payload, mt.OCI_MANIFEST)
    except ManifestError:
        pass
