"""OSV records (https://ossf.github.io/osv-schema/) reduced to what matching needs.

An imported record becomes one row of facts shown in findings (id, aliases, upstream, summary,
links, severity) and one index row per affected package: (ecosystem key, normalized name) →
its ranges and explicit versions, compactly. Severity is computed here, once, at import.

Ecosystem keys: the OSV ecosystem string, except where a distribution spells one release
several ways: ``Ubuntu:22.04:LTS`` → ``Ubuntu:22.04`` (``Ubuntu:Pro:...`` stays apart: ESM
fixes reach only Ubuntu Pro subscribers), ``Red Hat:enterprise_linux:9::appstream`` →
``Red Hat:9``. Names: PEP 503 for PyPI, lower case for npm and the distributions' package
names, as written for the rest (Go module paths and Maven coordinates are case-sensitive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..findings import SEVERITIES

MAX_LINKS = 8
MAX_SUMMARY = 500


class RecordError(ValueError):
    """A record that is not OSV (or not usable): skipped and counted by the importer."""


def normalize_name(ecosystem: str, name: str) -> str:
    base = ecosystem.split(":", 1)[0]
    name = name.strip()
    if base == "PyPI":
        return re.sub(r"[-_.]+", "-", name).lower()
    if base in ("npm", "Debian", "Ubuntu", "Alpine", "Wolfi", "Chainguard"):
        return name.lower()
    return name


def ecosystem_key(ecosystem: str) -> str:
    e = ecosystem.strip()
    parts = e.split(":")
    if parts[0] == "Ubuntu" and len(parts) >= 2 and parts[1] != "Pro":
        return f"Ubuntu:{parts[1]}"
    if parts[0] == "Red Hat" and len(parts) >= 3 and parts[1] == "enterprise_linux":
        m = re.match(r"(\d+)", parts[2])
        if m:
            return f"Red Hat:{m[1]}"
    return e


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python's fromisoformat takes at most 6 fractional digits; OSV writes up to 9
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# --- severity ---------------------------------------------------------------------------------

_RATINGS = {
    "critical": "critical",
    "high": "high",
    "important": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "negligible": "low",
    "unimportant": "low",
}


def rating(text: Any) -> str | None:
    """An ecosystem's own rating (GHSA ``MODERATE``, Red Hat ``Important``, Debian urgency
    ``low``, Ubuntu ``negligible``) as one of SEVERITIES; None when it says nothing."""
    if not isinstance(text, str):
        return None
    t = text.strip().lower().rstrip("*")  # Debian urgencies may carry a "*" or " (...)"
    t = t.split(" ", 1)[0]
    return _RATINGS.get(t)


def cvss_score(vector: str) -> tuple[float, str] | None:
    """(base score, rating) of a CVSS v4.0 or v3.x vector; None when it does not parse."""
    from cvss import CVSS3, CVSS4  # LGPL-3.0+, imported as a library

    try:
        if vector.startswith("CVSS:4.0/"):
            c4 = CVSS4(vector)
            score = float(c4.base_score)
        elif vector.startswith("CVSS:3."):
            c3 = CVSS3(vector)
            score = float(c3.base_score)
        else:
            return None
    except Exception:  # the library raises its own error types for malformed vectors
        return None
    return score, score_rating(score)


def score_rating(score: float) -> str:
    """CVSS v3.x/v4.0 qualitative rating; "none" (0.0) counts as low here."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


@dataclass(frozen=True, slots=True)
class Severity:
    level: str = "unknown"
    score: float | None = None
    vector: str = ""


def severity_of(entries: Any, *ratings: Any) -> Severity:
    """From an OSV ``severity`` list (CVSS v4.0 preferred, then v3.x; the base score computed
    from the vector), else the first ecosystem rating given."""
    best: tuple[int, float, str, str] | None = None
    fallback: str | None = None
    if isinstance(entries, list):
        for e in entries:
            if not isinstance(e, dict):
                continue
            kind, score = e.get("type"), e.get("score")
            if not isinstance(score, str):
                continue
            if kind in ("CVSS_V4", "CVSS_V3"):
                got = cvss_score(score)
                if got is not None:
                    pref = 2 if kind == "CVSS_V4" else 1
                    if best is None or pref > best[0]:
                        best = (pref, got[0], got[1], score)
            elif fallback is None:
                fallback = rating(score)  # e.g. type "Ubuntu", score "medium"
    if best is not None:
        return Severity(best[2], best[1], best[3])
    for r in (fallback, *ratings):
        level = r if r in SEVERITIES else rating(r)
        if level is not None:
            return Severity(level)
    return Severity()


# --- records ----------------------------------------------------------------------------------


@dataclass
class AffectedRow:
    ecosystem: str  # the key (ecosystem_key)
    name: str  # normalized
    data: dict[
        str, Any
    ]  # {"e": OSV ecosystem, "n": name as written, "r": ranges, "v": versions, "s": severity}


@dataclass
class Record:
    osv_id: str
    modified: datetime
    published: datetime | None
    withdrawn: datetime | None
    summary: str
    aliases: list[str]
    upstream: list[str]
    links: list[str]
    severity: Severity
    affected: list[AffectedRow] = field(default_factory=list)


def _strs(value: Any, limit: int = 200) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and v][:limit]


def _events(rng: dict[str, Any]) -> list[list[str]]:
    out: list[list[str]] = []
    for ev in rng.get("events") or []:
        if not isinstance(ev, dict):
            continue
        for kind in ("introduced", "fixed", "last_affected", "limit"):
            v = ev.get(kind)
            if isinstance(v, str) and v:
                out.append([kind, v])
                break
    return out


def parse_record(doc: Any) -> Record:
    """An OSV JSON document → Record; RecordError when it is not one."""
    if not isinstance(doc, dict):
        raise RecordError("not a JSON object")
    osv_id = doc.get("id")
    if not isinstance(osv_id, str) or not osv_id or len(osv_id) > 128:
        raise RecordError("no id")
    modified = parse_time(doc.get("modified"))
    if modified is None:
        raise RecordError(f"{osv_id}: no valid 'modified'")
    summary = doc.get("summary") or doc.get("details") or ""
    summary = (
        summary.strip().splitlines()[0][:MAX_SUMMARY]
        if isinstance(summary, str) and summary.strip()
        else ""
    )
    links = [
        r["url"]
        for r in doc.get("references") or []
        if isinstance(r, dict) and isinstance(r.get("url"), str)
    ][:MAX_LINKS]
    db_specific = doc.get("database_specific")
    record_rating = db_specific.get("severity") if isinstance(db_specific, dict) else None
    rec = Record(
        osv_id=osv_id,
        modified=modified,
        published=parse_time(doc.get("published")),
        withdrawn=parse_time(doc.get("withdrawn")),
        summary=summary,
        aliases=_strs(doc.get("aliases")),
        upstream=_strs(doc.get("upstream")),
        links=links,
        severity=severity_of(doc.get("severity"), record_rating),
    )
    for aff in doc.get("affected") or []:
        if not isinstance(aff, dict):
            continue
        pkg = aff.get("package")
        if not isinstance(pkg, dict):
            continue
        eco, name = pkg.get("ecosystem"), pkg.get("name")
        if not (isinstance(eco, str) and isinstance(name, str) and eco and name):
            continue
        if len(eco) > 128 or len(name) > 255:
            continue
        ranges = []
        for rng in aff.get("ranges") or []:
            if isinstance(rng, dict) and rng.get("type") in ("ECOSYSTEM", "SEMVER", "GIT"):
                events = _events(rng)
                if events:
                    ranges.append({"t": rng["type"], "e": events})
        data: dict[str, Any] = {
            "e": eco,
            "n": name,
            "r": ranges,
            "v": _strs(aff.get("versions"), 100_000),
        }
        eco_specific = aff.get("ecosystem_specific")
        aff_db = aff.get("database_specific")
        own = severity_of(
            aff.get("severity"),
            eco_specific.get("severity") if isinstance(eco_specific, dict) else None,
            eco_specific.get("urgency") if isinstance(eco_specific, dict) else None,
            aff_db.get("severity") if isinstance(aff_db, dict) else None,
        )
        if own.level != "unknown":
            data["s"] = [own.level, own.score, own.vector]
        if not ranges and not data["v"]:
            continue
        rec.affected.append(AffectedRow(ecosystem_key(eco), normalize_name(eco, name), data))
    return rec
