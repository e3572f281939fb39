"""Metrics of a real Moorage under real traffic, scraped over HTTP and parsed with
prometheus_client's parser: counts by route template and status, body bytes both ways, latency
histograms, in-flight figures, database-derived gauges; the endpoint's token, disabled mode and
own port; several worker processes merged into one exposition."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from moorage.metrics import routes

from ..conftest import free_port, image_manifest, put_manifest, sha256
from .conftest import MeteredServer, metered_server, value

REQ = "moorage_http_requests_total"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _eventually(check: object, timeout: float = 20.0) -> None:
    """Poll a condition (no timing assertion: the deadline only bounds a broken run)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_requests_bytes_and_latency_by_route_template(metered: MeteredServer) -> None:
    repo = f"metrics/r{uuid.uuid4().hex[:8]}"
    before = metered.scrape()
    with httpx.Client(base_url=metered.url, timeout=30) as c:
        config = json.dumps(
            {"os": "linux", "architecture": "amd64", "n": uuid.uuid4().hex}
        ).encode()
        layer = os.urandom(3000)
        manifest = image_manifest(c, repo, [layer], config)
        assert put_manifest(c, repo, "v1", manifest).status_code == 201
        got = [
            c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": MANIFEST_TYPE}) for _ in range(3)
        ]
        missing = c.get(f"/v2/{repo}/manifests/nope", headers={"Accept": MANIFEST_TYPE})
        heads = [c.head(f"/v2/{repo}/blobs/{sha256(layer)}") for _ in range(2)]
        assert [r.status_code for r in got + [missing] + heads] == [200, 200, 200, 404, 200, 200]
        probe = c.get("/v2/../../etc/passwd%00")  # what scanners send: one bounded label
    after = metered.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    M, B, U = routes.MANIFEST, routes.BLOB, routes.UPLOADS
    assert delta(REQ, method="GET", route=M, status="200") == 3
    assert delta(REQ, method="GET", route=M, status="404") == 1
    assert delta(REQ, method="PUT", route=M, status="201") == 1
    assert delta(REQ, method="HEAD", route=B, status="200") == 2
    assert delta(REQ, method="POST", route=U, status="201") == 2  # config and layer, monolithic
    assert (
        delta(REQ, method="GET", route=routes.V2_OTHER, status=str(probe.status_code))
        + delta(REQ, method="GET", route=routes.OTHER, status=str(probe.status_code))
        == 1
    )
    # Bodies: exactly what went over the wire.
    assert delta("moorage_http_request_body_bytes_total", route=U) == len(config) + len(layer)
    assert delta("moorage_http_request_body_bytes_total", route=M) == len(manifest)
    sent = sum(len(r.content) for r in got + [missing])
    put_body = 0  # a manifest PUT answers 201 with no body
    assert delta("moorage_http_response_body_bytes_total", route=M) == sent + put_body
    # Latency histogram: one observation per request, every one within the last bucket.
    hist = "moorage_http_request_duration_seconds"
    assert delta(f"{hist}_count", method="GET", route=M) == 4
    assert delta(f"{hist}_bucket", method="GET", route=M, le="+Inf") == 4
    assert 0 < delta(f"{hist}_sum", method="GET", route=M) < 60
    # No label carries a repository name, a tag or a digest.
    for _name, labels in after:
        for _k, v in labels:
            assert repo not in v and "nope" not in v and "sha256:" not in v and "passwd" not in v
    # Storage grew by exactly the new blobs (the database gauge, refreshed for the scrape).
    _eventually(
        lambda: (
            value(metered.scrape(), "moorage_storage_used_bytes")
            - value(before, "moorage_storage_used_bytes")
            == len(config) + len(layer)
        )
    )
    latest = metered.scrape()
    assert value(latest, "moorage_metrics_database_refresh_ok") == 1
    assert value(latest, "moorage_repositories") >= 1
    assert value(latest, "moorage_storage_blobs") >= 2


def test_in_flight_figures_are_sampled_for_the_scrape(metered: MeteredServer) -> None:
    """At rest the only request in flight is the scrape itself; an upload whose body is still
    arriving counts as an upload in flight until it ends."""
    idle = metered.scrape()
    assert value(idle, "moorage_http_requests_in_flight") == 1
    assert value(idle, "moorage_uploads_in_flight") == 0
    repo = f"metrics/u{uuid.uuid4().hex[:8]}"
    release = threading.Event()
    first_sent = threading.Event()
    result: list[int] = []

    def body() -> Iterator[bytes]:
        yield b"a" * 1000
        first_sent.set()
        release.wait(30)
        yield b"b" * 1000

    with httpx.Client(base_url=metered.url, timeout=60) as c:
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["location"]

        def patch() -> None:
            result.append(c.patch(location, content=body()).status_code)

        t = threading.Thread(target=patch)
        t.start()
        try:
            assert first_sent.wait(30)
            _eventually(lambda: value(metered.scrape(), "moorage_uploads_in_flight") == 1)
            busy = metered.scrape()
            assert value(busy, "moorage_http_requests_in_flight") == 2
        finally:
            release.set()
            t.join(30)
    assert result == [202]
    done = metered.scrape()
    assert value(done, "moorage_uploads_in_flight") == 0
    assert value(done, "moorage_http_requests_in_flight") == 1


def test_jobs_and_process_gauges(metered: MeteredServer, backend: tuple[str, str | None]) -> None:
    """Jobs queued through the real CLI appear by kind and state; pool and audit gauges are
    sampled."""
    import subprocess
    import sys

    env = dict(os.environ)
    if metered.database_url:
        env["MOORAGE_DATABASE_URL"] = metered.database_url
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage.cli",
            "jobs",
            "run",
            "uploads.purge_stale",
            "--data-dir",
            str(metered.data_dir),
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr

    def counted() -> bool:
        s = metered.scrape()
        return (
            sum(
                value(s, "moorage_jobs", kind="uploads.purge_stale", state=state)
                for state in ("queued", "running", "succeeded", "failed")
            )
            >= 1
        )

    _eventually(counted)
    # This node ran it (jobs.enabled by default): its attempt is counted by kind and outcome.
    _eventually(
        lambda: (
            value(
                metered.scrape(),
                "moorage_jobs_finished_total",
                kind="uploads.purge_stale",
                outcome="success",
            )
            >= 1
        )
    )
    s = metered.scrape()
    assert value(s, "moorage_job_duration_seconds_count", kind="uploads.purge_stale") >= 1
    # Every state of a kind is a series, zero included (a vanished series reads as "no data").
    for state in ("queued", "running", "succeeded", "failed"):
        assert (
            "moorage_jobs",
            frozenset({"kind": "uploads.purge_stale", "state": state}.items()),
        ) in s
    assert ("moorage_audit_queue_depth", frozenset()) in s
    assert "probe failed" not in metered.log(), metered.log()
    if backend[0] == "postgresql":
        assert value(s, "moorage_db_pool_size", pool="main") >= 1
        in_use = value(s, "moorage_db_pool_connections", pool="main", state="in_use")
        idle = value(s, "moorage_db_pool_connections", pool="main", state="idle")
        assert in_use >= 0 and idle >= 0 and in_use + idle >= 1


def test_token_own_port_and_disabled() -> None:
    token = "t0ken-" + uuid.uuid4().hex
    port = free_port()
    with metered_server(MOORAGE_METRICS_TOKEN=token, MOORAGE_METRICS_PORT=str(port)) as srv:
        # On its own port: the registry's port has no /metrics.
        assert httpx.get(f"{srv.url}/metrics").status_code == 404
        own = f"http://127.0.0.1:{port}/metrics"
        r = httpx.get(own)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert (
            httpx.get(own, headers={"Authorization": "Bearer wrong-token-0000"}).status_code == 401
        )
        assert httpx.get(own, headers={"Authorization": f"Basic {token}"}).status_code == 401
        assert httpx.post(own, headers={"Authorization": f"Bearer {token}"}).status_code == 405
        assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404
        httpx.get(f"{srv.url}/v2/")
        samples = srv.scrape(own, Authorization=f"Bearer {token}")
        assert value(samples, REQ, method="GET", route="/v2/", status="200") == 1
        assert value(samples, "moorage_metrics_database_refresh_ok") == 1
    with metered_server(MOORAGE_METRICS_ENABLED="false") as srv:
        r = httpx.get(f"{srv.url}/metrics")
        assert r.status_code == 404 and "moorage_" not in r.text


def test_openmetrics_when_asked() -> None:
    with metered_server() as srv:
        r = httpx.get(
            f"{srv.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF")


@pytest.mark.parametrize("workers", [2])
def test_several_workers_are_merged_into_one_exposition(workers: int, tmp_path: object) -> None:
    """``moorage serve`` with several workers prepares a shared directory for their values
    (PROMETHEUS_MULTIPROC_DIR, under TMPDIR) before they start: every scrape shows the requests
    of every worker, whichever worker answers it."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="moorage-tmp-") as tmp:
        with metered_server(workers=workers, TMPDIR=tmp) as srv:
            (mp,) = Path(tmp).glob("moorage-metrics-*")
            n = 60

            def one(_: int) -> int:  # a new connection each: the kernel spreads them over workers
                return httpx.get(f"{srv.url}/v2/").status_code

            with ThreadPoolExecutor(6) as pool:
                assert set(pool.map(one, range(n))) == {200}
            for _ in range(4):
                s = srv.scrape()
                assert value(s, REQ, method="GET", route="/v2/", status="200") == n
            pids = {p.name.rsplit("_", 1)[-1] for p in Path(mp).glob("counter_*.db")}
            assert len(pids) == workers, pids  # both workers recorded, one exposition


def test_a_worker_is_scraped_on_its_metrics_port(tmp_path: object) -> None:
    """``moorage worker`` serves no HTTP but, with metrics.port, its job figures."""
    import subprocess
    import sys
    from pathlib import Path

    from ..conftest import stop_process
    from .conftest import ROOT, parse

    data = Path(str(tmp_path)) / "data"
    port = free_port()
    env = {
        **os.environ,
        "MOORAGE_DATA_DIR": str(data),
        "MOORAGE_AUTH_ENABLED": "false",
        "MOORAGE_METRICS_PORT": str(port),
        "MOORAGE_METRICS_DATABASE_SECONDS": "0.2",
        "MOORAGE_JOBS_POLL_SECONDS": "0.2",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    log = open(data.parent / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "moorage.cli", "worker"], env=env, stdout=log, stderr=log
    )
    try:

        def scrape() -> dict | None:  # type: ignore[type-arg]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except httpx.HTTPError:
                return None
            return parse(r.text) if r.status_code == 200 else None

        _eventually(lambda: scrape() is not None, timeout=60)
        run = subprocess.run(
            [sys.executable, "-m", "moorage.cli", "jobs", "run", "uploads.purge_stale"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        _eventually(
            lambda: (
                value(
                    scrape() or {},
                    "moorage_jobs_finished_total",
                    kind="uploads.purge_stale",
                    outcome="success",
                )
                >= 1
            )
        )
        s = scrape() or {}
        assert value(s, "moorage_jobs", kind="uploads.purge_stale", state="succeeded") >= 1
    finally:
        stop_process(worker)
        log.close()
