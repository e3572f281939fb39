"""The events other capabilities announce, end to end on a real ``moorage serve`` and a real
receiver on loopback, each delivery's signature checked: ``scan`` after a push scanned on push,
``policy`` after pulls refused by a vulnerability policy and by a signed-only policy (from the
audit log's batches, not the pull's path), ``replication`` after a replication run to a real CNCF Distribution."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from moorage.hooks.signing import verify

from ..conftest import MoorageServer, push_blob, put_manifest
from ..replication.peers import Distribution, distribution
from .conftest import events_of, eventually
from .receiver import WebhookReceiver

SECRET = "capability-events-secret-0123456789"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = {"Accept": MANIFEST}


@pytest.fixture(scope="module")
def dist() -> Iterator[Distribution]:
    with distribution() as peer:
        yield peer


def _api(c: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    return c.request(method, "/api/v1" + path, **kw)


def _org(c: httpx.Client, name: str) -> None:
    r = _api(c, "POST", "/organizations", json={"name": name})
    assert r.status_code == 201, r.text


def _hook(
    c: httpx.Client, target: str, url: str, events: list[str], fmt: str = "distribution"
) -> int:
    body = {"target": target, "url": url, "events": events, "format": fmt, "secret": SECRET}
    r = _api(c, "POST", "/webhooks", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _layer() -> bytes:
    """A real gzipped tar layer (one file), so the scanner reads it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("srv/hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _push(c: httpx.Client, repo: str, tag: str) -> tuple[str, int]:
    config = json.dumps(
        {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers"}, "n": uuid.uuid4().hex}
    ).encode()
    layer = _layer()
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(c, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": push_blob(c, repo, layer),
                "size": len(layer),
            }
        ],
    }
    payload = json.dumps(doc).encode()
    r = put_manifest(c, repo, tag, payload)
    assert r.status_code == 201, r.text
    return r.headers["docker-content-digest"], len(payload)


def _signed_events(d: Any, kind: str) -> list[dict[str, Any]]:
    verify(d.headers.get("x-moorage-signature"), d.body, SECRET)
    assert d.headers["x-moorage-event"] == kind
    assert d.headers["content-type"] == "application/vnd.docker.distribution.events.v1+json"
    events = events_of(bytes(d.body))
    assert {e["action"] for e in events} == {kind}
    return events


def test_scan_completed_after_scan_on_push(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    _org(admin, org)
    _hook(admin, org, receiver.url("/scan"), ["scan"])
    cloud = _hook(admin, f"{org}/app", receiver.url("/scan-ce"), ["scan"], fmt="cloudevents")
    assert cloud
    repo = f"{org}/app"
    digest, size = _push(admin, repo, "v1")
    got = receiver.wait_for(2, timeout=60)
    by_path = {d.path: d for d in got}
    assert set(by_path) == {"/scan", "/scan-ce"}
    (event,) = _signed_events(by_path["/scan"], "scan")
    assert event["target"] == {
        "mediaType": MANIFEST,
        "size": size,
        "digest": digest,
        "length": size,
        "repository": repo,
    }
    details = event["moorage"]
    assert details["status"] == "done", details
    assert set(details["summary"]) == {"critical", "high", "medium", "low", "unknown"}
    assert details["scanned_at"].endswith("Z")
    # The same scan as a CloudEvent (to the repository's own webhook), signed too.
    ce = by_path["/scan-ce"]
    verify(ce.headers.get("x-moorage-signature"), ce.body, SECRET)
    doc = json.loads(ce.body)
    assert doc["type"] == "io.moorage.scan.completed" and doc["subject"] == f"{repo}@{digest}"
    assert doc["data"]["status"] == "done" and doc["data"]["digest"] == digest
    # The report the webhook points at says the same.
    r = _api(admin, "GET", f"/repositories/{repo}/-/manifests/{digest}/vulnerabilities")
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    # Only subscribers of "scan" hear of it: the push itself was not announced to them.
    time.sleep(1)
    assert len(receiver.deliveries) == 2


def test_policy_violation_after_pulls_blocked_by_a_vulnerability_policy(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    _org(admin, org)
    # Not scanned (scan on push off for this organization): a policy blocking unscanned
    # images refuses the pull.
    r = _api(admin, "PUT", f"/organizations/{org}/scanning", json={"on_push": False})
    assert r.status_code == 200, r.text
    _hook(admin, org, receiver.url("/policy"), ["policy"])
    repo = f"{org}/app"
    digest, size = _push(admin, repo, "v1")
    body = {"block_severity": "critical", "block_unscanned": True}
    r = _api(admin, "PUT", f"/vulnerability-policies/{org}", json=body)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 15  # policies are re-read every 2 s per process
    while (r := admin.get(f"/v2/{repo}/manifests/v1", headers=ACCEPT)).status_code != 403:
        assert r.status_code == 200 and time.monotonic() < deadline, r.text
        time.sleep(0.3)
    assert admin.get(f"/v2/{repo}/manifests/v1", headers=ACCEPT).status_code == 403
    # Two refusals (possibly in one audit batch): one Distribution envelope or two.
    def refusals() -> list[dict[str, Any]]:
        got = [e for d in list(receiver.deliveries) for e in _signed_events(d, "policy")]
        return got if len(got) >= 2 else []

    events = eventually(refusals)
    for event in events:
        assert event["target"] == {
            "mediaType": MANIFEST,
            "size": size,
            "digest": digest,
            "length": size,
            "repository": repo,
            "tag": "v1",
        }
        assert event["actor"] == {"name": "admin"}
        assert event["request"]["method"] == "GET"
        assert event["request"]["id"]  # the refused request's id, as in its audit record
        details = event["moorage"]
        assert details["policy"] == f"vulnerability:{org}"
        assert details["action"] == "pull"
        assert "blocks images without a finished scan" in details["reason"], details


def test_policy_violation_after_a_pull_refused_by_a_signed_only_policy(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    _org(admin, org)
    repo = f"{org}/app"
    _hook(admin, repo, receiver.url("/trust"), ["policy"], fmt="cloudevents")
    digest, _size = _push(admin, repo, "v1")
    r = _api(admin, "PUT", f"/trust/policies/{repo}", json={"require_signature": True})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 15
    while (r := admin.get(f"/v2/{repo}/manifests/v1", headers=ACCEPT)).status_code != 403:
        assert r.status_code == 200 and time.monotonic() < deadline, r.text
        time.sleep(0.3)
    (d,) = receiver.wait_for(1)
    verify(d.headers.get("x-moorage-signature"), d.body, SECRET)
    assert d.headers["x-moorage-event"] == "policy"
    doc = json.loads(d.body)
    assert doc["type"] == "io.moorage.policy.violated"
    assert doc["subject"] == f"{repo}:v1"
    data = doc["data"]
    assert data["repository"] == repo and data["digest"] == digest and data["tag"] == "v1"
    assert data["policy"] == f"signature:{repo}" and data["action"] == "pull"
    assert data["actor"] == "admin" and "unsigned" in data["reason"], data


def test_replication_finished_after_a_run_to_distribution(
    hook_server: MoorageServer,
    admin: httpx.Client,
    receiver: WebhookReceiver,
    org: str,
    dist: Distribution,
) -> None:
    _org(admin, org)
    _hook(admin, org, receiver.url("/replication"), ["replication"])
    repo = f"{org}/app"
    _push(admin, repo, "v1")
    _push(admin, repo, "v2")
    r = _api(admin, "POST", "/replication/remotes", json={"name": org, "url": dist.url})
    assert r.status_code == 201, r.text
    body = {
        "name": org, "remote": org, "direction": "push", "source": f"{org}/**",
        "triggers": ["manual"],
    }  # fmt: skip
    r = _api(admin, "POST", "/replication/policies", json=body)
    assert r.status_code == 201, r.text
    run = _api(admin, "POST", f"/replication/policies/{org}/run")
    assert run.status_code == 202, run.text
    execution = run.json()["execution"]
    (d,) = receiver.wait_for(1, timeout=90)
    (event,) = _signed_events(d, "replication")
    assert event["target"] == {"repository": repo}
    details = event["moorage"]
    assert {k: details[k] for k in ("policy", "execution_id", "remote", "direction")} == {
        "policy": org,
        "execution_id": str(execution),
        "remote": org,
        "direction": "push",
    }
    assert details["status"] == "succeeded", details
    assert details["tags_succeeded"] == 2 and details["tags_failed"] == 0
    assert details["bytes"] > 0
    assert details["started_at"] <= details["finished_at"]
    done = _api(admin, "GET", f"/replication/executions/{execution}").json()
    assert done["state"] == "succeeded"
    # It really is on the peer.
    tags = httpx.get(f"{dist.url}/v2/{repo}/tags/list", timeout=10).json()["tags"]
    assert sorted(tags) == ["v1", "v2"]


def test_replication_without_tasks_reaches_its_destination_namespace(
    hook_server: MoorageServer,
    admin: httpx.Client,
    receiver: WebhookReceiver,
    org: str,
    dist: Distribution,
) -> None:
    """A pull policy whose source matches nothing on the remote: no task was planned, so the
    webhooks of the namespace it writes into (its destination namespace) hear of it."""
    _org(admin, org)
    _hook(admin, org, receiver.url("/empty"), ["replication"])
    r = _api(admin, "POST", "/replication/remotes", json={"name": org, "url": dist.url})
    assert r.status_code == 201, r.text
    body = {
        "name": org, "remote": org, "direction": "pull", "source": f"nothing{org}/**",
        "dest_namespace": org, "triggers": ["manual"],
    }  # fmt: skip
    r = _api(admin, "POST", "/replication/policies", json=body)
    assert r.status_code == 201, r.text
    run = _api(admin, "POST", f"/replication/policies/{org}/run")
    assert run.status_code == 202, run.text
    (d,) = receiver.wait_for(1, timeout=60)
    (event,) = _signed_events(d, "replication")
    assert event["target"] == {}
    details = event["moorage"]
    assert details["execution_id"] == str(run.json()["execution"])
    assert details["direction"] == "pull" and details["remote"] == org
    assert details["tags_succeeded"] == 0 and details["tags_failed"] == 0
    assert details["status"] == "succeeded", details
