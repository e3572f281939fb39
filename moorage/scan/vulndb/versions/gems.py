"""RubyGems version order (Gem::Version): segments of digits and letters; a letter segment
marks a pre-release and sorts below numbers; trailing zeros of each group are ignored. Tested
on osv-scalibr's RubyGems fixtures."""

from __future__ import annotations

import re

_SEG = re.compile(r"[0-9]+|[a-z]+", re.IGNORECASE)


def _canonical(v: str) -> list[int | str]:
    segs: list[int | str] = [
        int(s) if s.isdigit() else s for s in _SEG.findall(v.replace("-", ".pre."))
    ]
    groups: list[list[int | str]] = []
    for s in segs:
        if isinstance(s, str) or not groups:
            groups.append([s])
        else:
            groups[-1].append(s)
    out: list[int | str] = []
    for g in groups:
        while g and g[-1] == 0:
            g.pop()
        out.extend(g)
    return out


def compare(a: str, b: str) -> int:
    la, lb = _canonical(a), _canonical(b)
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else 0
        y = lb[i] if i < len(lb) else 0
        if x == y:
            continue
        if isinstance(x, str) and isinstance(y, int):
            return -1
        if isinstance(x, int) and isinstance(y, str):
            return 1
        return -1 if x < y else 1  # type: ignore[operator]
    return 0
