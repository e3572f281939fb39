"""External scanners end to end: an organization set (``moorage admin set-scanner``, the API)
to use a Harbor pluggable scanner adapter (API v1.2) that this module starts on loopback
(tests/scan/adapter_app.py). The adapter really pulls each image from Moorage with the bearer
token of the ScanRequest, and reports what it found in the layers; its findings show in the
vulnerabilities API and a vulnerability policy blocks pulls on them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    free_port,
    moorage_cli,
    postgres_database,
    push_blob,
    put_manifest,
    sha256,
)
from .adapter_app import API_KEY, Adapter, AdapterServer
from .conftest import FAST, wait_report
from .layers import layer

SECRET = "scanext-key-encryption-secret-0123456789"
ZERO = {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}


@pytest.fixture(scope="module")
def adapter() -> Iterator[AdapterServer]:
    with AdapterServer(Adapter(delay=1.5), free_port()) as srv:
        yield srv


@pytest.fixture(scope="module")
def ext_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-scanext-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            port = free_port()
            env = {
                **FAST,
                "MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": SECRET,
                "MOORAGE_SCANNING_REGISTRY_URL": f"http://127.0.0.1:{port}",
                "MOORAGE_SCANNING_ATTACH_SBOM": "false",
            }
            srv = MoorageServer(Path(tmp) / "data", database_url=url, env=env, port=port)
            srv.start(timeout=120)
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture
def admin(ext_server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ext_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


def packages_layer(**packages: str) -> bytes:
    listing = "".join(f"{name} {version}\n" for name, version in packages.items())
    return layer({"usr/share/fakepkgs/list": listing.encode(), "n": uuid.uuid4().bytes})


def push_image(
    client: httpx.Client,
    repo: str,
    tag: str,
    layers: list[bytes],
    labels: dict[str, str] | None = None,
) -> str:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels or {}},
            "rootfs": {"type": "layers"},
        }
    ).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(client, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": push_blob(client, repo, blob),
                "size": len(blob),
            }
            for blob in layers
        ],
    }
    payload = json.dumps(doc).encode()
    r = put_manifest(client, repo, tag, payload)
    assert r.status_code == 201, r.text
    return sha256(payload)


def new_org(admin: httpx.Client, prefix: str) -> str:
    org = f"{prefix}{uuid.uuid4().hex[:8]}"
    r = admin.post("/api/v1/organizations", json={"name": org})
    assert r.status_code == 201, r.text
    return org


def test_scan_through_the_adapter_findings_and_policy(
    admin: httpx.Client,
    ext_server: MoorageServer,
    adapter: AdapterServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = new_org(admin, "ext")
    monkeypatch.setenv("MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET", SECRET)  # as on every node
    r = moorage_cli(
        ext_server, "admin", "set-scanner", org, "--adapter", adapter.url,
        "--auth-header", "X-ScannerAdapter-API-Key", "--credential-stdin",
        stdin=API_KEY + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Loopback Scanner 1.0 (Moorage tests)" in r.stdout
    view = admin.get(f"/api/v1/organizations/{org}/scanner").json()
    assert (view["scanner"], view["adapter_url"], view["auth_header"], view["has_credential"]) == (
        "external",
        adapter.url,
        "X-ScannerAdapter-API-Key",
        True,
    )
    assert "credential" not in view
    seen = len(adapter.adapter.authorizations)

    repo = f"{org}/app"
    base = packages_layer(zlib="1.2.11", openssl="1.1.1k")
    top = packages_layer(zlib="1.2.11", openssl="1.1.1k", busybox="1.36.1", tzdata="2024a")
    digest = push_image(admin, repo, "1", [base, top])
    report = wait_report(admin, repo, "1", timeout=90)
    assert report["status"] == "done", report
    assert report["scanner"] == "Loopback Scanner 1.0 (Moorage tests)"
    assert report["database_updated_at"].startswith("2026-12-01T08:00:00")
    assert report["summary"] == {**ZERO, "critical": 1, "high": 1, "medium": 1, "low": 1}
    got = [
        (f["id"], f["package"], f["version"], f["fixed_version"], f["severity"], f["cvss_score"])
        for f in report["findings"]
    ]
    assert got == [
        ("CVE-2021-3711", "openssl", "1.1.1k", "1.1.1l", "critical", 9.8),
        ("CVE-2018-25032", "zlib", "1.2.11", "1.2.12", "high", 7.5),
        ("CVE-2023-42366", "busybox", "1.36.1", None, "medium", 5.5),
        ("TEMP-0000000-TZ", "tzdata", "2024a", None, "low", None),  # Negligible counts as low
    ]
    assert report["findings"][0]["links"] == ["https://avd.example.test/CVE-2021-3711"]

    # the adapter pulled the image itself, with a bearer token good for pulling this
    # repository and nothing else
    a = adapter.adapter
    auth = a.authorizations[seen]
    assert auth is not None and auth.startswith("Bearer ")
    pulled = [(p, s) for p, s in a.pulls if p.startswith(f"/v2/{repo}/")]
    assert (f"/v2/{repo}/manifests/{digest}", 200) in pulled
    assert sum(1 for p, s in pulled if "/blobs/" in p and s == 200) >= 3  # config + 2 layers
    assert a.probes["other-repository"] in (401, 403)
    assert a.probes["push"] in (401, 403)
    request = next(j.request for j in a.jobs.values() if j.request["artifact"]["digest"] == digest)
    assert request["registry"]["url"] == ext_server.url
    assert request["artifact"] == {
        "repository": repo,
        "digest": digest,
        "mime_type": "application/vnd.oci.image.manifest.v1+json",
    }
    # the token is the registry's: it pulls the manifest through /v2 like any client
    r = httpx.get(
        f"{ext_server.url}/v2/{repo}/manifests/{digest}",
        headers={"Authorization": auth, "Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 200
    # and nothing else of the API: no account behind it, no management
    with httpx.Client(base_url=ext_server.url, headers={"Authorization": auth}, timeout=30) as tok:
        assert tok.get("/api/v1/users").status_code == 403
        assert (
            tok.put(
                f"/api/v1/vulnerability-policies/{org}", json={"block_severity": "none"}
            ).status_code
            == 403
        )
        assert tok.get(f"/api/v1/organizations/{org}/scanner").status_code == 403
        assert tok.post(f"/api/v1/repositories/{repo}/-/manifests/1/scan").status_code == 403
        for path in ("/api/v1/repositories", "/api/v1/organizations", "/api/v1/dashboard"):
            assert tok.get(path).status_code < 500, path

    # CSV export and the policy work on the adapter's findings as on the built-in scanner's
    csv = admin.get(f"/api/v1/repositories/{repo}/-/manifests/1/vulnerabilities?format=csv")
    assert csv.status_code == 200 and "CVE-2021-3711" in csv.text
    r = admin.put(f"/api/v1/vulnerability-policies/{org}", json={"block_severity": "critical"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while True:
        pull = admin.get(
            f"/v2/{repo}/manifests/1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        if pull.status_code == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pull.status_code == 403, pull.text
    err = pull.json()["errors"][0]
    assert err["code"] == "DENIED"
    assert "CVE-2021-3711 (critical, openssl 1.1.1k, fixed in 1.1.1l)" in err["message"]
    r = admin.put(
        f"/api/v1/vulnerability-policies/{org}",
        json={"block_severity": "critical", "allow": [{"id": "CVE-2021-3711", "reason": "test"}]},
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while admin.get(f"/v2/{repo}/manifests/1").status_code != 200:
        assert time.monotonic() < deadline, "the allow-list entry did not apply"
        time.sleep(0.5)


def test_resumed_scan_polls_the_same_request(
    admin: httpx.Client, ext_server: MoorageServer, adapter: AdapterServer
) -> None:
    """A job resumed after a crash polls the adapter's request from its checkpoint instead of
    submitting the scan again."""
    from moorage.config import load_config
    from moorage.scan.external import ExternalScanners, ScannerSetting

    org = new_org(admin, "res")
    r = admin.put(
        f"/api/v1/organizations/{org}/scanner",
        json={
            "adapter_url": adapter.url,
            "auth_header": "X-ScannerAdapter-API-Key",
            "credential": API_KEY,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["adapter"] == {
        "name": "Loopback Scanner",
        "vendor": "Moorage tests",
        "version": "1.0",
    }
    repo = f"{org}/app"
    digest = push_image(admin, repo, "1", [packages_layer(zlib="1.2.11")])
    assert wait_report(admin, repo, "1", timeout=90)["summary"]["high"] == 1
    a = adapter.adapter
    request_id = next(k for k, j in a.jobs.items() if j.request["artifact"]["digest"] == digest)
    submissions = a.submissions
    config = load_config(None, overrides={"data_dir": str(ext_server.data_dir)})
    external = ExternalScanners(None, config, None)
    setting = ScannerSetting(org, adapter.url, "X-ScannerAdapter-API-Key", None, None, "")  # type: ignore[arg-type]
    external.credential = lambda _s: API_KEY  # type: ignore[method-assign]
    resume = {"adapter": adapter.url, "digest": digest, "request_id": request_id}
    found, label, _ = asyncio.run(
        external.scan(
            setting, repo, digest, "application/vnd.oci.image.manifest.v1+json", resume=resume
        )
    )
    assert a.submissions == submissions
    assert [f.id for f in found] == ["CVE-2018-25032"] and label.startswith("Loopback Scanner")


def test_failures_are_reported_not_raised(
    admin: httpx.Client, ext_server: MoorageServer, adapter: AdapterServer
) -> None:
    org = new_org(admin, "bad")
    r = admin.put(
        f"/api/v1/organizations/{org}/scanner",
        json={
            "adapter_url": adapter.url,
            "auth_header": "X-ScannerAdapter-API-Key",
            "credential": API_KEY,
        },
    )
    assert r.status_code == 200, r.text
    repo = f"{org}/app"
    push_image(
        admin, repo, "1", [packages_layer(zlib="1.2.11")], labels={"io.moorage.test.fail": "boom"}
    )
    report = wait_report(admin, repo, "1", timeout=90)
    assert report["status"] == "failed"
    assert "answered /scan/{id}/report with 500: scan failed: boom" in report["error"]

    # an adapter that does not answer: refused when set (with the check), and a scan fails
    # with a message once the job has used its attempts
    dead = f"http://127.0.0.1:{free_port()}"
    r = admin.put(
        f"/api/v1/organizations/{org}/scanner",
        json={"adapter_url": dead},
    )
    assert r.status_code == 422 and "cannot be reached" in r.json()["error"]["message"], r.text
    r = admin.put(
        f"/api/v1/organizations/{org}/scanner", json={"adapter_url": dead, "check": False}
    )
    assert r.status_code == 200
    push_image(admin, repo, "2", [packages_layer(zlib="1.2.11")])
    deadline = time.monotonic() + 90
    while True:
        body = admin.get(f"/api/v1/repositories/{repo}/-/manifests/2/vulnerabilities").json()
        if body.get("status") == "failed" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert body["status"] == "failed" and "cannot be reached" in body["error"], body

    # back to the built-in scanner
    r = admin.delete(f"/api/v1/organizations/{org}/scanner")
    assert r.status_code == 200 and r.json()["scanner"] == "builtin"
    events = admin.get("/api/v1/audit", params={"action": "scan.scanner.set"}).json()["events"]
    mine = [e["details"] for e in events if e["details"].get("organization") == org]
    assert mine[0] == {"organization": org, "scanner": "builtin"}  # newest first
    assert {
        "organization": org,
        "scanner": "external",
        "adapter_url": dead,
        "auth_header": None,
    } in mine


def test_who_may_configure_and_what_is_refused(
    admin: httpx.Client,
    ext_server: MoorageServer,
    adapter: AdapterServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = new_org(admin, "who")
    user = f"u{uuid.uuid4().hex[:8]}"
    password = "pw-" + uuid.uuid4().hex
    r = admin.post("/api/v1/users", json={"username": user, "password": password})
    assert r.status_code == 201, r.text
    r = admin.put(f"/api/v1/organizations/{org}/permissions/users/{user}", json={"role": "admin"})
    assert r.status_code == 204, r.text
    with httpx.Client(base_url=ext_server.url, auth=(user, password), timeout=30) as org_admin:
        r = org_admin.get(f"/api/v1/organizations/{org}/scanner")
        assert r.status_code == 200 and r.json()["scanner"] == "builtin", r.text
        r = org_admin.put(f"/api/v1/organizations/{org}/scanner", json={"adapter_url": adapter.url})
        assert r.status_code == 403, r.text
    body = {"adapter_url": adapter.url, "check": False}
    bad: list[tuple[dict[str, Any], str]] = [
        ({**body, "adapter_url": "ftp://x"}, "adapter_url"),
        ({**body, "adapter_url": "http://u:p@127.0.0.1:1"}, "adapter_url"),
        ({**body, "auth_header": "Host", "credential": "x"}, "auth_header"),
        ({**body, "auth_header": "X-Key"}, "credential"),
        ({**body, "credential": "a\nb"}, "credential"),
    ]
    for doc, where in bad:
        r = admin.put(f"/api/v1/organizations/{org}/scanner", json=doc)
        assert r.status_code == 422 and r.json()["error"]["field"] == where, (doc, r.text)
    r = admin.put("/api/v1/organizations/nosuchorg99/scanner", json=body)
    assert r.status_code == 404
    r = moorage_cli(ext_server, "admin", "set-scanner", "nosuchorg99", "--builtin")
    assert r.returncode == 1 and "encrypted" in r.stderr  # this node lacks the key secret
    monkeypatch.setenv("MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET", SECRET)
    r = moorage_cli(ext_server, "admin", "set-scanner", "nosuchorg99", "--builtin")
    assert r.returncode == 1 and "no organization nosuchorg99" in r.stderr, r.stderr
    r = moorage_cli(ext_server, "admin", "set-scanner", org, "--adapter", "ftp://x", "--no-check")
    assert r.returncode == 1 and "adapter_url is an http://" in r.stderr, r.stderr


def test_system_admin_sets_the_scanner_in_the_ui(
    admin: httpx.Client, ext_server: MoorageServer, adapter: AdapterServer
) -> None:
    from tests.ui.conftest import csrf_from, login_http

    org = new_org(admin, "uis")
    with login_http(ext_server) as ui:
        page = ui.get(f"/ui/organizations/{org}")
        assert 'id="scanner-form"' in page.text and "built-in scanner" in page.text
        form = {
            "adapter_url": adapter.url,
            "auth_header": "X-ScannerAdapter-API-Key",
            "credential": API_KEY,
            "check": "1",
        }
        r = ui.post(f"/ui/organizations/{org}/scanner", data={**form, "csrf_token": "forged"})
        assert r.status_code == 403
        assert admin.get(f"/api/v1/organizations/{org}/scanner").json()["scanner"] == "builtin"
        r = ui.post(
            f"/ui/organizations/{org}/scanner", data={**form, "csrf_token": csrf_from(page.text)}
        )
        assert r.status_code == 303 and r.headers["location"].endswith("?done=scanner-set"), r.text
        view = admin.get(f"/api/v1/organizations/{org}/scanner").json()
        assert (view["scanner"], view["adapter_url"], view["has_credential"]) == (
            "external",
            adapter.url,
            True,
        )
        page = ui.get(f"/ui/organizations/{org}?done=scanner-set")
        assert f"<code>{adapter.url}</code>" in page.text and API_KEY not in page.text
        # a wrong key: the adapter's 401 is the form's error
        r = ui.post(
            f"/ui/organizations/{org}/scanner",
            data={**form, "credential": "wrong", "csrf_token": csrf_from(page.text)},
        )
        assert r.status_code == 400 and "answered /metadata with 401" in r.text, r.text
        r = ui.post(
            f"/ui/organizations/{org}/scanner",
            data={"builtin": "1", "csrf_token": csrf_from(page.text)},
        )
        assert r.status_code == 303
        assert admin.get(f"/api/v1/organizations/{org}/scanner").json()["scanner"] == "builtin"
    # an organization admin sees the scanner, without the form, and may not post it
    user, password = f"u{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    assert (
        admin.post("/api/v1/users", json={"username": user, "password": password}).status_code
        == 201
    )
    r = admin.put(f"/api/v1/organizations/{org}/permissions/users/{user}", json={"role": "admin"})
    assert r.status_code == 204
    with login_http(ext_server, user, password) as ui:
        page = ui.get(f"/ui/organizations/{org}")
        assert 'id="scanner-panel"' in page.text and 'id="scanner-form"' not in page.text
        r = ui.post(
            f"/ui/organizations/{org}/scanner",
            data={"adapter_url": adapter.url, "csrf_token": csrf_from(page.text)},
        )
        assert r.status_code == 403
