"""skopeo against the registry under test: copies both ways, indexes, inspect, tags, delete,
registry-to-registry copies (cross-repository mount) and Docker schema 2 conversion."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from .checks import (
    assert_blob_served,
    assert_image_in_layout,
    assert_image_in_registry,
    assert_index_in_registry,
    assert_manifest_served,
    describe,
    json_out,
)
from .harness import Registry, Skopeo
from .ocigen import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    make_image,
    make_layer,
    make_multiarch_index,
    sha256,
    write_layout,
)

pytestmark = pytest.mark.clients

PUSH = ("copy", "--dest-tls-verify=false")
PULL = ("copy", "--src-tls-verify=false")
INSECURE = "--tls-verify=false"


def docker(registry: Registry, repo: str, ref: str) -> str:
    return "docker://" + registry.ref(repo, ref)


def test_copy_layout_to_registry_and_back(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    image = make_image(n_layers=3)
    src = write_layout(tmp_path / "src", {"v1": image})

    skopeo(*PUSH, "--preserve-digests", f"oci:{src}:v1", docker(registry, repo, "v1"))
    assert_image_in_registry(registry, repo, "v1", image)

    dst = tmp_path / "dst"
    skopeo(*PULL, "--preserve-digests", docker(registry, repo, "v1"), f"oci:{dst}:v1")
    layout = Layout(dst)
    desc = layout.descriptor("v1")
    assert desc["mediaType"] == OCI_MANIFEST
    assert desc["size"] == image.manifest.size
    assert_image_in_layout(layout, desc["digest"], image)

    # Pull again by digest: same bytes.
    dst2 = tmp_path / "dst-by-digest"
    skopeo(*PULL, docker(registry, repo, image.digest), f"oci:{dst2}:pinned")
    assert_image_in_layout(Layout(dst2), Layout(dst2).descriptor("pinned")["digest"], image)


def test_copy_multiarch_index_all_both_ways(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    index = make_multiarch_index()
    src = write_layout(tmp_path / "src", {"multi": index})

    skopeo(
        *PUSH, "--all", "--preserve-digests", f"oci:{src}:multi", docker(registry, repo, "multi")
    )
    assert_index_in_registry(registry, repo, "multi", index)

    raw = skopeo("inspect", INSECURE, "--raw", docker(registry, repo, "multi")).stdout
    assert raw == index.index.data
    assert sha256(raw) == index.digest

    dst = tmp_path / "dst"
    skopeo(
        *PULL, "--all", "--preserve-digests", docker(registry, repo, "multi"), f"oci:{dst}:multi"
    )
    layout = Layout(dst)
    desc = layout.descriptor("multi")
    assert desc["mediaType"] == OCI_INDEX
    assert desc["digest"] == index.digest, "index digest not preserved by the round trip"
    assert layout.blob(index.digest) == index.index.data
    for image in index.images:
        assert_image_in_layout(layout, image.digest, image)


def test_platform_selection_from_index(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    index = make_multiarch_index()
    src = write_layout(tmp_path / "src", {"multi": index})
    skopeo(*PUSH, "--all", f"oci:{src}:multi", docker(registry, repo, "multi"))
    arm = next(i for i in index.images if i.platform["architecture"] == "arm64")

    info = json_out(
        skopeo(
            "--override-arch",
            "arm64",
            "--override-variant",
            "v8",
            "inspect",
            INSECURE,
            docker(registry, repo, "multi"),
        )
    )
    assert info["Digest"] == index.digest
    assert info["Architecture"] == "arm64"
    assert info["Layers"] == arm.layer_digests

    dst = tmp_path / "arm"
    skopeo(
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        *PULL,
        docker(registry, repo, "multi"),
        f"oci:{dst}:arm",
    )
    layout = Layout(dst)
    assert_image_in_layout(layout, layout.descriptor("arm")["digest"], arm)


def test_inspect(registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path) -> None:
    image = make_image(n_layers=2, label="inspect-me")
    src = write_layout(tmp_path / "src", {"v1": image})
    skopeo(*PUSH, f"oci:{src}:v1", docker(registry, repo, "v1"))

    info = json_out(skopeo("inspect", INSECURE, docker(registry, repo, "v1")))
    assert info["Name"] == f"{registry.host}/{repo}"
    assert info["Digest"] == image.digest
    assert info["RepoTags"] == ["v1"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Layers"] == image.layer_digests
    assert info["Labels"] == {"org.example.test": "inspect-me"}

    raw = skopeo("inspect", INSECURE, "--raw", docker(registry, repo, "v1")).stdout
    assert raw == image.manifest.data
    assert sha256(raw) == image.digest

    raw_by_digest = skopeo(
        "inspect", INSECURE, "--raw", docker(registry, repo, image.digest)
    ).stdout
    assert raw_by_digest == image.manifest.data

    config = skopeo("inspect", INSECURE, "--config", "--raw", docker(registry, repo, "v1")).stdout
    assert config == image.config.data


def test_list_tags(registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path) -> None:
    image = make_image(n_layers=1)
    other = make_image(n_layers=1)
    src = write_layout(tmp_path / "src", {"v1": image, "other": other})
    tags = ["v1", "v2", "latest", "1.0.0"]
    for tag in tags:
        skopeo(*PUSH, f"oci:{src}:v1", docker(registry, repo, tag))
    skopeo(*PUSH, f"oci:{src}:other", docker(registry, repo, "other"))

    listed = json_out(skopeo("list-tags", INSECURE, f"docker://{registry.host}/{repo}"))
    assert listed["Repository"] == f"{registry.host}/{repo}"
    assert sorted(listed["Tags"]) == sorted([*tags, "other"])

    r = registry.tags(repo)
    assert r.status_code == 200, describe(r)
    assert r.json()["name"] == repo
    assert sorted(r.json()["tags"]) == sorted([*tags, "other"])
    for tag in tags:
        assert registry.get_manifest(repo, tag).headers.get("docker-content-digest") == image.digest
    assert registry.get_manifest(repo, "other").headers.get("docker-content-digest") == other.digest


def test_delete(registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path) -> None:
    image = make_image(n_layers=1)
    keep = make_image(n_layers=1)
    src = write_layout(tmp_path / "src", {"v1": image, "keep": keep})
    skopeo(*PUSH, f"oci:{src}:v1", docker(registry, repo, "v1"))
    skopeo(*PUSH, f"oci:{src}:keep", docker(registry, repo, "keep"))
    assert registry.get_manifest(repo, image.digest).status_code == 200

    skopeo("delete", INSECURE, docker(registry, repo, "v1"))

    for reference in (image.digest, "v1"):
        for method in ("GET", "HEAD"):
            r = registry.get_manifest(repo, reference, method=method)
            assert r.status_code == 404, describe(r)
        r = registry.get_manifest(repo, reference)
        codes = [e.get("code") for e in r.json().get("errors", [])]
        assert "MANIFEST_UNKNOWN" in codes, describe(r)

    gone = skopeo("inspect", INSECURE, docker(registry, repo, "v1"), check=False)
    assert gone.returncode != 0
    assert b"manifest unknown" in gone.stderr.lower(), gone.stderr

    r = registry.tags(repo)
    assert r.status_code == 200, describe(r)
    assert (r.json().get("tags") or []) == ["keep"]
    # The other manifest in the repository is untouched.
    assert_image_in_registry(registry, repo, "keep", keep)


def test_copy_registry_to_registry_mounts_blobs(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    image = make_image(n_layers=3)
    src_repo, dst_repo = f"{repo}/src", f"{repo}/dst"
    src = write_layout(tmp_path / "src", {"v1": image})
    # The push records the blobs' location in skopeo's (session-private) blob-info cache ...
    skopeo(*PUSH, f"oci:{src}:v1", docker(registry, src_repo, "v1"))

    # ... so this copy asks the registry to mount them from src_repo instead of uploading.
    proc = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        docker(registry, src_repo, "v1"),
        docker(registry, dst_repo, "v1"),
        debug=True,
    )
    log = proc.stderr.decode(errors="replace")
    for layer in image.layers:
        mount = f"mount={quote(layer.digest, safe='')}"
        assert f"from={quote(src_repo, safe='')}&{mount}" in log, (
            f"skopeo did not try to mount {layer.digest} from {src_repo}:\n{log}"
        )
    mounts_ok = log.count("... mount OK")
    assert mounts_ok == len(image.layers), (
        f"registry accepted {mounts_ok} of {len(image.layers)} cross-repository mounts "
        f"(POST /v2/{dst_repo}/blobs/uploads/?from={src_repo}&mount=<digest> should answer 201):\n"
        + "\n".join(line for line in log.splitlines() if "mount" in line.lower() or "POST" in line)
    )

    assert_image_in_registry(registry, dst_repo, "v1", image)
    # The source is unchanged.
    assert_image_in_registry(registry, src_repo, "v1", image)


def test_copy_as_docker_schema2(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    image = make_image(n_layers=2)
    src = write_layout(tmp_path / "src", {"v1": image})
    skopeo(*PUSH, "--format", "v2s2", f"oci:{src}:v1", docker(registry, repo, "v1"))

    r = registry.get_manifest(repo, "v1")
    assert r.status_code == 200, describe(r)
    assert r.headers["content-type"].split(";")[0] == DOCKER_MANIFEST, describe(r)
    manifest = r.json()
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert manifest["config"]["digest"] == image.config.digest
    assert [layer["mediaType"] for layer in manifest["layers"]] == [DOCKER_LAYER_GZIP] * 2
    assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests
    digest = sha256(r.content)
    assert r.headers["docker-content-digest"] == digest
    assert_manifest_served(registry, repo, "v1", r.content, DOCKER_MANIFEST)
    # A client that only accepts Docker schema 2 gets it too.
    only_docker = registry.get_manifest(repo, digest, accept=DOCKER_MANIFEST)
    assert only_docker.status_code == 200 and only_docker.content == r.content, describe(
        only_docker
    )
    for blob in [image.config, *image.layers]:
        assert_blob_served(registry, repo, blob.digest, blob.data)

    raw = skopeo("inspect", INSECURE, "--raw", docker(registry, repo, "v1")).stdout
    assert raw == r.content
    info = json_out(skopeo("inspect", INSECURE, docker(registry, repo, "v1")))
    assert info["Digest"] == digest and info["Layers"] == image.layer_digests

    # Back to an OCI layout: converted back to OCI, same config and layers.
    dst = tmp_path / "dst"
    skopeo(*PULL, docker(registry, repo, "v1"), f"oci:{dst}:v1")
    layout = Layout(dst)
    back = layout.json_blob(layout.descriptor("v1")["digest"])
    assert back["mediaType"] == OCI_MANIFEST
    assert back["config"]["digest"] == image.config.digest
    assert [layer["digest"] for layer in back["layers"]] == image.layer_digests
    for blob in [image.config, *image.layers]:
        assert layout.blob(blob.digest) == blob.data


def test_copy_multiarch_as_docker_manifest_list(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    index = make_multiarch_index(n_layers=1)
    src = write_layout(tmp_path / "src", {"multi": index})
    skopeo(*PUSH, "--all", "--format", "v2s2", f"oci:{src}:multi", docker(registry, repo, "multi"))

    r = registry.get_manifest(repo, "multi")
    assert r.status_code == 200, describe(r)
    assert r.headers["content-type"].split(";")[0] == DOCKER_LIST, describe(r)
    listing = r.json()
    assert listing["mediaType"] == DOCKER_LIST
    assert [m["mediaType"] for m in listing["manifests"]] == [DOCKER_MANIFEST] * 2
    assert [m["platform"]["architecture"] for m in listing["manifests"]] == ["amd64", "arm64"]
    for entry, image in zip(listing["manifests"], index.images, strict=True):
        child = registry.get_manifest(repo, entry["digest"])
        assert child.status_code == 200, describe(child)
        assert sha256(child.content) == entry["digest"] and len(child.content) == entry["size"]
        assert child.headers["content-type"].split(";")[0] == DOCKER_MANIFEST
        child_manifest = child.json()
        assert [layer["digest"] for layer in child_manifest["layers"]] == image.layer_digests
        # skopeo re-serializes a config with "variant" while converting (Go field order):
        # same JSON, other bytes. The registry must serve whatever bytes were pushed.
        config = registry.get_blob(repo, child_manifest["config"]["digest"])
        assert config.status_code == 200, describe(config)
        assert sha256(config.content) == child_manifest["config"]["digest"]
        assert config.json() == json.loads(image.config.data)

    raw = skopeo("inspect", INSECURE, "--raw", docker(registry, repo, "multi")).stdout
    assert raw == r.content

    dst = tmp_path / "dst"
    skopeo(*PULL, "--all", docker(registry, repo, "multi"), f"oci:{dst}:multi")
    layout = Layout(dst)
    top = layout.json_blob(layout.descriptor("multi")["digest"])
    assert [m["platform"]["architecture"] for m in top["manifests"]] == ["amd64", "arm64"]
    for entry, image in zip(top["manifests"], index.images, strict=True):
        child_manifest = layout.json_blob(entry["digest"])
        assert json.loads(layout.blob(child_manifest["config"]["digest"])) == json.loads(
            image.config.data
        )
        assert [layer["digest"] for layer in child_manifest["layers"]] == image.layer_digests
        for blob in image.layers:
            assert layout.blob(blob.digest) == blob.data


def test_manifest_unknown_and_blob_unknown(registry: Registry, skopeo: Skopeo, repo: str) -> None:
    missing = skopeo("inspect", INSECURE, docker(registry, repo, "nope"), check=False)
    assert missing.returncode != 0
    r = registry.get_manifest(repo, "nope")
    assert r.status_code == 404, describe(r)
    r = registry.get_blob(repo, "sha256:" + "0" * 64)
    assert r.status_code == 404, describe(r)
    assert json.loads(r.content or b"{}").get("errors", [{}])[0].get("code") == "BLOB_UNKNOWN", (
        describe(r)
    )


def test_tag_overwrite_moves_tag(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    first, second = make_image(n_layers=1), make_image(n_layers=1)
    src = write_layout(tmp_path / "src", {"first": first, "second": second})
    skopeo(*PUSH, f"oci:{src}:first", docker(registry, repo, "latest"))
    assert (
        registry.get_manifest(repo, "latest").headers.get("docker-content-digest") == first.digest
    )
    skopeo(*PUSH, f"oci:{src}:second", docker(registry, repo, "latest"))
    assert_image_in_registry(registry, repo, "latest", second)
    raw = skopeo("inspect", INSECURE, "--raw", docker(registry, repo, "latest")).stdout
    assert raw == second.manifest.data
    # The first manifest is still there by digest (untagged, not deleted).
    assert_manifest_served(registry, repo, first.digest, first.manifest.data, OCI_MANIFEST)
    assert json_out(skopeo("list-tags", INSECURE, f"docker://{registry.host}/{repo}"))["Tags"] == [
        "latest"
    ]


def test_large_layer(registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path) -> None:
    """A 24 MiB incompressible layer streams through upload and download intact."""
    image = make_image(n_layers=1, layer_size=24 * 1024 * 1024)
    src = write_layout(tmp_path / "src", {"v1": image})
    skopeo(*PUSH, f"oci:{src}:v1", docker(registry, repo, "v1"))
    [layer] = image.layers
    head = registry.get_blob(repo, layer.digest, method="HEAD")
    assert head.status_code == 200 and int(head.headers["content-length"]) == layer.size, describe(
        head
    )
    dst = tmp_path / "dst"
    skopeo(*PULL, docker(registry, repo, "v1"), f"oci:{dst}:v1")
    layout = Layout(dst)
    assert_image_in_layout(layout, layout.descriptor("v1")["digest"], image)


def test_zstd_layers(registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path) -> None:
    """Recompressed to zstd on push: a different media type and digest, the same content."""
    image = make_image(n_layers=2)
    src = write_layout(tmp_path / "src", {"v1": image})
    skopeo(*PUSH, "--dest-compress-format", "zstd", f"oci:{src}:v1", docker(registry, repo, "v1"))
    r = registry.get_manifest(repo, "v1")
    assert r.status_code == 200, describe(r)
    manifest = r.json()
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"
    ] * 2
    for layer in manifest["layers"]:
        blob = registry.get_blob(repo, layer["digest"])
        assert blob.status_code == 200, describe(blob)
        assert sha256(blob.content) == layer["digest"] and len(blob.content) == layer["size"]
        assert blob.content[:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
    # Decompressed by skopeo on the way out: the uncompressed tars match the diff_ids.
    dst = tmp_path / "dir"
    skopeo(*PULL, "--dest-decompress", docker(registry, repo, "v1"), f"dir:{dst}")
    dir_manifest = json.loads((dst / "manifest.json").read_bytes())
    tars = [
        (dst / layer["digest"].split(":", 1)[1]).read_bytes() for layer in dir_manifest["layers"]
    ]
    assert [sha256(t) for t in tars] == image.diff_ids


def test_sync_repository(registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path) -> None:
    """``skopeo sync`` lists the source repository's tags and copies every one."""
    images = {f"t{i}": make_image(n_layers=1) for i in range(3)}
    index = make_multiarch_index(n_layers=1)
    src = write_layout(tmp_path / "src", {**images, "multi": index})
    src_repo = f"{repo}/app"
    for tag in images:
        skopeo(*PUSH, f"oci:{src}:{tag}", docker(registry, src_repo, tag))
    skopeo(*PUSH, "--all", f"oci:{src}:multi", docker(registry, src_repo, "multi"))

    skopeo(
        "sync",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"{registry.host}/{src_repo}",
        f"{registry.host}/{repo}/mirror",
    )
    dst_repo = f"{repo}/mirror/app"
    listed = json_out(skopeo("list-tags", INSECURE, f"docker://{registry.host}/{dst_repo}"))
    assert sorted(listed["Tags"]) == sorted([*images, "multi"])
    for tag, image in images.items():
        assert_image_in_registry(registry, dst_repo, tag, image)
    assert_index_in_registry(registry, dst_repo, "multi", index)


def test_concurrent_pushes_sharing_layers(
    registry: Registry, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    """Six skopeo processes at once push images that share two base layers: three tags of one
    repository and three other repositories. Every upload of the shared blobs races."""
    base = [make_layer({f"base/{i}.bin": os.urandom(200_000)}) for i in range(2)]
    images = {f"img{i}": make_image(n_layers=1, base=base) for i in range(6)}
    src = write_layout(tmp_path / "src", images)
    targets = {
        name: (repo, name) if i < 3 else (f"{repo}/r{i}", "v1") for i, name in enumerate(images)
    }
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        results = list(
            pool.map(
                lambda name: skopeo(
                    *PUSH, f"oci:{src}:{name}", docker(registry, *targets[name]), check=False
                ),
                images,
            )
        )
    failures = [
        f"{name}: exit {p.returncode}\n{p.stderr.decode(errors='replace')}"
        for name, p in zip(images, results, strict=True)
        if p.returncode != 0
    ]
    assert not failures, "\n\n".join(failures)
    for name, image in images.items():
        assert_image_in_registry(registry, *targets[name], image)
