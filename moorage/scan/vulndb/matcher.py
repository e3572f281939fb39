"""The matcher (``rt.services["scan.matcher"]``): an image's inventory → findings, from the
imported OSV data alone (nothing at scan time needs the internet).

Each package is looked up by (ecosystem key, normalized name) in the match index: OS packages
in the image's OS ecosystem (``Debian:12``, ``Alpine:v3.20``, ``Ubuntu:22.04``, ``Red Hat:9``,
``Rocky Linux:9``, ``AlmaLinux:9``) by their *source* package (distribution advisories name
source packages; an rpm is looked up by its own name and its source rpm's), language packages
in theirs (``PyPI``, ``npm``, ``Go``, ``Maven``, ``crates.io``, ``RubyGems``) by the normalized
name. A Go binary's toolchain version is also matched as the ``stdlib`` module. Then each index
row's ranges are evaluated in the ecosystem's own version order (match.py). One finding per
(advisory, package, version); worst first.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..findings import Finding, sort_key
from ..model import Inventory, OSInfo, Package
from . import store
from .match import evaluate
from .osv import normalize_name

LANGUAGE = {
    "pypi": "PyPI",
    "npm": "npm",
    "golang": "Go",
    "go": "Go",
    "maven": "Maven",
    "cargo": "crates.io",
    "gem": "RubyGems",
}


def os_ecosystem(os_info: OSInfo | None) -> str | None:
    """The OSV ecosystem key of the image's OS release, None when OSV has none for it."""
    if os_info is None:
        return None
    osid = os_info.id.strip().lower()
    ver = os_info.version_id.strip()
    major = ver.split(".", 1)[0]
    if osid == "debian" and major.isdigit():
        return f"Debian:{major}"
    if osid == "ubuntu" and re.fullmatch(r"\d+\.\d+", ver):
        return f"Ubuntu:{ver}"
    if osid == "alpine":
        m = re.match(r"(\d+)\.(\d+)", ver)
        return f"Alpine:v{m[1]}.{m[2]}" if m else None
    if osid == "wolfi":
        return "Wolfi"
    if osid == "chainguard":
        return "Chainguard"
    if not major.isdigit():
        return None
    return {
        "rhel": f"Red Hat:{major}",
        "rocky": f"Rocky Linux:{major}",
        "almalinux": f"AlmaLinux:{major}",
    }.get(osid)


@dataclass(frozen=True, slots=True)
class Query:
    package: Package
    name: str  # normalized, as indexed
    version: str  # the version compared (an OS package's source version)


def _maven_name(p: Package) -> str:
    if ":" in p.name:
        return p.name
    m = re.match(r"pkg:maven/([^/@?#]+)/([^/@?#]+)", p.purl)
    return f"{m[1]}:{m[2]}" if m else p.name


def plan(inventory: Inventory) -> dict[str, list[Query]]:
    """Ecosystem key → the lookups the inventory needs."""
    out: dict[str, list[Query]] = defaultdict(list)
    os_eco = os_ecosystem(inventory.os)
    stdlib_seen: set[str] = set()
    for p in inventory.packages:
        kind = p.ecosystem.lower()
        if kind in ("deb", "apk", "rpm"):
            if os_eco is None:
                continue
            names = {p.source_name or p.name}
            if kind == "rpm":
                names.add(p.name)
            version = p.version
            if kind == "deb" and p.source_version:
                version = p.source_version
            for n in names:
                out[os_eco].append(Query(p, normalize_name(os_eco, n), version))
            continue
        eco = LANGUAGE.get(kind)
        if eco is None:
            continue
        name = _maven_name(p) if eco == "Maven" else p.name
        out[eco].append(Query(p, normalize_name(eco, name), p.version))
        if eco == "Go":
            go = dict(p.extra).get("go_version", "")
            if go and p.name != "stdlib" and f"{p.path}\0{go}" not in stdlib_seen:
                stdlib_seen.add(f"{p.path}\0{go}")
                std = Package("golang", "stdlib", go, layer_digest=p.layer_digest, path=p.path)
                out[eco].append(Query(std, "stdlib", go))
    return out


def _severity(rec: store.Facts, data: dict[str, Any]) -> tuple[str, float | None, str]:
    """The affected entry's own CVSS, else the record's, else the entry's rating, else the
    record's rating."""
    own = data.get("s")
    if own and own[1] is not None:
        return own[0], own[1], own[2]
    if rec.cvss_score is not None:
        return rec.severity, rec.cvss_score, rec.cvss_vector
    if own:
        return own[0], None, ""
    return rec.severity, None, ""


Hit = tuple[int, str, str]  # (record id, normalized name, data), as store.lookup returns


class Matcher:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def database_updated_at(self) -> datetime | None:
        async with self.engine.connect() as conn:
            return await store.updated_at(conn)

    async def match(self, inventory: Inventory) -> list[Finding]:
        wanted = plan(inventory)
        async with self.engine.connect() as conn:
            hits = {
                eco: await store.lookup(conn, eco, {q.name for q in queries})
                for eco, queries in wanted.items()
            }
            affected = affected_by(wanted, hits)
            records = await store.facts(conn, {a[1] for a in affected})
        return findings_of(affected, records)


Affected = tuple[Query, int, dict[str, Any], str | None]  # query, record id, data, fixed


_PARSED: dict[str, dict[str, Any]] = {}
_PARSED_MAX = 50_000


def _parsed(raw: str) -> dict[str, Any]:
    """An index row's data, parsed once per process while it stays the same text (the same
    base packages recur in every image; a changed record is new text). Read-only for callers."""
    data = _PARSED.get(raw)
    if data is None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        data = _PARSED[raw] = json.loads(raw)
    return data


def affected_by(wanted: dict[str, list[Query]], hits: dict[str, list[Hit]]) -> list[Affected]:
    """Each (query, index row) whose ranges contain the query's version."""
    out: list[Affected] = []
    for eco, queries in wanted.items():
        by_name: dict[str, list[Query]] = defaultdict(list)
        for q in queries:
            by_name[q.name].append(q)
        for record_id, name, raw in hits.get(eco, ()):
            data: dict[str, Any] | None = None
            for q in by_name.get(name, ()):
                if data is None:
                    data = _parsed(raw)
                ok, fixed = evaluate(q.version, data)
                if ok:
                    out.append((q, record_id, data, fixed))
    return out


def findings_of(affected: list[Affected], records: dict[int, store.Facts]) -> list[Finding]:
    """One finding per (advisory, package, version, path); worst first."""
    findings: dict[tuple[str, str, str, str], Finding] = {}
    lists: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
    for q, record_id, data, fixed in affected:
        rec = records.get(record_id)
        if rec is None:  # the record was replaced between the two reads
            continue
        p = q.package
        key = (rec.osv_id, p.name, p.version, p.path)
        if key in findings:
            continue
        level, score, vector = _severity(rec, data)
        if record_id not in lists:
            a, u, ln = json.loads(f"[{rec.aliases},{rec.upstream},{rec.links}]")
            lists[record_id] = (tuple(a), tuple(u), tuple(ln))
        aliases, upstream, links = lists[record_id]
        findings[key] = Finding(
            id=rec.osv_id,
            aliases=aliases,
            ecosystem=data.get("e", ""),
            package=p.name,
            version=p.version,
            fixed_version=fixed,
            severity=level,
            cvss_score=score,
            layer_digest=p.layer_digest,
            upstream=upstream,
            summary=rec.summary,
            links=links,
            source_package=data.get("n", "") if data.get("n", "") != p.name else "",
            cvss_vector=vector,
            purl=p.purl,
        )
    return sorted(findings.values(), key=sort_key)
