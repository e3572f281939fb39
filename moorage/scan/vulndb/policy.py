"""Vulnerability policies: which images a pull may not fetch.

Per organization (namespace) or repository — a repository's own policy replaces its
organization's. ``block_severity``: findings at or above it block (``none``: findings never
do); ``fixable_only``: only findings with a fixed version count; ``block_unscanned``: an image
without a finished scan is blocked too (a scan that found the artifact unsupported — not an
image — is not "unscanned"). The allow-list names advisories by id, alias or upstream id
(allowing ``CVE-2025-26519`` also allows ``ALPINE-CVE-2025-26519``, whose ``upstream`` it is),
each with an optional expiry date (allowed through that day, UTC) and a reason.

``decide`` is pure: the rule (rule.py) feeds it the scan's state and findings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from ...services.errors import Invalid
from ..findings import RANK, Finding, sort_key

BLOCK_LEVELS = ("critical", "high", "medium", "low", "none")
_ADVISORY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{1,127}$")


@dataclass(frozen=True, slots=True)
class AllowEntry:
    id: str
    expires: date | None = None
    reason: str = ""

    def active(self, today: date) -> bool:
        return self.expires is None or today <= self.expires

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "expires": self.expires.isoformat() if self.expires else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class VulnerabilityPolicy:
    scope: str  # namespace | repository
    target: str
    block_severity: str = "none"
    fixable_only: bool = False
    block_unscanned: bool = False
    allow: tuple[AllowEntry, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "target": self.target,
            "block_severity": self.block_severity,
            "fixable_only": self.fixable_only,
            "block_unscanned": self.block_unscanned,
            "allow": [a.as_dict() for a in self.allow],
        }


def check_level(level: str) -> str:
    if level not in BLOCK_LEVELS:
        raise Invalid("block_severity", f"block_severity is one of {', '.join(BLOCK_LEVELS)}")
    return level


def parse_allow(text: str, reason: str = "") -> AllowEntry:
    """``CVE-ID`` or ``CVE-ID:YYYY-MM-DD`` (the command line's ``--allow``)."""
    text = text.strip()
    ident, expires = text, None
    m = re.match(r"^(.*):(\d{4}-\d{2}-\d{2})$", text)
    if m:
        ident = m[1]
        try:
            expires = date.fromisoformat(m[2])
        except ValueError:
            raise Invalid("allow", f"{m[2]!r} is not a date (YYYY-MM-DD)") from None
    if not _ADVISORY_ID.match(ident):
        raise Invalid("allow", f"{ident[:60]!r} is not an advisory id")
    return AllowEntry(ident, expires, reason[:500])


def allow_from_json(text: str) -> tuple[AllowEntry, ...]:
    out = []
    for d in json.loads(text or "[]"):
        exp = d.get("expires")
        out.append(
            AllowEntry(d["id"], date.fromisoformat(exp) if exp else None, d.get("reason", ""))
        )
    return tuple(out)


def allow_to_json(entries: tuple[AllowEntry, ...]) -> str:
    return json.dumps([a.as_dict() for a in entries])


def allowed(f: Finding, allow: tuple[AllowEntry, ...], today: date) -> AllowEntry | None:
    names = f.names()
    for a in allow:
        if a.id in names and a.active(today):
            return a
    return None


def blocking(policy: VulnerabilityPolicy, findings: list[Finding], today: date) -> list[Finding]:
    """The findings that make *policy* block, worst first."""
    if policy.block_severity == "none":
        return []
    limit = RANK[policy.block_severity]
    out = [
        f
        for f in findings
        if RANK.get(f.severity, len(RANK)) <= limit
        and (f.fixable or not policy.fixable_only)
        and allowed(f, policy.allow, today) is None
    ]
    return sorted(out, key=sort_key)


def _describe(f: Finding) -> str:
    fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix"
    return f"{f.id} ({f.severity}, {f.package} {f.version}, {fix})"


def decide(
    policy: VulnerabilityPolicy,
    status: str | None,
    findings: list[Finding],
    today: date,
) -> str | None:
    """The refusal message, or None when *policy* lets the image through. *status* is the scan's
    (pending, running, done, failed, unsupported; None: never scanned)."""
    where = f"the vulnerability policy of {policy.target}"
    if status != "done":
        if policy.block_unscanned and status != "unsupported":
            state = (
                "not scanned yet" if status in (None, "pending", "running") else f"scan {status}"
            )
            return f"{where} blocks images without a finished scan ({state}); retry after the scan"
        return None
    hits = blocking(policy, findings, today)
    if not hits:
        return None
    what = f"at or above {policy.block_severity}" + (" with a fix" if policy.fixable_only else "")
    worst = ", ".join(_describe(f) for f in hits[:3])
    more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
    return f"{where} blocks this image: {len(hits)} finding(s) {what}: {worst}{more}"
