"""Semantic Versioning 2.0 order (npm, crates.io, OSV ``SEMVER`` ranges) and Go's variant.

``compare`` is lenient, as OSV's SEMVER ranges need: a leading ``v`` and missing minor or patch
numbers are accepted (``1.2`` = ``1.2.0``), build metadata (``+incompatible``, ``+build``) is
ignored; a pre-release sorts before its release, its dot-separated identifiers compare numbers
numerically and below text. ``go_compare`` follows golang.org/x/mod/semver: a ``v`` is
required, ``v1``/``v1.2`` are shorthands, leading zeros are invalid, and invalid versions sort
lowest and equal to each other. Pseudo-versions (``v0.0.0-20210101000000-abcdef123456``) are
ordinary pre-releases. Tested on golang/mod's and osv-scalibr's vectors.
"""

from __future__ import annotations

import re

_LENIENT = re.compile(
    r"^\s*[vV=]?\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.\d+)*"
    r"(?:-?([0-9A-Za-z.\-]+?))?(?:\+([0-9A-Za-z.\-]*))?\s*$"
)
_GO = re.compile(
    r"^v(0|[1-9]\d*)(?:\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?)?"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

Key = tuple[int, int, int, tuple[tuple[int, int, str], ...] | None]


def _pre(pre: str | None) -> tuple[tuple[int, int, str], ...] | None:
    if not pre:
        return None
    out = []
    for ident in pre.split("."):
        if ident.isdigit():
            out.append((0, int(ident), ""))
        else:
            out.append((1, 0, ident))
    return tuple(out)


def _cmp_pre(
    a: tuple[tuple[int, int, str], ...] | None, b: tuple[tuple[int, int, str], ...] | None
) -> int:
    if a == b:
        return 0
    if a is None:
        return 1
    if b is None:
        return -1
    return (a > b) - (a < b)  # tuples: numeric (0, n) before text (1, s); shorter prefix first


def parse(v: str) -> Key | None:
    m = _LENIENT.match(v)
    if not m:
        return None
    return (int(m[1]), int(m[2] or 0), int(m[3] or 0), _pre(m[4]))


def _cmp_keys(ka: Key, kb: Key) -> int:
    if ka[:3] != kb[:3]:
        return -1 if ka[:3] < kb[:3] else 1
    return _cmp_pre(ka[3], kb[3])


def compare(a: str, b: str) -> int:
    ka, kb = parse(a), parse(b)
    if ka is None or kb is None:
        if ka is None and kb is None:
            return (a > b) - (a < b)
        return -1 if ka is None else 1
    return _cmp_keys(ka, kb)


def go_parse(v: str) -> Key | None:
    m = _GO.match(v)
    if not m:
        return None
    if m[3] is None and ("-" in v or "+" in v):  # a shorthand ("v1", "v1.2") takes no suffix
        return None
    return (int(m[1]), int(m[2] or 0), int(m[3] or 0), _pre(m[4]))


def go_compare(a: str, b: str) -> int:
    ka, kb = go_parse(a), go_parse(b)
    if ka is None or kb is None:
        return 0 if ka is kb else (-1 if ka is None else 1)
    return _cmp_keys(ka, kb)


def go_canonical(v: str) -> str:
    """golang.org/x/mod/semver.Canonical: ``v1.2`` → ``v1.2.0``, build metadata dropped; ``""``
    when invalid."""
    k = go_parse(v)
    if k is None:
        return ""
    pre = v.split("+", 1)[0].partition("-")[2]
    return f"v{k[0]}.{k[1]}.{k[2]}" + (f"-{pre}" if pre else "")


def go_version(v: str) -> str:
    """A Go module or toolchain version as OSV's Go ranges spell it for comparison: ``v``-
    prefixed (OSV writes ``1.2.3``; the toolchain ``go1.22.1``, ``go1.21rc2``)."""
    v = v.strip()
    if v.startswith("go"):
        v = v[2:]
        m = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(rc|beta)(\d+))?$", v)
        if m:
            core = f"{m[1]}.{m[2] or 0}.{m[3] or 0}"
            return "v" + core + (f"-{m[4]}.{m[5]}" if m[4] else "")
    return v if v.startswith("v") else "v" + v
