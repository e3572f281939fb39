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

from typing import Any

from .versions import Key, key_function, semver_key_function


def in_range(version: str, events: list[list[str]], key: Key) -> tuple[bool, str | None]:
    """(affected, fixed version) for one range's events, in the order *key* gives."""
    kv = key(version)
    zero: list[tuple[str, str, Any]] = []
    rest: list[tuple[str, str, Any]] = []
    limits = []
    for kind, value in events:
        if kind == "limit":
            if value != "*":
                limits.append(key(value))
        elif kind == "introduced" and value == "0":
            zero.append((kind, value, None))
        else:
            rest.append((kind, value, key(value)))
    rest.sort(key=lambda e: e[2])
    affected = False
    for kind, _value, k in zero + rest:
        if kind == "introduced":
            if k is None or kv >= k:
                affected = True
        elif kind == "fixed":
            if kv >= k:
                affected = False
        elif kind == "last_affected":
            if kv > k:
                affected = False
    if not affected:
        return False, None
    if limits and all(kv >= lk for lk in limits):
        return False, None
    for kind, value, k in rest:
        if kind == "fixed" and kv < k:
            return True, value
    return True, None


def evaluate(version: str, data: dict[str, Any]) -> tuple[bool, str | None]:
    """(affected, fixed version) for an index row's data (osv.AffectedRow.data)."""
    eco: str = data.get("e", "")
    hit = False
    fixed: str | None = None
    for rng in data.get("r") or ():
        kind = rng.get("t")
        key: Key | None
        if kind == "ECOSYSTEM":
            key = key_function(eco)
        elif kind == "SEMVER":
            key = semver_key_function(eco)
        else:
            continue  # GIT: commits; see the module's note
        if key is None:
            continue
        try:
            ok, fix = in_range(version, rng.get("e") or [], key)
        except (ValueError, TypeError, IndexError):
            continue  # a malformed version in the record: this range says nothing
        if ok:
            if not hit or (fix is not None and fixed is None):
                fixed = fix
            hit = True
    if not hit and version in (data.get("v") or ()):
        hit = True
        fixed = None
        key = key_function(eco)
        if key is not None:  # an explicit list with ECOSYSTEM ranges: the range's fix applies
            try:
                kv = key(version)
                fixes = [
                    (key(value), value)
                    for rng in data.get("r") or ()
                    if rng.get("t") != "GIT"
                    for kind, value in rng.get("e") or ()
                    if kind == "fixed"
                ]
                above = [f for f in fixes if kv < f[0]]
                if above:
                    fixed = min(above, key=lambda f: f[0])[1]
            except (ValueError, TypeError):
                pass
    return hit, fixed
