"""Whether one installed version is inside an affected entry (OSV ranges and versions), and
the version that fixes it. Pure functions: the matcher feeds them index rows.

OSV's evaluation (https://ossf.github.io/osv-schema/#evaluation): the events of a range,
sorted by version (``introduced: 0`` first), are walked in order; ``introduced`` at or below
the version turns "affected" on, ``fixed`` at or below turns it off, ``last_affected`` below
it turns it off; ``limit`` caps the range (at or above every limit: not affected). A version
in the explicit ``versions`` list is affected. ``GIT`` ranges name commits, which an image's
package does not carry: osv.dev enumerates their tags into ``versions``, which is what
matches them here.
"""

from __future__ import annotations

from functools import cmp_to_key
from typing import Any

from .versions import Compare, comparator, semver_comparator


def _sorted_events(events: list[list[str]], cmp: Compare) -> list[list[str]]:
    def order(x: list[str], y: list[str]) -> int:
        zx, zy = x[0] == "introduced" and x[1] == "0", y[0] == "introduced" and y[1] == "0"
        if zx or zy:
            return 0 if zx and zy else (-1 if zx else 1)
        return cmp(x[1], y[1])

    return sorted(events, key=cmp_to_key(order))


def in_range(version: str, events: list[list[str]], cmp: Compare) -> tuple[bool, str | None]:
    """(affected, fixed version) for one range's events."""
    affected = False
    ordered = _sorted_events([e for e in events if e[0] != "limit"], cmp)
    for kind, value in ordered:
        if kind == "introduced":
            if value == "0" or cmp(version, value) >= 0:
                affected = True
        elif kind == "fixed":
            if cmp(version, value) >= 0:
                affected = False
        elif kind == "last_affected":
            if cmp(version, value) > 0:
                affected = False
    if not affected:
        return False, None
    limits = [v for k, v in events if k == "limit" and v != "*"]
    if limits and all(cmp(version, v) >= 0 for v in limits):
        return False, None
    fixed = None
    for kind, value in ordered:
        if kind == "fixed" and cmp(version, value) < 0:
            fixed = value
            break
    return True, fixed


def evaluate(version: str, data: dict[str, Any]) -> tuple[bool, str | None]:
    """(affected, fixed version) for an index row's data (osv.AffectedRow.data)."""
    eco: str = data.get("e", "")
    hit = False
    fixed: str | None = None
    for rng in data.get("r") or ():
        kind = rng.get("t")
        if kind == "ECOSYSTEM":
            cmp = comparator(eco)
        elif kind == "SEMVER":
            cmp = semver_comparator(eco)
        else:
            continue  # GIT: commits; see the module's note
        if cmp is None:
            continue
        try:
            ok, fix = in_range(version, rng.get("e") or [], cmp)
        except (ValueError, TypeError, IndexError):
            continue  # a malformed version in the record: this range says nothing
        if ok:
            if not hit or (fix is not None and fixed is None):
                fixed = fix
            hit = True
    if not hit and version in (data.get("v") or ()):
        hit = True
        fixed = None
        cmp = comparator(eco)
        if cmp is not None:  # an explicit list with ECOSYSTEM ranges: the range's fix applies
            for rng in data.get("r") or ():
                for kind, value in rng.get("e") or ():
                    if kind == "fixed" and rng.get("t") != "GIT":
                        try:
                            if cmp(version, value) < 0 and (fixed is None or cmp(value, fixed) < 0):
                                fixed = value
                        except (ValueError, TypeError):
                            pass
    return hit, fixed
