"""The Python ORAS client (oras 0.2.x) against the registry under test: artifacts with custom
media types, chunked uploads, manifests with a ``subject`` and the OCI 1.1 referrers API.

oras-py's ``push`` takes a ``subject`` but cannot set a manifest ``artifactType``; for that
referrer the manifest is built by hand and sent with the client's lower-level ``upload_blob`` /
``upload_manifest``. oras-py has no referrers call, so the referrers API is read with httpx.
CNCF Distribution 2.8.2 predates OCI 1.1: the referrers assertions are skipped against it.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import oras.client
import oras.oci
import oras.provider
import pytest
import requests

from .checks import describe
from .harness import Registry
from .ocigen import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, sha256

pytestmark = pytest.mark.clients

PAYLOAD_TYPE = "application/vnd.moorage.test.payload.v1+bin"
CONFIG_TYPE = "application/vnd.moorage.test.config.v1+json"
SIGNATURE_CONFIG_TYPE = "application/vnd.moorage.test.signature.config.v1+json"
SIGNATURE_TYPE = "application/vnd.moorage.test.signature.v1+bin"
SBOM_ARTIFACT_TYPE = "application/vnd.moorage.test.sbom.v1+json"
SBOM_LAYER_TYPE = "application/spdx+json"
TITLE = "org.opencontainers.image.title"


def new_client(registry: Registry) -> oras.provider.Registry:
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    client.session.trust_env = False
    return client


@pytest.fixture
def client(registry: Registry) -> oras.provider.Registry:
    return new_client(registry)


def manifest_bytes(registry: Registry, repo: str, reference: str) -> bytes:
    r = registry.get_manifest(repo, reference)
    assert r.status_code == 200, describe(r)
    return r.content


def push_file_artifact(
    client: oras.provider.Registry,
    target: str,
    workdir: Path,
    payload: bytes,
    *,
    name: str = "payload.bin",
    media_type: str = PAYLOAD_TYPE,
    config_type: str = CONFIG_TYPE,
    subject: oras.oci.Subject | None = None,
    annotations: dict[str, str] | None = None,
    **push_args: object,
) -> str:
    """``oras push`` one file; returns the manifest digest the registry reported."""
    return push_file_artifact_response(
        client,
        target,
        workdir,
        payload,
        name=name,
        media_type=media_type,
        config_type=config_type,
        subject=subject,
        annotations=annotations,
        **push_args,
    ).headers["Docker-Content-Digest"]


def push_file_artifact_response(
    client: oras.provider.Registry,
    target: str,
    workdir: Path,
    payload: bytes,
    *,
    name: str = "payload.bin",
    media_type: str = PAYLOAD_TYPE,
    config_type: str = CONFIG_TYPE,
    subject: oras.oci.Subject | None = None,
    annotations: dict[str, str] | None = None,
    **push_args: object,
) -> requests.Response:
    """``oras push`` one file; returns the response to the manifest PUT."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_bytes(payload)
    config = workdir / f"{name}.config.json"
    config.write_text(json.dumps({"created-by": "moorage client tests", "name": name}))
    response: requests.Response = client.push(
        target=target,
        files=[f"{path}:{media_type}"],
        manifest_config=f"{config}:{config_type}",
        manifest_annotations=annotations,
        subject=subject,
        disable_path_validation=True,
        quiet=True,
        **push_args,
    )
    assert response.status_code == 201, (response.status_code, response.text)
    digest = response.headers.get("Docker-Content-Digest")
    assert digest and digest.startswith("sha256:"), dict(response.headers)
    return response


def push_manifest_lowlevel(
    client: oras.provider.Registry,
    target: str,
    workdir: Path,
    payload: bytes,
    manifest: dict[str, Any],
) -> requests.Response:
    """Upload an empty config + one layer and PUT ``manifest`` via oras-py's lower-level API."""
    workdir.mkdir(parents=True, exist_ok=True)
    container = client.get_container(target)
    empty = workdir / "empty.json"
    empty.write_bytes(b"{}")
    layer_path = workdir / "layer.bin"
    layer_path.write_bytes(payload)
    config_desc = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
    layer_desc = manifest["layers"][0]
    for path, desc in ((empty, config_desc), (layer_path, layer_desc)):
        r = client.upload_blob(str(path), container, desc)
        assert r.status_code in (200, 201), (r.status_code, r.text)
    manifest = {**manifest, "config": config_desc}
    put: requests.Response = client.upload_manifest(manifest, container)
    return put


@dataclass
class Subject:
    digest: str
    size: int
    media_type: str = OCI_MANIFEST

    def oras(self) -> oras.oci.Subject:
        return oras.oci.Subject(mediaType=self.media_type, digest=self.digest, size=self.size)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class ReferrerSetup:
    repo: str
    subject: Subject
    subject_payload: bytes
    signature_digest: str  # referrer pushed with client.push(subject=...), no artifactType
    signature_payload: bytes
    signature_put_headers: dict[str, str]
    sbom_digest: str  # referrer with an explicit artifactType, pushed with upload_manifest
    sbom_payload: bytes
    sbom_put_headers: dict[str, str]


@pytest.fixture(scope="module")
def referrers_setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> ReferrerSetup:
    client = new_client(registry)
    work = tmp_path_factory.mktemp("oras-referrers")
    repo = f"clients/oras/referrers-{uuid.uuid4().hex[:6]}"
    subject_payload = os.urandom(5000)
    subject_digest = push_file_artifact(
        client, f"{registry.host}/{repo}:v1", work / "subject", subject_payload
    )
    # The subject descriptor from the bytes the registry actually stores.
    subject_bytes = manifest_bytes(registry, repo, subject_digest)
    assert sha256(subject_bytes) == subject_digest
    subject = Subject(subject_digest, len(subject_bytes))

    # Referrer 1: oras-py push with subject (artifact type comes from the config media type).
    signature_payload = os.urandom(300)
    signature_put = push_file_artifact_response(
        client,
        f"{registry.host}/{repo}:signature",
        work / "signature",
        signature_payload,
        name="signature.sig",
        media_type=SIGNATURE_TYPE,
        config_type=SIGNATURE_CONFIG_TYPE,
        subject=subject.oras(),
        annotations={"org.example.kind": "signature"},
    )
    # Referrer 2: hand-built manifest with an artifactType and the OCI empty config.
    sbom_payload = json.dumps({"spdxVersion": "SPDX-2.3", "name": uuid.uuid4().hex}).encode()
    sbom_manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_ARTIFACT_TYPE,
        "layers": [
            {
                "mediaType": SBOM_LAYER_TYPE,
                "digest": sha256(sbom_payload),
                "size": len(sbom_payload),
                "annotations": {TITLE: "sbom.spdx.json"},
            }
        ],
        "subject": subject.descriptor(),
        "annotations": {
            "org.example.kind": "sbom",
            "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        },
    }
    # oras-py PUTs the manifest to the container's tag or digest; a digest reference needs the
    # final bytes first, so tag it (tags do not matter to the referrers API).
    sbom_put = push_manifest_lowlevel(
        client, f"{registry.host}/{repo}:sbom", work / "sbom", sbom_payload, sbom_manifest
    )
    assert sbom_put.status_code == 201, (sbom_put.status_code, sbom_put.text)
    sbom_digest = sbom_put.headers["Docker-Content-Digest"]
    return ReferrerSetup(
        repo=repo,
        subject=subject,
        subject_payload=subject_payload,
        signature_digest=signature_put.headers["Docker-Content-Digest"],
        signature_payload=signature_payload,
        signature_put_headers={k.lower(): v for k, v in signature_put.headers.items()},
        sbom_digest=sbom_digest,
        sbom_payload=sbom_payload,
        sbom_put_headers={k.lower(): v for k, v in sbom_put.headers.items()},
    )


# ------------------------------------------------------------------------------------- tests


def test_push_pull_artifact(
    registry: Registry, client: oras.provider.Registry, repo: str, tmp_path: Path
) -> None:
    payload = os.urandom(10_000)
    target = f"{registry.host}/{repo}:v1"
    digest = push_file_artifact(
        client, target, tmp_path / "in", payload, annotations={"org.example.note": "hello"}
    )

    raw = manifest_bytes(registry, repo, "v1")
    assert sha256(raw) == digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    assert manifest["annotations"] == {"org.example.note": "hello"}
    [layer] = manifest["layers"]
    assert layer["mediaType"] == PAYLOAD_TYPE
    assert layer["digest"] == sha256(payload) and layer["size"] == len(payload)
    assert layer["annotations"][TITLE] == "payload.bin"
    config = registry.get_blob(repo, manifest["config"]["digest"])
    assert config.status_code == 200, describe(config)
    assert json.loads(config.content) == {
        "created-by": "moorage client tests",
        "name": "payload.bin",
    }

    assert client.get_manifest(target) == manifest
    assert client.get_tags(f"{registry.host}/{repo}") == ["v1"]

    out = tmp_path / "out"
    files = client.pull(target=target, outdir=str(out))
    assert [Path(f).name for f in files] == ["payload.bin"]
    assert Path(files[0]).read_bytes() == payload

    out2 = tmp_path / "out-by-digest"
    files = client.pull(target=f"{registry.host}/{repo}@{digest}", outdir=str(out2))
    assert Path(files[0]).read_bytes() == payload


def test_chunked_upload(
    registry: Registry, client: oras.provider.Registry, repo: str, tmp_path: Path
) -> None:
    """POST, several PATCHes with Content-Range, then PUT ?digest=."""
    payload = os.urandom(3 * 1024 * 1024 + 12345)
    target = f"{registry.host}/{repo}:big"
    digest = push_file_artifact(
        client, target, tmp_path / "in", payload, do_chunked=True, chunk_size=1024 * 1024
    )
    layer = json.loads(manifest_bytes(registry, repo, digest))["layers"][0]
    assert layer["digest"] == sha256(payload) and layer["size"] == len(payload)
    head = registry.get_blob(repo, layer["digest"], method="HEAD")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(payload)

    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(files[0]).read_bytes() == payload


def test_delete_tag(
    registry: Registry, client: oras.provider.Registry, repo: str, tmp_path: Path
) -> None:
    payload = os.urandom(100)
    digest = push_file_artifact(client, f"{registry.host}/{repo}:gone", tmp_path, payload)
    assert client.delete_tag(f"{registry.host}/{repo}", "gone") is True
    for reference in ("gone", digest):
        r = registry.get_manifest(repo, reference)
        assert r.status_code == 404, describe(r)


def test_referrers_pushed_with_subject(
    registry: Registry, referrers_setup: ReferrerSetup, tmp_path: Path
) -> None:
    """Manifests with a subject are stored verbatim and pull back byte for byte (all servers)."""
    s = referrers_setup
    client = new_client(registry)
    for digest, payload, name in (
        (s.signature_digest, s.signature_payload, "signature.sig"),
        (s.sbom_digest, s.sbom_payload, "sbom.spdx.json"),
    ):
        raw = manifest_bytes(registry, s.repo, digest)
        assert sha256(raw) == digest
        manifest = json.loads(raw)
        assert manifest["subject"] == s.subject.descriptor()
        files = client.pull(
            target=f"{registry.host}/{s.repo}@{digest}", outdir=str(tmp_path / name)
        )
        assert [Path(f).name for f in files] == [name]
        assert Path(files[0]).read_bytes() == payload
    assert (
        json.loads(manifest_bytes(registry, s.repo, s.sbom_digest))["artifactType"]
        == SBOM_ARTIFACT_TYPE
    )
    files = client.pull(target=f"{registry.host}/{s.repo}:v1", outdir=str(tmp_path / "subject"))
    assert Path(files[0]).read_bytes() == s.subject_payload


def _require_referrers(registry: Registry) -> None:
    if not registry.supports_referrers:
        pytest.skip(f"{registry.kind} has no OCI 1.1 referrers API")


def referrers(
    registry: Registry, repo: str, digest: str, artifact_type: str | None = None
) -> tuple[httpx.Response, dict[str, Any]]:
    params = {"artifactType": artifact_type} if artifact_type else None
    r = registry.http.get(f"/v2/{repo}/referrers/{digest}", params=params)
    assert r.status_code == 200, describe(r)
    assert r.headers["content-type"].split(";")[0] == OCI_INDEX, describe(r)
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX, describe(r)
    return r, body


def test_oci_subject_header(registry: Registry, referrers_setup: ReferrerSetup) -> None:
    _require_referrers(registry)
    # A registry that processes subject answers the manifest PUT with OCI-Subject.
    s = referrers_setup
    for headers in (s.signature_put_headers, s.sbom_put_headers):
        assert headers.get("oci-subject") == s.subject.digest, headers


def test_referrers_api(registry: Registry, referrers_setup: ReferrerSetup) -> None:
    _require_referrers(registry)
    s = referrers_setup
    r, body = referrers(registry, s.repo, s.subject.digest)
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert sorted(by_digest) == sorted([s.signature_digest, s.sbom_digest]), describe(r)

    sig_raw = manifest_bytes(registry, s.repo, s.signature_digest)
    sbom_raw = manifest_bytes(registry, s.repo, s.sbom_digest)
    sig = by_digest[s.signature_digest]
    assert sig["mediaType"] == OCI_MANIFEST
    assert sig["size"] == len(sig_raw)
    # No artifactType in the manifest: the config media type stands in for it.
    assert sig["artifactType"] == SIGNATURE_CONFIG_TYPE
    assert sig.get("annotations") == json.loads(sig_raw)["annotations"]
    sbom = by_digest[s.sbom_digest]
    assert sbom["mediaType"] == OCI_MANIFEST
    assert sbom["size"] == len(sbom_raw)
    assert sbom["artifactType"] == SBOM_ARTIFACT_TYPE
    assert sbom.get("annotations") == json.loads(sbom_raw)["annotations"]


def test_referrers_artifact_type_filter(registry: Registry, referrers_setup: ReferrerSetup) -> None:
    _require_referrers(registry)
    s = referrers_setup
    r, body = referrers(registry, s.repo, s.subject.digest, SBOM_ARTIFACT_TYPE)
    assert [d["digest"] for d in body["manifests"]] == [s.sbom_digest], describe(r)
    assert r.headers.get("oci-filters-applied") == "artifactType", describe(r)

    r, body = referrers(registry, s.repo, s.subject.digest, SIGNATURE_CONFIG_TYPE)
    assert [d["digest"] for d in body["manifests"]] == [s.signature_digest], describe(r)
    assert r.headers.get("oci-filters-applied") == "artifactType", describe(r)

    r, body = referrers(registry, s.repo, s.subject.digest, "application/vnd.example.nothing")
    assert body["manifests"] == [], describe(r)


def test_referrers_of_manifest_without_referrers(
    registry: Registry, referrers_setup: ReferrerSetup
) -> None:
    _require_referrers(registry)
    s = referrers_setup
    r, body = referrers(registry, s.repo, s.sbom_digest)
    assert body["manifests"] == [], describe(r)
    # A digest the registry has never seen: still 200 with an empty index (never 404).
    r, body = referrers(registry, s.repo, "sha256:" + "ab" * 32)
    assert body["manifests"] == [], describe(r)


def test_referrer_before_subject_and_after_delete(
    registry: Registry, client: oras.provider.Registry, repo: str, tmp_path: Path
) -> None:
    """A referrer may be pushed before its subject; deleting it removes it from the list."""
    _require_referrers(registry)
    subject_payload = os.urandom(1000)
    # Build the subject manifest by hand so its digest is known before it is pushed.
    client_work = tmp_path / "subject"
    subject_manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.moorage.test.later.v1",
        "layers": [
            {
                "mediaType": PAYLOAD_TYPE,
                "digest": sha256(subject_payload),
                "size": len(subject_payload),
            }
        ],
    }
    config_desc = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
    subject_raw = json.dumps({**subject_manifest, "config": config_desc}).encode()
    subject = Subject(sha256(subject_raw), len(subject_raw))

    referrer_payload = os.urandom(100)
    referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_ARTIFACT_TYPE,
        "layers": [
            {
                "mediaType": SBOM_LAYER_TYPE,
                "digest": sha256(referrer_payload),
                "size": len(referrer_payload),
            }
        ],
        "subject": subject.descriptor(),
    }
    put = push_manifest_lowlevel(
        client,
        f"{registry.host}/{repo}:referrer",
        tmp_path / "referrer",
        referrer_payload,
        referrer,
    )
    assert put.status_code == 201, (put.status_code, put.text)
    referrer_digest = put.headers["Docker-Content-Digest"]
    assert put.headers.get("OCI-Subject") == subject.digest, dict(put.headers)

    r, body = referrers(registry, repo, subject.digest)
    assert [d["digest"] for d in body["manifests"]] == [referrer_digest], describe(r)

    # Now push the subject itself, by digest, with exactly the bytes we computed.
    container = client.get_container(f"{registry.host}/{repo}:subject")
    client_work.mkdir()
    (client_work / "empty.json").write_bytes(b"{}")
    (client_work / "payload.bin").write_bytes(subject_payload)
    for path, desc in (
        (client_work / "empty.json", config_desc),
        (client_work / "payload.bin", subject_manifest["layers"][0]),
    ):
        assert client.upload_blob(str(path), container, desc).status_code in (200, 201)
    r = registry.http.put(
        f"/v2/{repo}/manifests/{subject.digest}",
        content=subject_raw,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, describe(r)
    assert r.headers.get("docker-content-digest") == subject.digest, describe(r)
    r, body = referrers(registry, repo, subject.digest)
    assert [d["digest"] for d in body["manifests"]] == [referrer_digest], describe(r)

    assert client.delete_tag(f"{registry.host}/{repo}", "referrer") is True
    r, body = referrers(registry, repo, subject.digest)
    assert body["manifests"] == [], describe(r)
