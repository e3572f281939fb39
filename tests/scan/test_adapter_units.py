"""What Moorage makes of a Harbor scanner adapter's answers (moorage/scan/adapter.py), hostile
ones included: metadata capabilities as the v1.2 spec defines them, the v1.1 report's fields
mapped onto findings, and everything malformed refused or skipped with a message."""

from __future__ import annotations

import math
from typing import Any

import pytest

from moorage.scan.adapter import (
    MAX_FINDINGS,
    REPORT_MIME,
    AdapterError,
    findings_from_report,
    normalize_mime,
    parse_metadata,
)
from moorage.scan.external import check_adapter_url, check_header
from moorage.services.errors import Invalid

OCI = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"


def meta(caps: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.1"},
        "capabilities": caps,
        **extra,
    }


def test_metadata_capabilities() -> None:
    m = parse_metadata(
        meta(
            [
                # no "type": a vulnerability capability (the spec's backward compatibility)
                {
                    "consumes_mime_types": [OCI, DOCKER],
                    "produces_mime_types": [
                        "application/vnd.security.vulnerability.report;version=1.1"
                    ],
                },
                {
                    "type": "sbom",
                    "consumes_mime_types": ["application/x-other"],
                    "produces_mime_types": [REPORT_MIME],
                },
            ],
            properties={
                "harbor.scanner-adapter/vulnerability-database-updated-at": "2026-11-30T10:00:00Z"
            },
        )
    )
    assert m.label == "Trivy 0.50.1 (Aqua Security)"
    assert m.supports(OCI) and m.supports(DOCKER)
    assert not m.supports("application/x-other")  # only an sbom capability consumes it
    assert (
        m.database_updated_at is not None
        and m.database_updated_at.isoformat() == "2026-11-30T10:00:00+00:00"
    )
    old = parse_metadata(
        meta(
            [
                {
                    "consumes_mime_types": [OCI],
                    "produces_mime_types": [
                        "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
                    ],
                }
            ]
        )
    )
    assert not old.supports(OCI) and "does not produce" in old.why_not(OCI)
    assert "does not scan" in old.why_not("application/x-helm")
    assert normalize_mime("Application/Vnd.X ;  version=1.1") == "application/vnd.x; version=1.1"


@pytest.mark.parametrize(
    "doc",
    [None, [], "x", {"scanner": {}}, {"capabilities": []}, {"scanner": "x", "capabilities": []}],
)
def test_malformed_metadata_is_refused(doc: Any) -> None:
    with pytest.raises(AdapterError):
        parse_metadata(doc)


def test_hostile_metadata_fields_are_bounded() -> None:
    m = parse_metadata(
        {
            "scanner": {"name": "x" * 10_000 + "\x1b[31m", "vendor": 5, "version": None},
            "capabilities": [1, "x", {"consumes_mime_types": "not a list"}]
            + [{"consumes_mime_types": [OCI], "produces_mime_types": [REPORT_MIME]}],
            "properties": {"harbor.scanner-adapter/vulnerability-database-updated-at": "yesterday"},
        }
    )
    assert (
        len(m.name) == 100
        and "\x1b" not in m.label
        and m.vendor == ""
        and m.database_updated_at is None
    )
    assert m.supports(OCI)


def test_report_fields_become_findings() -> None:
    report = {
        "generated_at": "2026-12-01T00:00:00Z",
        "vulnerabilities": [
            {
                "id": "CVE-2023-1",
                "package": "zlib",
                "version": "1.2.11",
                "fix_version": "1.2.12",
                "severity": "High",
                "preferred_cvss": {"score_v3": 7.5, "vector_v3": "CVSS:3.1/AV:N"},
                "links": ["https://nvd.nist.gov/vuln/detail/CVE-2023-1", "javascript:alert(1)"],
                "description": "d" * 2000,
                "cwe_ids": ["CWE-1"],
                "vendor_attributes": {"x": 1},
            },
            {"id": "CVE-2023-2", "package": "busybox", "version": "1.36", "severity": "Negligible"},
            {
                "id": "CVE-2023-3",
                "package": "openssl",
                "version": "3",
                "severity": "Critical",
                "fix_version": "",
            },
            {
                "id": "CVE-2023-1",
                "package": "zlib",
                "version": "1.2.11",
                "severity": "High",
            },  # duplicate
            {
                "id": "CVE-2023-4",
                "package": "x",
                "version": "1",
                "severity": "Severe",
                "preferred_cvss": {"score_v3": math.inf},
            },
            {"id": "", "package": "nameless"},
            {"package": "no-id"},
            {"id": "CVE-2023-5"},  # no package
            "not an object",
        ],
    }
    found = findings_from_report(report)
    rows = [(f.id, f.package, f.version, f.fixed_version, f.severity, f.cvss_score) for f in found]
    assert rows == [
        ("CVE-2023-3", "openssl", "3", None, "critical", None),
        ("CVE-2023-1", "zlib", "1.2.11", "1.2.12", "high", 7.5),
        ("CVE-2023-2", "busybox", "1.36", None, "low", None),
        ("CVE-2023-4", "x", "1", None, "unknown", None),
    ]
    zlib = found[1]
    assert zlib.links == ("https://nvd.nist.gov/vuln/detail/CVE-2023-1",)
    assert len(zlib.summary) == 512 and zlib.cvss_vector == "CVSS:3.1/AV:N"
    assert findings_from_report({"vulnerabilities": None}) == []
    assert findings_from_report({}) == []


@pytest.mark.parametrize("doc", [None, [], {"vulnerabilities": "x"}, {"vulnerabilities": {}}])
def test_malformed_reports_are_refused(doc: Any) -> None:
    with pytest.raises(AdapterError):
        findings_from_report(doc)


def test_a_report_with_too_many_findings_is_refused() -> None:
    with pytest.raises(AdapterError, match="more than"):
        findings_from_report({"vulnerabilities": [{}] * (MAX_FINDINGS + 1)})


def test_settings_are_checked() -> None:
    assert check_adapter_url("https://trivy.example:8443/") == "https://trivy.example:8443"
    for bad in (
        "",
        "ftp://x",
        "http://",
        "http://u:p@x",
        "http://x/?q=1",
        "http://x/#f",
        "http://x y",
        "http://x:99999",
    ):
        with pytest.raises(Invalid):
            check_adapter_url(bad)
    assert check_header(None, None) == (None, None)
    assert check_header(None, "Bearer t") == ("Authorization", "Bearer t")
    assert check_header("X-ScannerAdapter-API-Key", "k") == ("X-ScannerAdapter-API-Key", "k")
    for name, value in (
        ("X-Key", None),
        ("Host", "x"),
        ("Content-Type", "x"),
        ("Bad Header", "x"),
        ("X", ""),
        ("X", "a\r\nb"),
        ("X", "k" * 5000),
    ):
        with pytest.raises(Invalid):
            check_header(name, value)
