"""Debian package version order (Debian Policy 5.6.12): ``[epoch:]upstream[-revision]``.

Written from the policy's description (dpkg's own code is GPL): within upstream and revision,
alternate non-digit and digit runs; non-digits compare character by character with ``~``
before everything (even the end), then the end, then letters, then other characters; digit runs
compare as numbers. Tested on dpkg's own vectors (tests/data/vulndb/versions/dpkg.json).
"""

from __future__ import annotations

from functools import lru_cache


def _split(v: str) -> tuple[int, str, str]:
    v = v.strip()
    epoch = 0
    if ":" in v:
        head, rest = v.split(":", 1)
        if head.isdigit():
            epoch, v = int(head), rest
    upstream, _, revision = v.rpartition("-")
    if not upstream:
        upstream, revision = revision, ""
    return epoch, upstream, revision


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        # the non-digit run
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return -1 if ca < cb else 1
            if i < len(a) and not a[i].isdigit():
                i += 1
            if j < len(b) and not b[j].isdigit():
                j += 1
        # the digit run
        na = nb = 0
        while i < len(a) and a[i].isdigit():
            na = na * 10 + ord(a[i]) - 48
            i += 1
        while j < len(b) and b[j].isdigit():
            nb = nb * 10 + ord(b[j]) - 48
            j += 1
        if na != nb:
            return -1 if na < nb else 1
    return 0


def compare(a: str, b: str) -> int:
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _part(ua, ub) or _part(ra, rb)


_END = ((0,), 0)


def _part_key(s: str) -> tuple[tuple[tuple[int, ...], int], ...]:
    """A part as alternating (non-digit run, number) pairs, ordered as ``_part`` orders: each
    non-digit run is its characters' orders closed by 0 (the end sorts after ``~`` and before
    anything else), then one end pair (what a shorter part is compared as where it ends)."""
    pairs: list[tuple[tuple[int, ...], int]] = []
    i, n = 0, len(s)
    while i < n:
        j = i
        while j < n and not s[j].isdigit():
            j += 1
        run = tuple(_order(c) for c in s[i:j]) + (0,)
        k = j
        while k < n and s[k].isdigit():
            k += 1
        pairs.append((run, int(s[j:k]) if k > j else 0))
        i = k
    # the first pair always exists ("" and "0" are alike); later runs are never empty, so only
    # the first pair can look like the end
    if not pairs:
        pairs.append(_END)
    pairs.append(_END)
    return tuple(pairs)


@lru_cache(maxsize=65536)
def key(
    v: str,
) -> tuple[int, tuple[tuple[tuple[int, ...], int], ...], tuple[tuple[tuple[int, ...], int], ...]]:
    """A sort key with the order of :func:`compare` (cached: matching compares one installed
    version with many fixed versions, and the same fixed versions recur)."""
    epoch, upstream, revision = _split(v)
    return epoch, _part_key(upstream), _part_key(revision)
