"""Vulnerability policies: the decision on real findings (from the matcher on the advisories of
tests/data/vulndb), and the rule on a running server (403 DENIED naming the policy, referrers
and by-digest reads with push rights never blocked, audited), set with
``moorage admin set-vulnerability-policy``."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import httpx
import pytest

from moorage.scan.findings import Finding
from moorage.scan.model import Inventory, OSInfo, Package
from moorage.scan.vulndb.matcher import Matcher
from moorage.scan.vulndb.policy import VulnerabilityPolicy, decide, parse_allow
from moorage.services.errors import Invalid
from tests.conftest import (
    ADMIN_PASSWORD,
    error_code,
    image_manifest,
    moorage_cli,
    put_manifest,
    sha256,
)

from .conftest import auth_server, run

TODAY = date(2026, 12, 6)


def _findings(url: str) -> list[Finding]:
    inv = Inventory(
        OSInfo("alpine", "3.21.3"),
        (
            Package("apk", "musl", "1.2.5-r8", source_name="musl"),
            Package("npm", "left-pad", "1.2.0"),  # TEST-LAST-AFFECTED: critical, no fix
        ),
        (),
    )

    async def go(engine: Any) -> list[Finding]:
        return await Matcher(engine).match(inv)

    return run(url, go)


def test_decisions_on_real_findings(vulndb_url: str) -> None:
    found = _findings(vulndb_url)
    assert [(f.id, f.severity, f.fixed_version) for f in found] == [
        ("TEST-LAST-AFFECTED", "critical", None),
        ("ALPINE-CVE-2025-26519", "unknown", "1.2.5-r9"),
    ]
    p = VulnerabilityPolicy("namespace", "acme", block_severity="critical")
    msg = decide(p, "done", found, TODAY)
    assert msg is not None and msg.startswith(
        "the vulnerability policy of acme blocks this image: 1 finding(s) at or above critical: TEST-LAST-AFFECTED (critical, left-pad 1.2.0, no fix)"
    )
    # fixable only: the critical one has no fix; the fixable one is below any threshold (unknown)
    assert (
        decide(
            VulnerabilityPolicy("namespace", "acme", "low", fixable_only=True), "done", found, TODAY
        )
        is None
    )
    # allowed by id until a date: through that day, blocked again after it
    allow = (parse_allow("TEST-LAST-AFFECTED:2026-12-06", "vendor fix pending"),)
    assert (
        decide(
            VulnerabilityPolicy("namespace", "acme", "critical", allow=allow), "done", found, TODAY
        )
        is None
    )
    assert (
        decide(
            VulnerabilityPolicy("namespace", "acme", "critical", allow=allow),
            "done",
            found,
            date(2026, 12, 7),
        )
        is not None
    )
    # an upstream id allows the distribution's advisory (ALPINE-CVE-… has upstream CVE-…)
    musl = [f for f in found if f.id.startswith("ALPINE-")]
    hard = [Finding.from_dict({**musl[0].to_dict(), "severity": "high"})]
    p = VulnerabilityPolicy("repository", "acme/app", "high")
    assert decide(p, "done", hard, TODAY) is not None
    p = VulnerabilityPolicy(
        "repository", "acme/app", "high", allow=(parse_allow("CVE-2025-26519"),)
    )
    assert decide(p, "done", hard, TODAY) is None
    # not scanned: blocked only with block_unscanned; "unsupported" (not an image) never
    p = VulnerabilityPolicy("namespace", "acme", "critical", block_unscanned=True)
    assert "without a finished scan (not scanned yet)" in (decide(p, None, [], TODAY) or "")
    assert "(scan failed)" in (decide(p, "failed", [], TODAY) or "")
    assert decide(p, "unsupported", [], TODAY) is None
    assert (
        decide(VulnerabilityPolicy("namespace", "acme", "critical"), "pending", [], TODAY) is None
    )


def test_allow_syntax() -> None:
    assert parse_allow("CVE-2025-26519:2027-01-31").expires == date(2027, 1, 31)
    assert parse_allow("GHSA-cpwx-vrp4-4pq7").expires is None
    with pytest.raises(Invalid):
        parse_allow("CVE-2025-1:2027-02-30")
    with pytest.raises(Invalid):
        parse_allow("not an id; drop table")


def test_unscanned_images_blocked_on_a_running_server() -> None:
    """Scan on push off: every image is "not scanned", which a policy with --block-unscanned
    refuses (test_policy_e2e.py covers findings from real scans)."""
    admin = ("admin", ADMIN_PASSWORD)
    with (
        auth_server(MOORAGE_SCANNING_ON_PUSH="false") as srv,
        httpx.Client(base_url=srv.url, auth=admin, timeout=30) as c,
    ):
        repo = "acme/app"
        payload = image_manifest(c, repo)
        assert put_manifest(c, repo, "1.0", payload).status_code == 201
        digest = sha256(payload)
        # a referrer (an SBOM-like artifact with a subject), pushed by tag
        ref_payload = image_manifest(
            c, repo, artifactType="application/spdx+json",
            subject={"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(payload)},
        )  # fmt: skip
        assert put_manifest(c, repo, "sbom", ref_payload).status_code == 201

        r = moorage_cli(srv, "admin", "set-vulnerability-policy", "acme", "--block-severity", "critical", "--block-unscanned", "--allow", "CVE-2025-26519:2027-01-31", "--reason", "test")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert (
            "vulnerability policy of acme: block critical, unscanned blocked; allowed: CVE-2025-26519 until 2027-01-31"
            in r.stdout
        )

        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        for method in ("GET", "HEAD"):
            r = c.request(method, f"/v2/{repo}/manifests/1.0", headers=accept)
            assert r.status_code == 403, (method, r.text)
        r = c.get(f"/v2/{repo}/manifests/1.0", headers=accept)
        assert error_code(r) == "DENIED"
        assert (
            "the vulnerability policy of acme blocks images without a finished scan"
            in r.json()["errors"][0]["message"]
        )
        # by digest with push rights (a signer): allowed; a referrer: allowed
        assert c.get(f"/v2/{repo}/manifests/{digest}", headers=accept).status_code == 200
        assert c.get(f"/v2/{repo}/manifests/sbom", headers=accept).status_code == 200
        # another organization: no policy
        other = image_manifest(c, "other/app")
        assert put_manifest(c, "other/app", "1", other).status_code == 201
        assert c.get("/v2/other/app/manifests/1", headers=accept).status_code == 200
        # a repository's own policy replaces its organization's
        # (through the API this time; administrators only)
        body = {
            "block_severity": "none",
            "allow": [{"id": "CVE-2025-26519", "expires": "2027-01-31", "reason": "r"}],
        }
        assert (
            httpx.put(
                f"{srv.url}/api/v1/vulnerability-policies/{repo}", json=body, timeout=10
            ).status_code
            == 401
        )
        bad = c.put(f"/api/v1/vulnerability-policies/{repo}", json={"block_severity": "severe"})
        assert bad.status_code == 422, bad.text
        bad = c.put(
            f"/api/v1/vulnerability-policies/{repo}",
            json={
                "block_severity": "high",
                "allow": [{"id": "CVE-2025-1", "expires": "2027-13-01"}],
            },
        )
        assert bad.status_code == 422 and "is not a date" in bad.text, bad.text
        r = c.put(f"/api/v1/vulnerability-policies/{repo}", json=body)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "scope": "repository",
            "target": repo,
            "block_severity": "none",
            "fixable_only": False,
            "block_unscanned": False,
            "allow": body["allow"],
        }
        listed = c.get("/api/v1/vulnerability-policies").json()["items"]
        assert [(p["target"], p["block_severity"], p["block_unscanned"]) for p in listed] == [
            ("acme", "critical", True),
            (repo, "none", False),
        ]
        assert listed[0]["allow"] == [
            {"id": "CVE-2025-26519", "expires": "2027-01-31", "reason": "test"}
        ]
        import time

        deadline = time.monotonic() + 10  # policies are re-read every 2 s per process
        while c.get(f"/v2/{repo}/manifests/1.0", headers=accept).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        # the refusals are in the audit log (written off the request path, in batches)
        deadline = time.monotonic() + 20
        while True:
            r = c.get("/api/v1/audit", params={"action": "vulnerability.pull.denied"})
            assert r.status_code == 200, r.text
            events = r.json()["events"]
            if len(events) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(events) >= 3 and {e["repository"] for e in events} == {repo}, events
        assert all(e["result"] == "denied" and "acme" in json.dumps(e) for e in events)
