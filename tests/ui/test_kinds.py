"""The repository page names what each tag is (issue 9): a plain image (OCI or Docker config)
is an image — never "artifact" —, an index is an index, anything else shows its artifact type
(Helm chart, SBOM, signature, or the raw type when unknown)."""

from __future__ import annotations

import html
import json
import re
import uuid

import httpx

from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    push_blob,
    put_manifest,
    sha256,
)

from .conftest import login_http

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "", "size": 2}


def _row_kind(page: str, tag: str) -> str:
    m = re.search(
        rf'<td><a href="[^"]*">{re.escape(tag)}</a></td>\s*<td>.*?</td>\s*<td>(.*?)</td>',
        page,
        re.S,
    )
    assert m, f"no row for tag {tag}"
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip()


def test_repository_page_names_each_kind(ui_server: MoorageServer) -> None:
    repo = f"admin/kinds{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=ui_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        oci = image_manifest(c, repo)
        assert put_manifest(c, repo, "oci", oci).status_code == 201
        cfg = b'{"architecture":"arm64","os":"linux"}'
        docker = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": push_blob(c, repo, cfg),
                    "size": len(cfg),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": push_blob(c, repo, b"layer"),
                        "size": 5,
                    }
                ],
            }
        ).encode()
        assert put_manifest(c, repo, "docker", docker, DOCKER_MANIFEST).status_code == 201
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": sha256(oci),
                        "size": len(oci),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            }
        ).encode()
        assert put_manifest(c, repo, "index", index, OCI_INDEX).status_code == 201
        empty = dict(EMPTY, digest=push_blob(c, repo, b"{}"))
        for tag, artifact_type in (
            ("sbom", "application/spdx+json"),
            ("other", "application/vnd.example.thing"),
        ):
            doc = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": artifact_type,
                "config": empty,
                "layers": [
                    {
                        "mediaType": "application/octet-stream",
                        "digest": push_blob(c, repo, tag.encode()),
                        "size": len(tag),
                    }
                ],
            }
            assert put_manifest(c, repo, tag, json.dumps(doc).encode()).status_code == 201
    with login_http(ui_server) as admin:
        page = admin.get(f"/ui/repositories/{repo}")
        assert page.status_code == 200
        kinds = {t: _row_kind(page.text, t) for t in ("oci", "docker", "index", "sbom", "other")}
    assert kinds == {
        "oci": "image",
        "docker": "image",
        "index": "index",
        "sbom": "SBOM (SPDX)",
        "other": "application/vnd.example.thing",
    }, kinds
