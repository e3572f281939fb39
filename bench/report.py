"""Metric definitions, the side-by-side table and the JSON results file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE = "distribution"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    sample: str | None  # the per-round samples it is derived from (None: not repeated)


_SMALL = "{images} small images, {parallel} parallel (skopeo)"
_LOAD = "{conns} conns"

METRICS: list[Metric] = [
    Metric("small_push_s", "push " + _SMALL, "s", "lower", "small_push_s"),
    Metric(
        "small_push_client_s",
        "push (client's time only, server's later work not counted)",
        "s",
        "lower",
        "small_push_s_client",
    ),
    Metric(
        "small_push_cpu_s",
        "push: the server's CPU (process tree, later work included)",
        "s",
        "lower",
        "small_push_s_cpu",
    ),
    Metric("small_pull_s", "pull " + _SMALL, "s", "lower", "small_pull_s"),
    Metric(
        "small_pull_cpu_s",
        "pull: the server's CPU (process tree)",
        "s",
        "lower",
        "small_pull_s_cpu",
    ),
    Metric(
        "big_skopeo_push_MBps", "{big} layer push (skopeo)", "MB/s", "higher", "big_skopeo_push_s"
    ),
    Metric(
        "big_skopeo_pull_MBps", "{big} layer pull (skopeo)", "MB/s", "higher", "big_skopeo_pull_s"
    ),
    Metric(
        "big_curl_push_MBps",
        "{big} blob push (curl POST/PATCH/PUT)",
        "MB/s",
        "higher",
        "big_curl_push_s",
    ),
    Metric("big_curl_pull_MBps", "{big} blob GET (curl)", "MB/s", "higher", "big_curl_pull_s"),
    Metric(
        "big_curl_push_x_sha256",
        "{big} curl push time / sha256 time",
        "x",
        "lower",
        "big_curl_push_s",
    ),
    Metric(
        "big_skopeo_push_x_sha256",
        "{big} skopeo push time / sha256 time",
        "x",
        "lower",
        "big_skopeo_push_s",
    ),
    Metric("rss_idle_MiB", "RSS after start (process tree)", "MiB", "lower", None),
    Metric("rss_big_push_MiB", "peak RSS during {big} pushes", "MiB", "lower", None),
    Metric("rss_peak_MiB", "peak RSS over the whole run", "MiB", "lower", None),
    Metric(
        "manifest_get_rps",
        "manifest GET, " + _LOAD + " (wrk)",
        "req/s",
        "higher",
        "manifest_get_rps",
    ),
    Metric(
        "manifest_get_load_rps",
        "manifest GET, load time only (server's later work not counted)",
        "req/s",
        "higher",
        "manifest_get_load_rps",
    ),
    Metric(
        "manifest_head_rps",
        "manifest HEAD, " + _LOAD + " (hey)",
        "req/s",
        "higher",
        "manifest_head_rps",
    ),
    Metric(
        "blob_get_rps",
        "{blob_kib} KiB blob GET, " + _LOAD + " (wrk)",
        "req/s",
        "higher",
        "blob_get_rps",
    ),
    Metric(
        "blob_get_MBps",
        "{blob_kib} KiB blob GET, " + _LOAD + " (wrk)",
        "MB/s",
        "higher",
        "blob_get_rps",
    ),
]


def spread(results: dict[str, dict[str, Any]], metric: Metric) -> float | None:
    """How far apart the rounds were: max/min - 1, for the worst server."""
    if metric.sample is None:
        return None
    worst = None
    for res in results.values():
        values = res.get("samples", {}).get(metric.sample, [])
        if len(values) > 1 and min(values) > 0:
            s = max(values) / min(values) - 1
            worst = s if worst is None else max(worst, s)
    return worst


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """For every server but the reference: its figure / the reference's, per metric."""
    ref = results.get(REFERENCE, {}).get("metrics")
    out: dict[str, dict[str, float | None]] = {}
    if ref is None:
        return out
    for name, res in results.items():
        if name == REFERENCE:
            continue
        row: dict[str, float | None] = {}
        for m in METRICS:
            a, b = res["metrics"].get(m.key), ref.get(m.key)
            row[m.key] = (
                a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None
            )
        out[name] = row
    return out


def _fmt(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(
    results: dict[str, dict[str, Any]],
    rel: dict[str, dict[str, float | None]],
    labels: dict[str, str],
) -> str:
    names = list(results)
    header = ["metric", "unit", "better", *names, *(f"{n}/{REFERENCE}" for n in rel), "spread"]
    rows: list[list[str]] = []
    for m in METRICS:
        row = [m.label.format(**labels), m.unit, m.better]
        for name in names:
            cell = _fmt(results[name]["metrics"].get(m.key))
            if m.key in results[name].get("invalid", []):
                cell += " !"
            row.append(cell)
        for name in rel:
            r = rel[name].get(m.key)
            row.append("-" if r is None else f"{r:.2f}x")
        sp = spread(results, m)
        row.append("-" if sp is None else f"{sp:.0%}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names (metric, unit, better) to the left, figures to the right.
        return "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    out = [line(header), sep, *(line(r) for r in rows)]
    if any(res.get("invalid") for res in results.values()):
        out.append("! = the load run saw error responses or socket errors; see the JSON file")
    out.append(
        "spread = (worst round / best round) - 1, for the noisiest server: a ratio closer to 1x "
        "than that is noise"
    )
    return "\n".join(out)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
