"""The Kubernetes manifests (deploy/kubernetes) are valid objects for the Kubernetes versions
operators run, wired together consistently (selectors, names, ports), speak the real
configuration contract, probe endpoints a real ``moorage serve`` answers, and run the container
locked down (non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from moorage.config import load_config

from .conftest import ADMIN_PASSWORD, MoorageServer, free_port
from .test_deployment import known_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes minor still commonly run, and the newest the schemas know.
VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
# Files that are examples rather than part of a kustomization (real secrets are not committed).
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "podmonitor.example.yaml"}
# Custom resources (the Prometheus Operator's): not in the Kubernetes schemas, checked by shape.
CUSTOM_KINDS = {"PodMonitor"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes as "Kind/name" → object."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _docs(path):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


OBJECTS = _manifests()


def _pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for key, obj in OBJECTS.items():
        if obj["kind"] in ("Deployment", "Job"):
            yield key, obj["spec"]["template"]


def _env(kind_name: str) -> dict[str, str]:
    obj = OBJECTS[kind_name]
    return {str(k): str(v) for k, v in (obj.get("data") or obj.get("stringData") or {}).items()}


def test_every_file_is_found_and_listed_by_its_kustomization() -> None:
    assert {"Deployment/moorage", "Deployment/moorage-worker", "Service/moorage",
            "Ingress/moorage", "Job/moorage-migrate", "PodDisruptionBudget/moorage",
            "HorizontalPodAutoscaler/moorage", "ConfigMap/moorage", "Secret/moorage",
            "PodMonitor/moorage"} <= set(OBJECTS)  # fmt: skip
    listed: set[Path] = set()
    tags = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        for res in k["resources"]:
            assert (kfile.parent / res).is_file(), f"{kfile}: {res} missing"
            listed.add((kfile.parent / res).resolve())
        tags.update((i["name"], i["newName"], i["newTag"]) for i in k["images"])
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files - listed == {(K8S / n).resolve() for n in NOT_IN_KUSTOMIZATION}
    # The migration Job runs the same image as the nodes.
    assert len(tags) == 1, tags


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "key", sorted(k for k, o in OBJECTS.items() if o["kind"] not in CUSTOM_KINDS)
)
def test_manifest_is_valid_against_the_kubernetes_schema(key: str, version: str) -> None:
    # strict: unknown fields (typos such as "readinessprobe") are errors, not silently ignored.
    kubernetes_validate.validate(OBJECTS[key], version, strict=True)


def test_schema_validation_catches_a_typo() -> None:
    """The check above can fail: a misspelt field is rejected."""
    bad = yaml.safe_load(yaml.safe_dump(OBJECTS["Deployment/moorage"]))
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_every_moorage_variable_is_a_real_setting() -> None:
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    used = set(re.findall(r"\bMOORAGE_[A-Z0-9_]+\b", text))
    assert len(used) > 10, "no settings found: the test reads the wrong files"
    assert used - known_settings() == set()


def test_configmap_and_secret_load_as_a_valid_cluster_configuration() -> None:
    config = load_config(None, environ=_env("ConfigMap/moorage") | _env("Secret/moorage"))
    assert config.storage.driver == "s3" and config.storage.s3.bucket
    assert config.database_url.startswith("postgresql://")
    assert config.database.migrate_on_start is False  # the Job migrates
    assert config.auth.token.key_encryption_secret
    # No secret in the ConfigMap: credentials come from the Secret only.
    for key in _env("ConfigMap/moorage"):
        assert not re.search(r"PASSWORD|SECRET|DATABASE_URL|AWS_", key), key


def test_objects_refer_to_each_other_consistently() -> None:
    deploy = OBJECTS["Deployment/moorage"]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = OBJECTS["Service/moorage"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert OBJECTS["PodDisruptionBudget/moorage"]["spec"]["selector"]["matchLabels"].items() <= (
        pod_labels.items()
    )
    target = OBJECTS["HorizontalPodAutoscaler/moorage"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    assert OBJECTS["HorizontalPodAutoscaler/moorage"]["spec"]["minReplicas"] >= 2
    container_ports = {
        p["name"]: p["containerPort"]
        for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        assert port["targetPort"] in container_ports
    for rule in OBJECTS["Ingress/moorage"]["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in service_ports
    # The container listens where the configuration says.
    assert container_ports["http"] == int(_env("ConfigMap/moorage")["MOORAGE_HTTP_PORT"])
    for _key, template in _pod_templates():
        spec = template["spec"]
        for c in spec["containers"]:
            for src in c["envFrom"]:
                ref = src.get("configMapRef") or src.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in src else "Secret"
                assert f"{kind}/{ref['name']}" in OBJECTS
        if "serviceAccountName" in spec:
            assert f"ServiceAccount/{spec['serviceAccountName']}" in OBJECTS


def test_ingress_streams_large_uploads() -> None:
    notes = OBJECTS["Ingress/moorage"]["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 600
    host = OBJECTS["Ingress/moorage"]["spec"]["rules"][0]["host"]
    assert _env("ConfigMap/moorage")["MOORAGE_HTTP_BASE_URL"] == f"https://{host}"


def test_pods_run_locked_down() -> None:
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    for key, template in _pod_templates():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, key
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == int(uid[1]), key
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, key
        mounts_needed = {v["name"] for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, key
            assert sc["readOnlyRootFilesystem"] is True, key
            assert sc["capabilities"] == {"drop": ["ALL"]}, key
            assert sc.get("privileged", False) is False, key
            mounted = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/var/lib/moorage"} <= mounted, key  # writable scratch only
            assert {m["name"] for m in c["volumeMounts"]} == mounts_needed, key
            assert "memory" in c["resources"]["limits"], key


def test_grace_period_covers_drain_and_in_flight_requests() -> None:
    env = _env("ConfigMap/moorage")
    needed = float(env["MOORAGE_HTTP_DRAIN_SECONDS"]) + float(env["MOORAGE_HTTP_SHUTDOWN_TIMEOUT"])
    grace = OBJECTS["Deployment/moorage"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace > needed


def test_containers_run_real_commands() -> None:
    for key, template in _pod_templates():
        for c in template["spec"]["containers"]:
            r = subprocess.run(
                [sys.executable, "-m", "moorage.cli", *c["args"], "--help"],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0, (key, c["args"], r.stderr)
    assert sorted(c["args"] for _k, t in _pod_templates() for c in t["spec"]["containers"]) == [
        ["db", "upgrade"],
        ["serve"],
        ["worker"],
    ]


def test_every_pod_is_scraped_on_the_metrics_port() -> None:
    """Registry nodes and workers expose the port MOORAGE_METRICS_PORT names, announce it to
    annotation-based scrapers, and the PodMonitor example selects them all by that port's name;
    neither the Service nor the Ingress carries it (metrics stay inside the cluster)."""
    env = _env("ConfigMap/moorage")
    assert env["MOORAGE_METRICS_ENABLED"] == "true"
    port = int(env["MOORAGE_METRICS_PORT"])
    monitor = OBJECTS["PodMonitor/moorage"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for key in ("Deployment/moorage", "Deployment/moorage-worker"):
        template = OBJECTS[key]["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        assert int(notes["prometheus.io/port"]) == port, key
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports[endpoint["port"]] == port, key
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            template["metadata"]["labels"].items()
        )
    assert all(p["name"] != "metrics" for p in OBJECTS["Service/moorage"]["spec"]["ports"])


def test_the_worker_runs_jobs_only() -> None:
    worker = OBJECTS["Deployment/moorage-worker"]
    spec = worker["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["worker"]
    assert {p["name"] for p in container["ports"]} == {"metrics"}  # no registry traffic
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == "metrics"
    labels = worker["spec"]["template"]["metadata"]["labels"]
    # Neither the Service, the PodDisruptionBudget nor the autoscaler take workers for nodes.
    for key in ("Service/moorage", "PodDisruptionBudget/moorage"):
        obj = OBJECTS[key]["spec"]
        selector = obj.get("selector", {})
        selector = selector.get("matchLabels", selector)
        assert not selector.items() <= labels.items(), key
    # Stopping: the runner gives running jobs 10 s (moorage/jobs/runner.py), within the grace.
    assert spec["terminationGracePeriodSeconds"] > 10


def _probes() -> list[tuple[str, dict[str, Any]]]:
    container = OBJECTS["Deployment/moorage"]["spec"]["template"]["spec"]["containers"][0]
    return [
        (k, container[k]["httpGet"]) for k in ("startupProbe", "readinessProbe", "livenessProbe")
    ]


def test_probes_are_answered_by_a_real_node_with_the_cluster_settings() -> None:
    """``moorage serve`` with the ConfigMap's settings (database and store swapped for the
    embedded SQLite and filesystem, which this test has instead of PostgreSQL and S3) answers
    each probe's path with 200."""
    assert {k: p["path"] for k, p in _probes()} == {
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    env = {
        k: v
        for k, v in _env("ConfigMap/moorage").items()
        if not k.startswith(("MOORAGE_STORAGE_", "MOORAGE_HTTP_DRAIN"))
    }
    env["MOORAGE_DATABASE_MIGRATE_ON_START"] = "true"  # no Job here: migrate at start
    env["MOORAGE_HTTP_WORKERS"] = "1"  # the probes' answers do not depend on it; starts faster
    metrics_port = free_port()  # the ConfigMap's 9100 may be taken on a shared test machine
    env["MOORAGE_METRICS_PORT"] = str(metrics_port)
    with tempfile.TemporaryDirectory(prefix="moorage-k8s-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", env={**env, "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD}
        ).start()
        try:
            for _kind, probe in _probes():
                r = httpx.get(f"{srv.url}{probe['path']}", timeout=10)
                assert r.status_code == 200, (probe, r.text)
            assert httpx.get(f"{srv.url}/no-such-probe", timeout=10).status_code == 404
            # Metrics on their own port, not on the registry's.
            scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
            assert scrape.status_code == 200 and "moorage_http_requests_total" in scrape.text
            assert httpx.get(f"{srv.url}/metrics", timeout=10).status_code == 404
        finally:
            srv.stop()
