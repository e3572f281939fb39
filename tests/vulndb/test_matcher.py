"""The matcher on real advisories: osv.dev's recorded answers (osv-scanner's cassettes and
osv.dev's apitester snapshots) for the records we hold, real Go vulndb edge cases, and the
distribution records of tests/data/vulndb/records (source packages, revisions, epochs)."""

from __future__ import annotations

import json
from typing import Any

from moorage.scan.findings import Finding, summarize
from moorage.scan.model import Inventory, OSInfo, Package
from moorage.scan.vulndb.matcher import Matcher

from .conftest import OSV, run

KINDS = {
    "Go": "golang",
    "PyPI": "pypi",
    "npm": "npm",
    "Maven": "maven",
    "crates.io": "cargo",
    "RubyGems": "gem",
}


def match(url: str, packages: list[Package], os_info: OSInfo | None = None) -> list[Finding]:
    inv = Inventory(os_info, tuple(packages), ("sha256:" + "a" * 64,))

    async def go(engine: Any) -> list[Finding]:
        return await Matcher(engine).match(inv)

    return run(url, go)


def held_ids(url: str) -> set[str]:
    import sqlalchemy as sa

    async def go(engine: Any) -> set[str]:
        async with engine.connect() as conn:
            return {r for (r,) in await conn.execute(sa.text("SELECT osv_id FROM vulndb_records"))}

    return run(url, go)


def test_answers_recorded_from_osv_dev(vulndb_url: str) -> None:
    """Every recorded query in a language ecosystem: our ids equal the API's, restricted to the
    records we hold (minus those the recording predates: known-drift.json)."""
    drift = json.loads((OSV / "expected-matches" / "known-drift.json").read_text())
    excluded = (
        set(drift["published_after_recording"])
        | set(drift["not_returned_by_api_at_recording_time"])
        | set(drift["withdrawn_in_our_copy"])
    )
    rows = json.loads(
        (OSV / "expected-matches" / "osv-scanner-cassettes-querybatch.json").read_text()
    )["rows"]
    held = held_ids(vulndb_url)
    checked = nonempty = 0
    packages = []
    for row in rows:
        kind = KINDS.get(row.get("ecosystem", ""))
        if kind is None:
            continue
        packages.append(
            (row, Package(kind, row["name"], row["version"], path=f"row{len(packages)}"))
        )
    found = match(vulndb_url, [p for _, p in packages])
    by_path: dict[str, set[str]] = {}
    for f in found:
        by_path.setdefault(f"{f.package}@{f.version}", set()).add(f.id)
    wrong = []
    for row, p in packages:
        expected = set(row["expected_ids"]) & held - excluded
        got = by_path.get(f"{p.name}@{p.version}", set()) - excluded
        checked += 1
        nonempty += bool(expected)
        if got != expected:
            wrong.append(
                (
                    row["ecosystem"],
                    row["name"],
                    row["version"],
                    sorted(expected - got),
                    sorted(got - expected),
                )
            )
    assert wrong == []
    assert checked == 266 and nonempty == 21


def test_apitester_answers(vulndb_url: str) -> None:
    """osv.dev's apitester snapshot: jinja2 3.1.4 → 3 GHSA + 3 PYSEC; nokogiri 1.18.2 → 15 GHSA."""
    found = match(vulndb_url, [Package("pypi", "Jinja2", "3.1.4")])
    assert sorted(f.id for f in found) == [
        "GHSA-cpwx-vrp4-4pq7", "GHSA-gmj6-6f8f-6699", "GHSA-q2x7-8rv6-6q7h",
        "PYSEC-2026-1471", "PYSEC-2026-1472", "PYSEC-2026-1475",
    ]  # fmt: skip
    assert {f.package for f in found} == {"Jinja2"}
    nokogiri = match(vulndb_url, [Package("gem", "nokogiri", "1.18.2")])
    assert len(nokogiri) == 15 and all(f.id.startswith("GHSA-") for f in nokogiri)


def test_go_ranges_introduced_after_and_branches(vulndb_url: str) -> None:
    """GO-2022-0274 (runc): introduced at a pseudo-version, fixed in 1.1.0. GO-2022-0229
    (stdlib): two branches, fixed in 1.12.16 and 1.13.7; the toolchain version comes from the
    binary's build info."""
    runc = "github.com/opencontainers/runc"

    def ids(version: str) -> list[tuple[str, str | None]]:
        return sorted(
            (f.id, f.fixed_version)
            for f in match(vulndb_url, [Package("golang", runc, version)])
            if f.id == "GO-2022-0274"
        )

    assert ids("v1.0.0") == []  # introduced after
    assert ids("v1.0.1-0.20211012131345-9c444070ec7b") == [("GO-2022-0274", "1.1.0")]
    assert ids("v1.0.2") == [("GO-2022-0274", "1.1.0")]
    assert ids("v1.1.0") == []

    def std(go: str) -> list[str | None]:
        pkg = Package(
            "golang", "example.com/app", "v1.0.0", path="usr/bin/app", extra=(("go_version", go),)
        )
        return [f.fixed_version for f in match(vulndb_url, [pkg]) if f.id == "GO-2022-0229"]

    assert std("go1.12.15") == ["1.12.16"]
    assert std("go1.12.16") == []
    assert std("go1.13.5") == ["1.13.7"]  # the 1.13 branch: fixed in a later point release
    assert std("go1.13.7") == []


DEBIAN12 = OSInfo("debian", "12", "Debian GNU/Linux 12 (bookworm)")


def test_debian_source_package_and_later_revision(vulndb_url: str) -> None:
    libc6 = Package(
        "deb",
        "libc6",
        "2.36-9+deb12u2",
        source_name="glibc",
        source_version="2.36-9+deb12u2",
        layer_digest="sha256:" + "b" * 64,
    )
    found = match(vulndb_url, [libc6], DEBIAN12)
    assert [f.to_dict() for f in found] == [
        {
            "id": "DEBIAN-CVE-2023-4911", "aliases": [], "ecosystem": "Debian:12", "package": "libc6",
            "version": "2.36-9+deb12u2", "fixed_version": "2.36-9+deb12u3", "severity": "high",
            "cvss_score": 7.8, "layer_digest": "sha256:" + "b" * 64, "upstream": ["CVE-2023-4911"],
            "summary": "A buffer overflow was discovered in the GNU C Library's dynamic loader ld.so while processing the GLIBC_TUNABLES environment variable.",
            "links": ["https://security-tracker.debian.org/tracker/CVE-2023-4911"], "source_package": "glibc",
            "cvss_vector": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", "purl": "",
        },
        {
            "id": "DSA-5514-1", "aliases": [], "ecosystem": "Debian:12", "package": "libc6",
            "version": "2.36-9+deb12u2", "fixed_version": "2.36-9+deb12u3", "severity": "unknown",
            "cvss_score": None, "layer_digest": "sha256:" + "b" * 64, "upstream": ["CVE-2023-4911", "CVE-2023-4806"],
            "summary": "glibc - security update", "links": ["https://www.debian.org/security/2023/dsa-5514"],
            "source_package": "glibc", "cvss_vector": "", "purl": "",
        },
    ]  # fmt: skip
    # the fixed revision, and a release before the range was introduced (DEBIAN-CVE: 2.34-1)
    fixed = Package("deb", "libc6", "2.36-9+deb12u3", source_name="glibc")
    assert match(vulndb_url, [fixed], DEBIAN12) == []
    old = Package("deb", "libc6", "2.33-1", source_name="glibc")
    assert [f.id for f in match(vulndb_url, [old], DEBIAN12)] == ["DSA-5514-1"]
    # Debian 11's range for a Debian 11 image; no OS: no distribution match at all
    bullseye = Package("deb", "libc6", "2.31-13+deb11u6", source_name="glibc")
    found = match(vulndb_url, [bullseye], OSInfo("debian", "11"))
    assert [(f.id, f.fixed_version) for f in found] == [("DSA-5514-1", "2.31-13+deb11u7")]
    assert match(vulndb_url, [bullseye]) == []
    assert summarize(match(vulndb_url, [libc6], DEBIAN12)) == {
        "critical": 0,
        "high": 1,
        "medium": 0,
        "low": 0,
        "unknown": 1,
    }


def test_alpine_ubuntu_rocky(vulndb_url: str) -> None:
    musl = Package("apk", "musl-utils", "1.2.5-r8", source_name="musl")
    found = match(vulndb_url, [musl], OSInfo("alpine", "3.21.3"))
    assert [(f.id, f.ecosystem, f.fixed_version, f.upstream) for f in found] == [
        ("ALPINE-CVE-2025-26519", "Alpine:v3.21", "1.2.5-r9", ("CVE-2025-26519",))
    ]
    assert (
        match(
            vulndb_url,
            [Package("apk", "musl", "1.2.5-r9", source_name="musl")],
            OSInfo("alpine", "3.21.3"),
        )
        == []
    )
    assert [
        f.fixed_version
        for f in match(vulndb_url, [Package("apk", "musl", "1.2.5-r0")], OSInfo("alpine", "3.20.1"))
    ] == ["1.2.5-r1"]

    ubuntu = Package("deb", "libc-bin", "2.35-0ubuntu3.1", source_name="glibc")
    found = match(vulndb_url, [ubuntu], OSInfo("ubuntu", "22.04"))
    assert [(f.id, f.ecosystem, f.severity, f.fixed_version) for f in found] == [
        ("UBUNTU-CVE-2023-4911", "Ubuntu:22.04:LTS", "high", "2.35-0ubuntu3.4")
    ]
    assert match(vulndb_url, [ubuntu], OSInfo("ubuntu", "18.04")) == []  # Ubuntu Pro (ESM) only

    rocky = OSInfo("rocky", "9.3")
    libs = Package("rpm", "openssl-libs", "1:3.0.7-25.el9", source_name="openssl")
    found = match(vulndb_url, [libs], rocky)
    assert [(f.id, f.aliases, f.severity, f.fixed_version) for f in found] == [
        ("RLSA-2024:0001", ("CVE-2023-5678",), "medium", "1:3.0.7-27.el9")
    ]
    assert (
        match(
            vulndb_url,
            [Package("rpm", "openssl-libs", "1:3.0.7-27.el9", source_name="openssl")],
            rocky,
        )
        == []
    )
    assert (
        match(
            vulndb_url,
            [Package("rpm", "openssl-libs", "3.0.7-30.el9", source_name="openssl")],
            rocky,
        )
        != []
    )  # epoch 0 < 1


def test_last_affected_limit_versions_withdrawn_and_names(vulndb_url: str) -> None:
    def one(pkg: Package) -> list[tuple[str, str | None, str, float | None]]:
        return [(f.id, f.fixed_version, f.severity, f.cvss_score) for f in match(vulndb_url, [pkg])]

    # npm names compare in lower case; last_affected includes its version; CVSS v4.0 preferred
    assert one(Package("npm", "left-pad", "1.3.0")) == [
        ("TEST-LAST-AFFECTED", None, "critical", 9.3)
    ]
    assert one(Package("npm", "left-pad", "1.3.1")) == []
    assert one(Package("npm", "left-pad", "0.9.0")) == []
    # PEP 503 names; limit caps the range; an explicit version matches beyond it
    assert one(Package("pypi", "some.package", "1.9")) == [("TEST-LIMIT", None, "medium", None)]
    assert one(Package("pypi", "SOME-package", "2.0")) == []
    assert one(Package("pypi", "some_package", "2.5")) == [("TEST-LIMIT", None, "medium", None)]
    # Maven order: 2.0-beta1 < 2.0 < 2.0.1; the coordinates from a purl when the name has none
    assert one(Package("maven", "org.example:lib", "2.0")) == [
        ("TEST-MAVEN", "2.0.1", "unknown", None)
    ]
    assert (
        one(Package("maven", "lib", "2.0-alpha1", purl="pkg:maven/org.example/lib@2.0-alpha1"))
        == []
    )
    # a withdrawn record never matches (the DSA and DEBIAN-CVE ones do)
    found = match(vulndb_url, [Package("deb", "glibc", "2.36-9", source_name="glibc")], DEBIAN12)
    assert sorted(f.id for f in found) == ["DEBIAN-CVE-2023-4911", "DSA-5514-1"]
