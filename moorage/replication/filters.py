"""What a policy selects (pure functions, no I/O): repository and tag patterns, the exclude
pattern, the destination's repository name, cron expressions, attached-artifact tags.

Patterns are globs, as in Harbor's filters: ``*`` matches within one path segment, ``**`` across
segments, ``?`` one character, ``{a,b}`` either alternative; a top-level comma also separates
alternatives (``v1.*,latest``). The exclude pattern drops repositories when it contains ``/``
(``acme/old-*``) and tags otherwise (``*-rc*``): tags never contain ``/``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache

from cronsim import CronSim, CronSimError

MAX_PATTERN = 512
_ATTACHED = re.compile(r"^sha256-[0-9a-f]{64}(\.(sig|att|sbom))?$")


class PatternError(ValueError):
    """A pattern or cron expression that cannot be used; the message says why."""


def _split_top(pattern: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in pattern:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PatternError(f"pattern {pattern!r} has an unmatched '}}'")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise PatternError(f"pattern {pattern!r} has an unmatched '{{'")
    out.append(cur)
    return [p.strip() for p in out]


def _translate(glob: str) -> str:
    out, i = "", 0
    while i < len(glob):
        ch = glob[i]
        if glob.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "{":
            depth, j = 1, i + 1
            while j < len(glob) and depth:
                depth += {"{": 1, "}": -1}.get(glob[j], 0)
                j += 1
            inner = glob[i + 1 : j - 1]
            out += "(?:" + "|".join(_translate(a) for a in _split_top(inner)) + ")"
            i = j
            continue
        else:
            out += re.escape(ch)
        i += 1
    return out


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A glob pattern (see the module) as a full-match regular expression."""
    if not pattern or len(pattern) > MAX_PATTERN:
        raise PatternError(f"a pattern is 1 to {MAX_PATTERN} characters")
    if any(ord(c) < 32 for c in pattern):
        raise PatternError("a pattern has no control characters")
    alternatives = [a for a in _split_top(pattern) if a]
    if not alternatives:
        raise PatternError(f"pattern {pattern!r} matches nothing")
    return re.compile("^(?:" + "|".join(_translate(a) for a in alternatives) + ")$")


def matches(pattern: str | None, name: str) -> bool:
    """*name* matches *pattern*; no pattern matches everything."""
    return pattern is None or compile_pattern(pattern).match(name) is not None


def is_literal(pattern: str) -> bool:
    """A pattern naming exactly one thing (no wildcard or alternative)."""
    return not any(c in pattern for c in "*?{},")


def excluded_repository(exclude: str | None, repo: str) -> bool:
    return exclude is not None and "/" in exclude and matches(exclude, repo)


def excluded_tag(exclude: str | None, tag: str) -> bool:
    return exclude is not None and "/" not in exclude and matches(exclude, tag)


def attached_tag(tag: str) -> bool:
    """``sha256-<hex>`` (a referrers tag) or cosign's ``sha256-<hex>.sig|.att|.sbom``: such
    tags travel with their subject, not as tags of their own."""
    return _ATTACHED.match(tag) is not None


def attached_subject(tag: str) -> str | None:
    """The subject digest of an attached tag, or None."""
    if not attached_tag(tag):
        return None
    return "sha256:" + tag[len("sha256-") : len("sha256-") + 64]


def destination(repo: str, dest_namespace: str | None) -> str:
    """The destination repository: *repo* with its first path segment (its namespace)
    replaced by *dest_namespace*; a one-segment name gets it prepended."""
    if not dest_namespace:
        return repo
    ns = dest_namespace.strip("/")
    head, sep, rest = repo.partition("/")
    return f"{ns}/{rest}" if sep else f"{ns}/{head}"


def check_cron(expression: str) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week, UTC), checked."""
    expr = " ".join(expression.split())
    if len(expr) > 128 or len(expr.split(" ")) != 5:
        raise PatternError("a cron expression has 5 fields: minute hour day month weekday")
    try:
        CronSim(expr, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise PatternError(f"cron expression {expr!r}: {exc}") from None
    return expr


def cron_due(expression: str, last: datetime, now: datetime) -> datetime | None:
    """The latest time in (*last*, *now*] the expression fires at, or None: a policy whose
    node was down for several periods runs once, not once per missed period."""
    fired = None
    # Only the latest firing matters: do not walk a year of minutes after a long stop.
    last = max(last, now - timedelta(days=2))
    for at in CronSim(expression, last):
        if at > now:
            break
        fired = at
    return fired
