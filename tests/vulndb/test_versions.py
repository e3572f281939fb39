"""Version order per ecosystem, on each ecosystem's own published vectors (tests/data/vulndb/
versions/SOURCES.md names them): dpkg, apk-tools, rpm, PEP 440, golang/mod semver, and
osv-scalibr's per-ecosystem fixtures (Debian, Alpine, Red Hat, PyPI, SemVer, Maven, RubyGems)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moorage.scan.vulndb import versions
from moorage.scan.vulndb.versions import apk, dpkg, gems, maven, rpm, semver

DATA = Path(__file__).parent.parent / "data" / "vulndb" / "versions"


def _cases(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((DATA / name).read_text())["cases"]
    return cases


def _check(compare: versions.Compare, cases: list[dict[str, Any]]) -> None:
    wrong = [(c["a"], c["b"], c["expected"], compare(c["a"], c["b"])) for c in cases]
    wrong = [w for w in wrong if w[2] != w[3]]
    assert wrong == [], f"{len(wrong)} of {len(cases)} wrong, e.g. {wrong[:5]}"
    assert len(cases) > 10


@pytest.mark.parametrize(
    ("name", "compare"),
    [
        ("dpkg.json", dpkg.compare),
        ("osv-scalibr-debian.json", dpkg.compare),
        ("apk.json", apk.compare),
        ("rpm.json", rpm.vercmp),
        ("osv-scalibr-redhat.json", rpm.compare),
        ("gosemver.json", semver.go_compare),
        ("osv-scalibr-semver.json", semver.compare),
        ("osv-scalibr-maven.json", maven.compare),
        ("osv-scalibr-rubygems.json", gems.compare),
        ("osv-scalibr-pypi.json", versions.pep440_compare),
    ],
)
def test_vectors(name: str, compare: versions.Compare) -> None:
    _check(compare, _cases(name))


def test_scalibr_alpine_on_valid_versions() -> None:
    """osv-scalibr's Alpine file mirrors apk-tools' for valid versions; for invalid ones it
    encodes its own fallback, which is not apk-tools' (apk.json covers apk-tools' own)."""
    cases = [
        c for c in _cases("osv-scalibr-alpine.json") if apk.valid(c["a"]) and apk.valid(c["b"])
    ]
    assert len(cases) > 700
    _check(apk.compare, cases)


def test_apk_validity_and_fuzzy_ops() -> None:
    validity = json.loads((DATA / "apk-validity.json").read_text())["cases"]
    assert [c for c in validity if apk.valid(c["version"]) != c["valid"]] == []


def test_go_canonical() -> None:
    tests = json.loads((DATA / "gosemver-canonical.json").read_text())["tests"]
    assert [t for t in tests if semver.go_canonical(t["in"]) != t["canonical"]] == []


def test_pep440_order_and_invalid() -> None:
    ordered = json.loads((DATA / "pep440-ordered.json").read_text())["versions"]
    for i, a in enumerate(ordered):
        for j, b in enumerate(ordered):
            assert versions.pep440_compare(a, b) == (i > j) - (i < j), (a, b)
    invalid = json.loads((DATA / "pep440-invalid-and-normalized.json").read_text())["invalid"]
    for v in invalid:  # below every valid version, never an exception
        assert versions.pep440_compare(v, "0.0.dev0") == -1


def test_go_toolchain_and_module_spellings() -> None:
    cmp = versions.comparator("Go")
    assert cmp is not None
    assert cmp("go1.22.1", "1.22.2") == -1
    assert cmp("go1.21rc2", "1.21.0") == -1
    assert cmp("v1.2.3+incompatible", "1.2.3") == 0
    assert cmp("v0.0.0-20210101000000-abcdef123456", "0.0.1") == -1
    assert cmp("v2.0.0+incompatible", "1.9.9") == 1


def test_dispatch() -> None:
    assert versions.comparator("Debian:12") is dpkg.compare
    assert versions.comparator("Alpine:v3.20") is apk.compare
    assert versions.comparator("Red Hat:enterprise_linux:9::appstream") is rpm.compare
    assert versions.comparator("Rocky Linux:9") is rpm.compare
    assert versions.comparator("Maven") is maven.compare
    assert versions.comparator("OSS-Fuzz") is None


def test_dpkg_sort_key_agrees_with_compare() -> None:
    """Matching sorts by dpkg.key (cached); it must order exactly as dpkg.compare does: on the
    vectors and on random strings over dpkg's interesting characters."""
    import random

    for name in ("dpkg.json", "osv-scalibr-debian.json"):
        for c in _cases(name):
            ka, kb = dpkg.key(c["a"]), dpkg.key(c["b"])
            assert (ka > kb) - (ka < kb) == c["expected"], c
    rng = random.Random(7)
    alphabet = "0123456789.~+-:ab"
    for _ in range(20000):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        ka, kb = dpkg.key(a), dpkg.key(b)
        assert (ka > kb) - (ka < kb) == dpkg.compare(a, b), (a, b)
