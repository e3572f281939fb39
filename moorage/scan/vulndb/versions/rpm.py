"""RPM version order: rpmvercmp on version and release, after the epoch.

Written from rpm's documented behaviour (rpm's code is GPL/LGPL): skip separators; ``~`` sorts
before everything (even the end), ``^`` after the end but before anything else; compare runs of
digits numerically (a digit run beats a letter run) and runs of letters as strings; whichever
string has characters left wins. Tested on rpm's own vectors (tests/data/vulndb/versions/rpm.json)
and osv-scalibr's Red Hat fixtures.
"""

from __future__ import annotations


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def vercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while i < la and not _alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < lb and not _alnum(b[j]) and b[j] not in "~^":
            j += 1
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        si, sj = i, j
        if ca.isdigit():
            while i < la and a[i].isascii() and a[i].isdigit():
                i += 1
            while j < lb and b[j].isascii() and b[j].isdigit():
                j += 1
            isnum = True
        else:
            while i < la and a[i].isascii() and a[i].isalpha():
                i += 1
            while j < lb and b[j].isascii() and b[j].isalpha():
                j += 1
            isnum = False
        x, y = a[si:i], b[sj:j]
        if not y:
            return 1 if isnum else -1
        if isnum:
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return -1 if len(x) < len(y) else 1
        if x != y:
            return -1 if x < y else 1
    ra, rb = i < la, j < lb
    if not ra and not rb:
        return 0
    return 1 if ra else -1


def _evr(v: str) -> tuple[int, str, str | None]:
    epoch = 0
    if ":" in v:
        head, rest = v.split(":", 1)
        if head.isdigit():
            epoch, v = int(head), rest
    if "-" in v:
        version, release = v.rsplit("-", 1)
        return epoch, version, release
    return epoch, v, None


def compare(a: str, b: str) -> int:
    """Full ``[epoch:]version[-release]`` order; with equal versions, one without a release
    sorts before one with any release (as osv-scalibr's Red Hat fixtures expect)."""
    ea, va, ra = _evr(a)
    eb, vb, rb = _evr(b)
    if ea != eb:
        return -1 if ea < eb else 1
    c = vercmp(va, vb)
    if c:
        return c
    if ra is None or rb is None:
        return 0 if ra is rb else (-1 if ra is None else 1)
    return vercmp(ra, rb)
