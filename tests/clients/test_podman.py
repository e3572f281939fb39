"""podman and buildah against the registry under test.

Images are built without running a container (``podman import`` of a tarball, ``buildah from
scratch`` + ``buildah copy`` + ``buildah commit``) in a private vfs storage, pushed, removed
locally, pulled back and compared: image id (config digest), manifest digest, file contents.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from .checks import assert_blob_served, describe, layer_files
from .harness import Engine, Registry
from .ocigen import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, sha256

pytestmark = pytest.mark.clients

TLS = "--tls-verify=false"


def rootfs_tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def check_pushed_manifest(
    registry: Registry, repo: str, tag: str, digest: str, image_id: str
) -> str:
    """The registry serves a manifest with ``digest`` whose config is the image ``image_id``.

    Returns the manifest's media type (Content-Type, which must match its mediaType field)."""
    r = registry.get_manifest(repo, tag)
    assert r.status_code == 200, describe(r)
    assert r.headers.get("docker-content-digest") == digest, describe(r)
    assert sha256(r.content) == digest
    manifest = r.json()
    content_type = r.headers["content-type"].split(";")[0]
    assert content_type == manifest.get("mediaType", content_type), describe(r)
    assert manifest["config"]["digest"] == "sha256:" + image_id
    config = registry.get_blob(repo, manifest["config"]["digest"])
    assert config.status_code == 200 and sha256(config.content) == manifest["config"]["digest"]
    for layer in manifest["layers"]:
        h = registry.get_blob(repo, layer["digest"], method="HEAD")
        assert h.status_code == 200, describe(h)
        assert int(h.headers["content-length"]) == layer["size"], describe(h)
    return content_type


def test_podman_import_push_pull(
    registry: Registry, podman: Engine, repo: str, tmp_path: Path
) -> None:
    files = {"etc/moorage.txt": b"podman was here\n", "data/random.bin": os.urandom(20_000)}
    tarball = rootfs_tarball(tmp_path / "rootfs.tar.gz", files)
    local = "localhost/clients/podman-import:v1"
    image_id = podman.out(
        "import", "--change", 'CMD ["/bin/true"]', str(tarball), local
    ).splitlines()[-1]
    image_id = image_id.removeprefix("sha256:")
    assert len(image_id) == 64

    remote = registry.ref(repo, "v1")
    digestfile = tmp_path / "digest"
    podman("push", TLS, "--digestfile", str(digestfile), local, f"docker://{remote}")
    pushed = digestfile.read_text().strip()
    check_pushed_manifest(registry, repo, "v1", pushed, image_id)

    podman("rmi", local)
    assert podman("image", "exists", local, check=False).returncode == 1

    pull_out = podman.out("pull", TLS, remote)
    assert pull_out.splitlines()[-1] == image_id, pull_out
    info = json.loads(podman.out("image", "inspect", remote))[0]
    assert info["Id"] == image_id
    assert info["Digest"] == pushed
    assert f"{registry.host}/{repo}@{pushed}" in info["RepoDigests"]

    # The pulled layers hold the files we imported.
    saved = tmp_path / "saved"
    podman("save", "--format", "oci-dir", "-o", str(saved), remote)
    assert layer_files(saved) == files


def test_podman_pull_by_digest_and_tag_again(
    registry: Registry, podman: Engine, repo: str, tmp_path: Path
) -> None:
    files = {"hello.txt": os.urandom(64)}
    tarball = rootfs_tarball(tmp_path / "rootfs.tar.gz", files)
    local = "localhost/clients/podman-digest:v1"
    image_id = podman.out("import", str(tarball), local).splitlines()[-1].removeprefix("sha256:")
    remote = registry.ref(repo, "v1")
    digestfile = tmp_path / "digest"
    podman(
        "push", TLS, "--format", "oci", "--digestfile", str(digestfile), local, f"docker://{remote}"
    )
    pushed = digestfile.read_text().strip()
    assert check_pushed_manifest(registry, repo, "v1", pushed, image_id) == OCI_MANIFEST

    # Pushing the same image again to another tag gives the same manifest digest.
    podman(
        "push",
        TLS,
        "--format",
        "oci",
        "--digestfile",
        str(digestfile),
        local,
        f"docker://{registry.ref(repo, 'v2')}",
    )
    assert digestfile.read_text().strip() == pushed
    assert registry.get_manifest(repo, "v2").headers.get("docker-content-digest") == pushed

    podman("rmi", local)
    by_digest = registry.ref(repo, pushed)
    assert podman.out("pull", TLS, by_digest).splitlines()[-1] == image_id
    info = json.loads(podman.out("image", "inspect", image_id))[0]
    assert info["Digest"] == pushed


def test_buildah_scratch_commit_push_pull(
    registry: Registry, buildah: Engine, repo: str, tmp_path: Path
) -> None:
    payload = os.urandom(30_000)
    (tmp_path / "payload.bin").write_bytes(payload)
    (tmp_path / "hello.txt").write_text("built by buildah\n")

    for fmt, media_type in (("oci", OCI_MANIFEST), ("docker", DOCKER_MANIFEST)):
        ctr = buildah.out("from", "scratch")
        buildah("copy", ctr, str(tmp_path / "payload.bin"), "/data/payload.bin")
        buildah("copy", ctr, str(tmp_path / "hello.txt"), "/hello.txt")
        buildah("config", "--label", f"org.example.format={fmt}", "--cmd", "/hello", ctr)
        local = f"localhost/clients/buildah-{fmt}:v1"
        image_id = buildah.out("commit", "--format", fmt, "--rm", ctr, local).splitlines()[-1]

        tag = f"{fmt}-v1"
        remote = registry.ref(repo, tag)
        digestfile = tmp_path / f"digest-{fmt}"
        buildah("push", TLS, "--digestfile", str(digestfile), local, f"docker://{remote}")
        pushed = digestfile.read_text().strip()
        assert check_pushed_manifest(registry, repo, tag, pushed, image_id) == media_type

        buildah("rmi", local)
        assert buildah.out("pull", TLS, f"docker://{remote}").splitlines()[-1] == image_id
        info = json.loads(buildah.out("inspect", "--type", "image", remote))
        assert info["FromImageID"] == image_id
        assert info["FromImageDigest"] == pushed

        out = tmp_path / f"out-{fmt}"
        buildah("push", remote, f"oci:{out}")
        files = layer_files(out)
        assert files["data/payload.bin"] == payload
        assert files["hello.txt"] == b"built by buildah\n"


def test_podman_manifest_list_push(
    registry: Registry, podman: Engine, repo: str, tmp_path: Path
) -> None:
    """A multi-arch list built with ``podman manifest`` and pushed with ``--all``."""
    ids = {}
    for arch in ("amd64", "arm64"):
        tarball = rootfs_tarball(
            tmp_path / f"{arch}.tar.gz", {"arch.txt": f"I am {arch}\n".encode()}
        )
        ids[arch] = (
            podman.out(
                "import",
                "--arch",
                arch,
                "--os",
                "linux",
                str(tarball),
                f"localhost/clients/list-{arch}:v1",
            )
            .splitlines()[-1]
            .removeprefix("sha256:")
        )

    podman("manifest", "create", "localhost/clients/list:v1")
    for arch in ("amd64", "arm64"):
        podman(
            "manifest",
            "add",
            "localhost/clients/list:v1",
            f"containers-storage:localhost/clients/list-{arch}:v1",
        )
    remote = registry.ref(repo, "v1")
    digestfile = tmp_path / "digest"
    podman(
        "manifest",
        "push",
        "--all",
        "--format",
        "oci",
        TLS,
        "--digestfile",
        str(digestfile),
        "localhost/clients/list:v1",
        f"docker://{remote}",
    )
    pushed = digestfile.read_text().strip()

    r = registry.get_manifest(repo, "v1")
    assert r.status_code == 200, describe(r)
    assert r.headers.get("docker-content-digest") == pushed == sha256(r.content), describe(r)
    index = r.json()
    assert index["mediaType"] == OCI_INDEX
    by_arch = {m["platform"]["architecture"]: m for m in index["manifests"]}
    assert sorted(by_arch) == ["amd64", "arm64"]
    for arch, entry in by_arch.items():
        child = registry.get_manifest(repo, entry["digest"])
        assert child.status_code == 200, describe(child)
        assert sha256(child.content) == entry["digest"] and len(child.content) == entry["size"]
        child_manifest = child.json()
        assert child_manifest["config"]["digest"] == "sha256:" + ids[arch]
        for layer in child_manifest["layers"]:
            layer_blob = registry.get_blob(repo, layer["digest"])
            assert layer_blob.status_code == 200, describe(layer_blob)
            assert_blob_served(registry, repo, layer["digest"], layer_blob.content)

    # Pull one platform back into empty storage.
    podman("rmi", "--all", "--force")
    pulled = podman.out("pull", TLS, "--arch", "arm64", remote).splitlines()[-1]
    assert pulled == ids["arm64"]
    saved = tmp_path / "saved"
    podman("save", "--format", "oci-dir", "-o", str(saved), pulled)
    assert layer_files(saved) == {"arch.txt": b"I am arm64\n"}
