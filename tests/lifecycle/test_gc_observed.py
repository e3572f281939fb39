"""What a GC pass shows (Prometheus metrics on /metrics, an audit record and a ``gc_runs`` row)
and the pull-by-digest pin of untagged manifests, through a real server on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    push_blob,
    put_manifest,
    sha256,
)
from .conftest import admin_gc_server, cli

WEEK = str(7 * 86400)

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def pin_gc(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """No grace, untagged delay or time-machine window; pulls by digest pin for a week."""
    with admin_gc_server(backend, MOORAGE_GC_PIN_PULLED_WITHIN_SECONDS=WEEK) as srv:
        yield srv


@pytest.fixture
def admin(pin_gc: MoorageServer) -> Iterator[httpx.Client]:
    """The administrator (the API runs passes and reads the audit log for administrators)."""
    with httpx.Client(base_url=pin_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


@pytest.fixture
def own_repo() -> str:
    return f"admin/gc{uuid.uuid4().hex[:10]}"


def scrape(c: httpx.Client) -> Samples:
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def audit_events(c: httpx.Client, **params: str) -> list[dict[str, Any]]:
    r = c.get("/api/v1/audit", params=params)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def eventually(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_a_pass_shows_in_metrics_and_the_audit_log(admin: httpx.Client, own_repo: str) -> None:
    c, repo = admin, own_repo
    first = image_manifest(c, repo, [os.urandom(2000)])
    assert put_manifest(c, repo, "latest", first).status_code == 201
    second = image_manifest(c, repo, [os.urandom(2000)])
    assert put_manifest(c, repo, "latest", second).status_code == 201  # first: garbage
    orphan = os.urandom(777)
    push_blob(c, repo, orphan)
    before = scrape(c)

    r = c.post("/api/v1/gc/runs", json={"grace": 0})
    assert r.status_code == 200, r.text
    run = r.json()
    assert f"{repo}@{sha256(first)}" in run["manifests"]
    assert sha256(orphan) in run["blobs"]
    after = scrape(c)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("moorage_gc_runs_total", outcome="success") == 1
    assert delta("moorage_gc_run_duration_seconds_count") == 1
    assert delta("moorage_gc_run_duration_seconds_sum") > 0
    assert delta("moorage_gc_deleted_total", kind="manifest") == len(run["manifests"])
    assert delta("moorage_gc_deleted_total", kind="blob") == len(run["blobs"])
    assert (
        delta("moorage_gc_bytes_freed_total") >= 777 + 2000
    )  # the orphan, the old layer (and config)
    # Everything due was reviewed: what is left waits for a later time (none here).
    assert ("moorage_gc_review_queue_depth", frozenset({("queue", "blob")})) in after
    assert value(after, "moorage_gc_review_queue_depth", queue="manifest") == 0

    # A dry run is not a pass that removed something: not counted.
    assert c.post("/api/v1/gc/runs", json={"dry_run": True}).status_code == 200
    assert value(scrape(c), "moorage_gc_runs_total", outcome="success") == value(
        after, "moorage_gc_runs_total", outcome="success"
    )

    # One audit record per pass, with the counts.
    passes = audit_events(c, action="gc.pass")
    assert passes, "no gc.pass audit record"
    details = passes[0]["details"]
    assert details["manifests"] == len(run["manifests"])
    assert details["blobs"] == len(run["blobs"])
    assert details["bytes"] >= 777 + 2000  # the orphan, the old layer (and config)
    assert details["trigger"] == "api"
    assert audit_events(c, action="gc.dry_run")


def test_a_manifest_pulled_by_digest_survives_the_untagged_delay(
    pin_gc: MoorageServer, admin: httpx.Client, own_repo: str
) -> None:
    """This server has no untagged delay (gc.untagged_seconds 0) and the default pin window
    (gc.pin_pulled_within_seconds, 7 days): of two untagged manifests, the one a client pulled
    by digest stays, the other goes. A pull by tag pins nothing."""
    c, repo = admin, own_repo
    pulled, idle, by_tag = (image_manifest(c, repo) for _ in range(3))
    for payload in (pulled, idle):
        assert put_manifest(c, repo, sha256(payload), payload).status_code == 201
    assert put_manifest(c, repo, "moving", by_tag).status_code == 201
    got = c.get(f"/v2/{repo}/manifests/{sha256(pulled)}", headers={"Accept": MANIFEST_TYPE})
    assert got.status_code == 200 and got.content == pulled
    assert c.get(f"/v2/{repo}/manifests/moving", headers={"Accept": MANIFEST_TYPE}).content == (
        by_tag
    )
    assert put_manifest(c, repo, "moving", image_manifest(c, repo)).status_code == 201
    # The pin is written with the pull's audit record, by the audit log's flusher.
    eventually(lambda: len(audit_events(c, action="manifest.pull", repository=repo)) >= 2)

    r = cli(pin_gc, "gc", "run", "--grace", "0")
    assert r.returncode == 0, r.stderr
    assert sha256(idle) in r.stdout and sha256(by_tag) in r.stdout
    assert sha256(pulled) not in r.stdout
    assert c.get(f"/v2/{repo}/manifests/{sha256(pulled)}").status_code == 200
    assert c.get(f"/v2/{repo}/manifests/{sha256(idle)}").status_code == 404
    assert c.get(f"/v2/{repo}/manifests/{sha256(by_tag)}").status_code == 404
    # Kept, not forgotten: the review waits for the pin's end.
    r = cli(pin_gc, "gc", "run", "--dry-run", "--grace", "0")
    assert r.returncode == 0 and sha256(pulled) not in r.stdout
