"""A finding: one advisory affecting one installed package of an image, as matching produces it
and the /vulnerabilities API, the policy and exports read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Severity levels, worst first; "unknown" when an advisory carries no rating or CVSS vector.
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Finding:
    id: str  # the advisory's OSV id: "DSA-5514-1", "GHSA-...", "GO-2024-2687", "PYSEC-..."
    aliases: tuple[str, ...]  # OSV "aliases" (CVE ids, GHSA ids)
    ecosystem: str  # the OSV ecosystem matched: "Debian:12", "Alpine:v3.20", "PyPI", "Go"
    package: str  # the installed package's name (a binary package for OS packages)
    version: str  # the installed version
    fixed_version: str | None  # the first fixed version after the installed one; None: no fix
    severity: str  # one of SEVERITIES
    cvss_score: float | None  # base score of the advisory's CVSS v4.0 or v3.x vector
    layer_digest: str  # the layer that added the package
    upstream: tuple[str, ...] = ()  # OSV "upstream" (the CVE a distribution advisory fixes)
    summary: str = ""
    links: tuple[str, ...] = ()
    source_package: str = ""  # the distribution source package the advisory named, if other
    cvss_vector: str = ""
    purl: str = ""

    @property
    def fixable(self) -> bool:
        return self.fixed_version is not None

    def names(self) -> set[str]:
        """Every name the advisory goes by (for allow-lists): id, aliases and upstream."""
        return {self.id, *self.aliases, *self.upstream}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("aliases", "upstream", "links"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            id=str(d["id"]),
            aliases=tuple(d.get("aliases") or ()),
            ecosystem=str(d.get("ecosystem", "")),
            package=str(d.get("package", "")),
            version=str(d.get("version", "")),
            fixed_version=d.get("fixed_version"),
            severity=str(d.get("severity", "unknown")),
            cvss_score=d.get("cvss_score"),
            layer_digest=str(d.get("layer_digest", "")),
            upstream=tuple(d.get("upstream") or ()),
            summary=str(d.get("summary", "")),
            links=tuple(d.get("links") or ()),
            source_package=str(d.get("source_package", "")),
            cvss_vector=str(d.get("cvss_vector", "")),
            purl=str(d.get("purl", "")),
        )


def sort_key(f: Finding) -> tuple[int, float, str, str]:
    """Worst first: severity, then score, then package and id."""
    return (RANK.get(f.severity, len(SEVERITIES)), -(f.cvss_score or 0.0), f.package, f.id)


def summarize(findings: list[Finding]) -> dict[str, int]:
    """Counts by severity (every level present, zeros included)."""
    out = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        out[f.severity if f.severity in out else "unknown"] += 1
    return out
