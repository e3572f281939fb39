"""A real Helm chart through the registry with oras, using Helm's media types (what `helm push`
and `helm pull` send and expect): pushed with Basic auth to a `moorage serve` with access control
on, pulled back byte for byte, recognised as a Helm chart with its name, version and appVersion.

The chart is made here the way `helm package` lays it out: a gzipped tar of
``<name>/Chart.yaml``, ``values.yaml`` and ``templates/``, and a config blob that is Chart.yaml's
metadata as JSON (Helm's ``chart.Metadata`` field order)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import httpx
import oras.client
import pytest

from moorage.oci import artifacts
from moorage.oci.manifest import parse_manifest

from ..conftest import ADMIN_PASSWORD, MoorageServer

pytestmark = pytest.mark.clients

CHART_YAML = """apiVersion: v2
name: {name}
description: A Helm chart for Kubernetes
type: application
version: {version}
appVersion: "1.16.0"
"""
VALUES = "replicaCount: 1\nimage:\n  repository: nginx\n  tag: stable\n"
TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  replicas: "{{ .Values.replicaCount }}"
"""


def make_chart(name: str, version: str) -> tuple[bytes, bytes]:
    """(chart .tgz bytes, config blob bytes), as `helm package` and `helm push` make them."""
    files = {
        f"{name}/Chart.yaml": CHART_YAML.format(name=name, version=version).encode(),
        f"{name}/values.yaml": VALUES.encode(),
        f"{name}/templates/configmap.yaml": TEMPLATE.encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    tgz = gzip.compress(raw.getvalue(), mtime=0)
    config = {
        "name": name,
        "version": version,
        "description": "A Helm chart for Kubernetes",
        "apiVersion": "v2",
        "appVersion": "1.16.0",
        "type": "application",
    }
    return tgz, json.dumps(config, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_helm_chart_push_and_pull_with_oras(auth_server: MoorageServer, tmp_path: Path) -> None:
    name, version = f"chart{uuid.uuid4().hex[:6]}", "0.1.0"
    tgz, config = make_chart(name, version)
    work = tmp_path / "push"
    work.mkdir()
    (work / f"{name}-{version}.tgz").write_bytes(tgz)
    (work / "config.json").write_bytes(config)
    repo = f"charts/{name}"
    target = f"{auth_server.host}/{repo}:{version}"

    # oras-py with Basic auth (its token flow keeps a pull-only token: machine-facts.md).
    client = oras.client.OrasClient(hostname=auth_server.host, insecure=True, auth_backend="basic")
    client.session.trust_env = False
    client.login("admin", ADMIN_PASSWORD, hostname=auth_server.host, tls_verify=False)
    pushed = client.push(
        target=target,
        files=[f"{work / f'{name}-{version}.tgz'}:{artifacts.HELM_CHART}"],
        manifest_config=f"{work / 'config.json'}:{artifacts.HELM_CONFIG}",
        disable_path_validation=True,
        quiet=True,
    )
    assert pushed.status_code == 201, pushed.text
    manifest_digest = pushed.headers["Docker-Content-Digest"]

    # What the registry stores: Helm's layout, the very bytes pushed.
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=30) as http:
        r = http.get(
            f"/v2/{repo}/manifests/{version}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["docker-content-digest"] == manifest_digest == sha256(r.content)
        parsed = parse_manifest(r.content, r.headers["content-type"])
        assert parsed.config is not None and parsed.config.media_type == artifacts.HELM_CONFIG
        assert str(parsed.config.digest) == sha256(config)
        assert [(layer.media_type, str(layer.digest), layer.size) for layer in parsed.layers] == [
            (artifacts.HELM_CHART, sha256(tgz), len(tgz))
        ]
        kind = artifacts.classify(parsed)
        assert (kind.kind, kind.label) == ("helm-chart", "Helm chart")
        assert artifacts.is_helm_chart(parsed)
        blob = http.get(f"/v2/{repo}/blobs/{parsed.config.digest}")
        assert blob.status_code == 200 and blob.content == config
        chart = artifacts.parse_helm_config(blob.content)
        assert (chart.name, chart.version, chart.app_version) == (name, version, "1.16.0")

    # The REST API and the UI name it a Helm chart, with its name, version and appVersion.
    _shown_as_chart(auth_server, repo, name, version)

    # helm pull's equivalent: the chart archive back, byte for byte, and still a chart.
    out = tmp_path / "pull"
    pulled = client.pull(target=target, outdir=str(out))
    assert len(pulled) == 1
    data = Path(pulled[0]).read_bytes()
    assert sha256(data) == sha256(tgz)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        chart_yaml = tar.extractfile(f"{name}/Chart.yaml")
        assert chart_yaml is not None and f"name: {name}" in chart_yaml.read().decode()


def _shown_as_chart(server: MoorageServer, repo: str, name: str, version: str) -> None:
    from ..ui.conftest import login_http

    helm = {
        "name": name,
        "version": version,
        "app_version": "1.16.0",
        "description": "A Helm chart for Kubernetes",
    }
    with httpx.Client(base_url=server.url, auth=("admin", ADMIN_PASSWORD), timeout=30) as api:
        (tag,) = api.get(f"/api/v1/repositories/{repo}/-/tags").json()["items"]
        assert (tag["artifact_kind"], tag["artifact_label"]) == ("helm-chart", "Helm chart")
        assert tag["helm"] == helm
        image = api.get(f"/api/v1/repositories/{repo}/-/manifests/{version}").json()
        assert image["artifact_kind"] == "helm-chart" and image["helm"] == helm
    with login_http(server) as ui:
        page = ui.get(f"/ui/repositories/{repo}").text
        assert f'Helm chart <span class="meta helm">{name} {version} (app 1.16.0)</span>' in page
        detail = ui.get(f"/ui/repositories/{repo}/manifests/{image['digest']}").text
        assert 'id="helm-chart"' in detail and "Helm chart ·" in detail
        assert f"helm install {name} oci://{server.host}/{repo} --version {version}" in detail


@pytest.mark.parametrize(
    ("media_type", "kind", "label"),
    [
        ("application/spdx+json", "sbom", "SBOM (SPDX)"),
        ("application/vnd.cyclonedx+json", "sbom", "SBOM (CycloneDX)"),
        ("application/vnd.wasm.content.layer.v1+wasm", "wasm", "WebAssembly module"),
        ("application/vnd.example.thing.v1", "artifact", "application/vnd.unknown.config.v1+json"),
    ],
)
def test_other_artifacts_pushed_with_oras_are_labelled(
    auth_server: MoorageServer, tmp_path: Path, media_type: str, kind: str, label: str
) -> None:
    repo = f"artifacts/a{uuid.uuid4().hex[:8]}"
    path = tmp_path / "payload.bin"
    path.write_bytes(json.dumps({"made": "for moorage", "n": uuid.uuid4().hex}).encode())
    client = oras.client.OrasClient(hostname=auth_server.host, insecure=True, auth_backend="basic")
    client.session.trust_env = False
    client.login("admin", ADMIN_PASSWORD, hostname=auth_server.host, tls_verify=False)
    pushed = client.push(
        target=f"{auth_server.host}/{repo}:v1",
        files=[f"{path}:{media_type}"],
        disable_path_validation=True,
        quiet=True,
    )
    assert pushed.status_code == 201, pushed.text
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=30) as api:
        (tag,) = api.get(f"/api/v1/repositories/{repo}/-/tags").json()["items"]
    assert (tag["artifact_kind"], tag["artifact_label"], tag["helm"]) == (kind, label, None)
