"""Moorage's Distribution envelope against the real thing: CNCF Distribution 2.8.2 (Debian's
docker-registry) is configured to notify the test receiver, a manifest is pushed, pulled and
deleted through it, and for every event it sent, the same facts rendered by
moorage.hooks.payloads give the same JSON (field names, nesting, which fields are left out)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage.hooks import payloads as p

from ..conftest import STARTUP_TIMEOUT, free_port, stop_process
from .receiver import WebhookReceiver

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry is installed by .ci/run"
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _config(storage: Path, port: int, hook: str) -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
notifications:
  events:
    includereferences: true
  endpoints:
    - name: moorage-test
      url: {hook}
      timeout: 2s
      threshold: 3
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
"""


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload(c: httpx.Client, repo: str, data: bytes) -> str:
    loc = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    digest = _sha(data)
    r = c.put(loc + ("&" if "?" in loc else "?") + "digest=" + digest, content=data)
    assert r.status_code == 201, r.text
    return digest


def _ours(d: dict[str, Any]) -> dict[str, Any]:
    """Distribution's event re-rendered by Moorage from the same facts."""
    t = d["target"]
    target = p.Target(
        repository=t.get("repository", ""),
        digest=t.get("digest", ""),
        media_type=t.get("mediaType", ""),
        size=t.get("size", 0),
        tag=t.get("tag"),
        url=t.get("url"),
        references=tuple(
            p.Reference(r["mediaType"], r["size"], r["digest"]) for r in t.get("references", [])
        ),
    )
    event = p.Event(
        d["action"],
        target,
        p.Source(d["source"]["addr"], d["source"]["instanceID"]),
        d["actor"].get("name", ""),
        p.RequestInfo(**d["request"]),
        id=d["id"],
        time=datetime.fromisoformat(d["timestamp"][:26] + "+00:00"),
    )
    return p.distribution_event(event)


def test_envelope_matches_what_distribution_sends() -> None:
    with tempfile.TemporaryDirectory(prefix="moorage-dist-hooks-") as tmp, WebhookReceiver() as rx:
        port = free_port()
        config = Path(tmp) / "config.yml"
        config.write_text(_config(Path(tmp) / "store", port, rx.url("/distribution")))
        with open(Path(tmp) / "log", "wb") as log:
            proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                try:
                    if httpx.get(f"{url}/v2/").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (Path(tmp) / "log").read_text()
                time.sleep(0.1)
            with httpx.Client(
                base_url=url, timeout=30, headers={"User-Agent": "moorage-test/1"}
            ) as c:
                config_blob = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
                layer = os.urandom(300)
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": {
                            "mediaType": "application/vnd.oci.image.config.v1+json",
                            "digest": _upload(c, "t/app", config_blob),
                            "size": len(config_blob),
                        },
                        "layers": [
                            {
                                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": _upload(c, "t/app", layer),
                                "size": len(layer),
                            }
                        ],
                    }
                ).encode()
                r = c.put(
                    "/v2/t/app/manifests/v1",
                    content=manifest,
                    headers={"Content-Type": OCI_MANIFEST},
                )
                assert r.status_code == 201, r.text
                r = c.get("/v2/t/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
                assert r.status_code == 200
                assert c.delete(f"/v2/t/app/manifests/{_sha(manifest)}").status_code == 202
            # push, pull, delete of the manifest, delete of its tag (blob events are ignored).
            deliveries = rx.wait_for(4)
        finally:
            stop_process(proc)
    events = [e for d in deliveries for e in json.loads(d.body)["events"]]
    assert all(d.headers["content-type"] == p.DISTRIBUTION_MEDIA_TYPE for d in deliveries)
    assert sorted(e["action"] for e in events) == ["delete", "delete", "pull", "push"]
    for theirs in events:
        ours = _ours(theirs)
        assert ours["timestamp"].endswith("Z")
        assert {k: v for k, v in ours.items() if k != "timestamp"} == {
            k: v for k, v in theirs.items() if k != "timestamp"
        }, json.dumps(theirs, indent=1)
