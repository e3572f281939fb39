"""Version order per OSV ecosystem: ``comparator("Debian:12")`` is dpkg's order, and so on.

Own implementations where no well-kept, non-GPL library is correct (dpkg, apk-tools, rpm, Go
semver, Maven, RubyGems; each module cites the vectors it is tested on); PEP 440 is the
``packaging`` library's. An ecosystem without a known order gets None: its advisories match by
their explicit ``versions`` lists only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cmp_to_key, lru_cache
from typing import Any

from packaging.version import InvalidVersion, Version

from . import apk, dpkg, gems, maven, rpm, semver

Compare = Callable[[str, str], int]


@lru_cache(maxsize=65536)
def _pep440(v: str) -> Version | None:
    try:
        return Version(v)
    except InvalidVersion:
        return None


def pep440_compare(a: str, b: str) -> int:
    """PEP 440 (``packaging``); an invalid version sorts below every valid one."""
    va, vb = _pep440(a), _pep440(b)
    if va is None or vb is None:
        if va is None and vb is None:
            return (a > b) - (a < b)
        return -1 if va is None else 1
    return (va > vb) - (va < vb)


def go_compare(a: str, b: str) -> int:
    """Go modules and the toolchain (``stdlib``): OSV writes ``1.2.3``, build info ``v1.2.3`` or
    ``go1.22.1``."""
    return semver.go_compare(semver.go_version(a), semver.go_version(b))


_BY_BASE: dict[str, Compare] = {
    "Debian": dpkg.compare,
    "Ubuntu": dpkg.compare,
    "Alpine": apk.compare,
    "Wolfi": apk.compare,
    "Chainguard": apk.compare,
    "Red Hat": rpm.compare,
    "Rocky Linux": rpm.compare,
    "AlmaLinux": rpm.compare,
    "openSUSE": rpm.compare,
    "SUSE": rpm.compare,
    "Mageia": rpm.compare,
    "PyPI": pep440_compare,
    "npm": semver.compare,
    "crates.io": semver.compare,
    "Go": go_compare,
    "Maven": maven.compare,
    "RubyGems": gems.compare,
}


def base_ecosystem(ecosystem: str) -> str:
    """``Debian:12`` → ``Debian``; ``Red Hat:enterprise_linux:9::appstream`` → ``Red Hat``."""
    return ecosystem.split(":", 1)[0].strip()


def comparator(ecosystem: str) -> Compare | None:
    """The ``ECOSYSTEM`` range order of an OSV ecosystem string, or None if unknown."""
    return _BY_BASE.get(base_ecosystem(ecosystem))


def semver_comparator(ecosystem: str) -> Compare:
    """The order of ``SEMVER`` ranges (Go's own flavour for Go, where versions omit the ``v``)."""
    return go_compare if base_ecosystem(ecosystem) == "Go" else semver.compare


Key = Callable[[str], Any]


@lru_cache(maxsize=64)
def _key_of(compare: Compare) -> Key:
    return cmp_to_key(compare)


@lru_cache(maxsize=1024)
def key_function(ecosystem: str) -> Key | None:
    """A sort key of the ecosystem's order (dpkg's is a real key, cached; the others wrap their
    comparison), or None if the order is unknown."""
    base = base_ecosystem(ecosystem)
    if base in ("Debian", "Ubuntu"):
        return dpkg.key
    cmp = _BY_BASE.get(base)
    return None if cmp is None else _key_of(cmp)


@lru_cache(maxsize=1024)
def semver_key_function(ecosystem: str) -> Key:
    return _key_of(semver_comparator(ecosystem))
