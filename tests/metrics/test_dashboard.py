"""docs/grafana-dashboard.json queries only metrics that moorage.metrics defines, with the
labels those metrics have: a renamed metric or label breaks this test, not an operator's
dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from moorage.metrics import MoorageMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
# Labels Prometheus adds to every scraped series, and the histogram bucket bound.
TARGET_LABELS = {"instance", "job"}
NAME = re.compile(r"\bmoorage_[a-z0-9_]+")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _series() -> dict[str, set[str]]:
    """Every sample name the module can expose → its label names."""
    out: dict[str, set[str]] = {}
    for obj in vars(MoorageMetrics(CollectorRegistry())).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = set(obj._labelnames)
        name = obj._name
        if obj._type == "counter":
            out[name + "_total"] = labels
        elif obj._type == "histogram":
            out[name + "_bucket"] = labels | {"le"}
            out[name + "_sum"] = out[name + "_count"] = labels
        else:
            out[name] = labels
    return out


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched in its {…} selector) for every metric in *expr*."""
    found = []
    for m in NAME.finditer(expr):
        labels: set[str] = set()
        rest = expr[m.end() :]
        if rest.startswith("{"):
            body = rest[1:]
            while True:
                mm = MATCHER.match(body)
                if not mm:
                    break
                labels.add(mm.group(1))
                body = body[mm.end() :]
            assert body.startswith("}"), f"unparsed selector in {expr!r}: {body[:40]!r}"
        found.append((m.group(0), labels))
    return found


def _targets() -> list[dict[str, Any]]:
    doc = json.loads(DASHBOARD.read_text())
    return [t for p in doc["panels"] for t in p.get("targets", [])]


def test_the_dashboard_uses_only_defined_metrics_and_labels() -> None:
    series = _series()
    seen: set[str] = set()
    targets = _targets()
    assert len(targets) >= 30
    for target in targets:
        expr = target["expr"]
        assert expr.count("(") == expr.count(")"), expr
        selectors = _selectors(expr)
        assert selectors, f"no Moorage metric in {expr!r}"
        known_labels = set(TARGET_LABELS)
        for name, labels in selectors:
            assert name in series, f"{name} is not defined by moorage.metrics ({expr!r})"
            assert labels <= series[name] | TARGET_LABELS, (name, labels - series[name])
            known_labels |= series[name]
            seen.add(name)
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in known_labels, f"'by ({label})' is no label of {expr!r}"
        # Legends name only labels the query keeps.
        for label in re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")):
            assert label in known_labels, (label, expr)
    # The dashboard shows the figures the issue names.
    for needed in (
        "moorage_http_requests_total",
        "moorage_http_request_duration_seconds_bucket",
        "moorage_http_request_body_bytes_total",
        "moorage_http_response_body_bytes_total",
        "moorage_uploads_in_flight",
        "moorage_storage_used_bytes",
        "moorage_db_pool_connections",
        "moorage_audit_queue_depth",
        "moorage_jobs",
        "moorage_gc_deleted_total",
        "moorage_scans_total",
        "moorage_replication_executions_total",
    ):
        assert needed in seen, needed


def test_the_check_catches_an_unknown_metric_or_label() -> None:
    series = _series()
    bad = _selectors('sum(rate(moorage_http_requests_total{repo="x"}[5m])) + moorage_nope')
    assert bad[0] == ("moorage_http_requests_total", {"repo"})
    assert not bad[0][1] <= series["moorage_http_requests_total"] | TARGET_LABELS
    assert bad[1][0] not in series
    assert series["moorage_http_requests_total"] == {"method", "route", "status"}
    assert series["moorage_http_request_duration_seconds_bucket"] == {"method", "route", "le"}
