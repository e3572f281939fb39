"""The metrics pieces on their own: route templates (every real route of /v2, the REST API and
the web UI maps to its own template, hostile paths to a bounded few), the middleware's handling
of errors and disconnects, the endpoint's answers, the sampler, and the database figures read
from real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from moorage.db.engine import create_engine, upgrade
from moorage.db.schema import blobs, jobs, repositories
from moorage.metrics import (
    DatabaseGauges,
    Exporter,
    MetricsConfig,
    MetricsEndpoint,
    MetricsMiddleware,
    MetricsPortServer,
    MoorageMetrics,
    ProcessSampler,
    RouteClassifier,
    read_snapshot,
    routes,
)

from ..conftest import postgres_database
from .conftest import api_templates, parse, value

D = "sha256:" + "0" * 64
UUID = "0d5c3f2e-6b0a-4c8e-9a57-3f1f0c7c1a11"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v2/", "/v2/"),
        ("/v2", "/v2/"),
        ("/v2/_catalog", "/v2/_catalog"),
        ("/v2/library/alpine/manifests/3.20", routes.MANIFEST),
        (f"/v2/a/manifests/{D}", routes.MANIFEST),
        ("/v2/a/b/c/d/manifests/latest", routes.MANIFEST),
        ("/v2/manifests/manifests/manifests", routes.MANIFEST),  # a repository named "manifests"
        (f"/v2/blobs/uploads/blobs/{D}", routes.BLOB),  # a repository named "blobs/uploads"
        ("/v2/team/app/blobs/uploads/", routes.UPLOADS),
        ("/v2/team/app/blobs/uploads", routes.UPLOADS),
        (f"/v2/team/app/blobs/uploads/{UUID}", routes.UPLOAD),
        ("/v2/team/app/tags/list", routes.TAGS),
        (f"/v2/team/app/referrers/{D}", routes.REFERRERS),
        ("/v2/team/app", routes.V2_OTHER),
        ("/v2/team/app/tags/other", routes.V2_OTHER),
        ("/v2/x/uploads/y", routes.V2_OTHER),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
        ("/metrics", "/metrics"),
        ("/auth/token", "/auth/token"),
        ("/auth/anything", "/auth/{other}"),
        ("/", "/"),
        ("/ui/whatever/else", "/ui/{other}"),
        ("/static/ui/app.css", "/static/ui/{name}"),
        ("/wp-login.php", routes.OTHER),
        ("/" + "a/" * 5000, routes.OTHER),
    ],
)
def test_templates_of_fixed_routes(path: str, template: str) -> None:
    assert RouteClassifier()(path) == template


def _example(template: str) -> str:
    """A concrete path for a template (names with slashes where the API allows them)."""
    out = template
    for name, sample in (("{repository}", "team/sub/app"), ("{reference}", "v1.2")):
        out = out.replace(name, sample)
    import re

    return re.sub(r"\{[a-z_]+\}", "x1", out)


def test_every_api_route_gets_its_own_template() -> None:
    templates = api_templates()
    assert len(templates) > 40
    classify = RouteClassifier.from_templates(templates)
    for template in templates:
        assert classify(_example(template)) == template, template
    assert classify("/api/v1/no/such/thing") == "/api/v1/{other}"


def test_every_ui_route_gets_its_own_template() -> None:
    from moorage.ui.app import CORE_GROUPS, WebUI
    from moorage.ui.oidc import OIDCLogin

    ui = object.__new__(WebUI)  # the route table only: no services behind it
    ui.ctx = ui.access = ui.catalog = ui.management = None  # type: ignore[assignment]
    ui.oidc = object.__new__(OIDCLogin)  # single sign-on's routes count too
    ui.groups = [group(ui) for group in CORE_GROUPS]
    paths = [r.path for r in WebUI.routes(ui)]
    classify = RouteClassifier.from_templates(paths)
    for path in paths:
        label = routes.label_of(path)
        assert classify(_example(label.replace("{name}", "team/app"))) == label, path


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/abcv2_.-%:", max_size=60))
def test_any_path_maps_into_a_bounded_set(path: str) -> None:
    """Whatever a client sends, the label is one of a fixed set of strings."""
    allowed = (
        set(routes.EXACT)
        | {t for _p, t in routes.FAMILIES}
        | {routes.MANIFEST, routes.BLOB, routes.UPLOADS, routes.UPLOAD, routes.TAGS}
        | {routes.REFERRERS, routes.V2_OTHER, routes.OTHER}
    )
    assert RouteClassifier()("/" + path) in allowed


def _metrics() -> MoorageMetrics:
    return MoorageMetrics(CollectorRegistry())


def _samples(m: MoorageMetrics) -> dict[Any, float]:
    from prometheus_client import generate_latest

    return parse(generate_latest(m.registry).decode())


async def test_middleware_records_errors_and_disconnects() -> None:
    m = _metrics()

    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bug")

    async def gone(scope: Any, receive: Any, send: Any) -> None:
        return None  # the client went away before an answer

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "method": "BREW", "path": "/v2/a/manifests/b", "headers": []}
    with pytest.raises(RuntimeError):
        await MetricsMiddleware(boom, m)(scope, receive, send)
    await MetricsMiddleware(gone, m)(dict(scope, method="GET"), receive, send)
    s = _samples(m)
    assert (
        value(s, "moorage_http_requests_total", method="OTHER", route=routes.MANIFEST, status="500")
        == 1
    )
    assert (
        value(s, "moorage_http_requests_total", method="GET", route=routes.MANIFEST, status="none")
        == 1
    )

    lifespan_seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        lifespan_seen.append(scope["type"])

    await MetricsMiddleware(app, m)({"type": "lifespan"}, receive, send)
    assert lifespan_seen == ["lifespan"]


async def _answer(
    endpoint: MetricsEndpoint,
    method: str = "GET",
    auth: str | None = None,
    accept: str | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    status, headers, body = await endpoint.answer(method, auth, accept)
    return status, dict(headers), body


async def test_endpoint_answers() -> None:
    m = _metrics()
    m.gc_runs.labels("success").inc()
    exporter = Exporter(m)
    ok = MetricsEndpoint(MetricsConfig(), exporter)
    status, headers, body = await _answer(ok)
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain; version=")
    assert value(parse(body.decode()), "moorage_gc_runs_total", outcome="success") == 1
    assert b"process_cpu_seconds_total" in body  # single process: its own CPU and memory
    assert (await _answer(ok, "POST"))[0] == 405
    assert (await _answer(MetricsEndpoint(MetricsConfig(enabled=False), exporter)))[0] == 404
    token = "s3cret-" + "x" * 20
    guarded = MetricsEndpoint(MetricsConfig(token=token), exporter)
    assert (await _answer(guarded))[0] == 401
    assert (await _answer(guarded, auth=f"Bearer {token}x"))[0] == 401
    assert (await _answer(guarded, auth="Bearer " + "x" * 10000))[0] == 401
    assert (await _answer(guarded, auth=f"bearer {token}"))[0] == 200
    with pytest.raises(ValueError):
        MetricsConfig(token="short")


def test_port_server_serves_the_exposition() -> None:
    import httpx

    m = _metrics()
    m.scans.labels("success").inc(3)
    from ..conftest import free_port

    with pytest.raises(ValueError):
        MetricsPortServer(MetricsConfig(), Exporter(m), "127.0.0.1")  # no metrics.port

    server = MetricsPortServer(MetricsConfig(port=free_port()), Exporter(m), "127.0.0.1").start()
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
        assert r.status_code == 200
        assert value(parse(r.text), "moorage_scans_total", outcome="success") == 3
        assert httpx.head(f"http://127.0.0.1:{server.port}/metrics").content == b""
    finally:
        server.stop()


async def test_sampler_reads_a_real_audit_log_and_survives_a_broken_probe() -> None:
    """The probe reads the real AuditLog (events queued, none written yet: no start())."""
    from moorage.audit import AuditEvent, AuditLog

    m = _metrics()
    sampler = ProcessSampler(m)

    def broken() -> None:
        raise RuntimeError("no")

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'a.db'}"
        await upgrade(url)
        engine = create_engine(url, 2)
        try:
            audit = AuditLog(engine)
            for i in range(3):
                await audit.record(AuditEvent("manifest.pull", actor=f"u{i}"))
            sampler.add(broken)
            sampler.watch_audit(audit)
            sampler.watch_pool("main", engine)
            with pytest.raises(RuntimeError):
                broken()
            sampler.sample()
            s = _samples(m)
            assert value(s, "moorage_audit_queue_depth") == audit.pending == 3
            assert value(s, "moorage_audit_events_dropped") == 0
            assert value(s, "moorage_db_pool_size", pool="main") == 2
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def _database(kind: str) -> AsyncIterator[Any]:
    if kind == "postgresql":
        with postgres_database() as url:
            await upgrade(url)
            engine = create_engine(url, 2)
            try:
                yield engine
            finally:
                await engine.dispose()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'm.db'}"
            await upgrade(url)
            engine = create_engine(url, 2)
            try:
                yield engine
            finally:
                await engine.dispose()


async def test_database_figures(backend: tuple[str, str | None]) -> None:
    now = datetime.now(UTC)
    async with _database(backend[0]) as engine:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(blobs),
                [
                    {"digest": f"sha256:{i:064x}", "size": 1000 * i, "created_at": now}
                    for i in range(1, 5)
                ],
            )
            await conn.execute(
                sa.insert(repositories),
                [{"name": f"a/r{i}", "namespace": "a", "created_at": now} for i in range(3)],
            )
            rows = [
                ("gc.review", "queued", now - timedelta(seconds=120)),
                ("gc.review", "queued", now - timedelta(seconds=30)),
                ("gc.review", "queued", now + timedelta(hours=1)),  # not due: not "waiting"
                ("gc.review", "running", now),
                ("scan.image", "failed", now),
                ("scan.image", "succeeded", now),
                ("scan.image", "succeeded", now),
            ]
            await conn.execute(
                sa.insert(jobs),
                [
                    {"kind": k, "state": s, "run_after": t, "payload": {}, "created_at": now}
                    for k, s, t in rows
                ],
            )
        async with engine.connect() as conn:
            snap = await read_snapshot(conn, now)
        assert (snap.storage_used, snap.blobs, snap.repositories) == (10_000, 4, 3)
        assert snap.jobs == {
            ("gc.review", "queued"): 3,
            ("gc.review", "running"): 1,
            ("scan.image", "failed"): 1,
            ("scan.image", "succeeded"): 2,
        }
        assert snap.oldest_due.keys() == {"gc.review"}
        assert 119 <= snap.oldest_due["gc.review"] <= 125

        m = _metrics()
        gauges = DatabaseGauges(engine, m, ttl=3600)
        await gauges.refresh()
        s = _samples(m)
        assert value(s, "moorage_storage_used_bytes") == 10_000
        assert value(s, "moorage_jobs", kind="scan.image", state="succeeded") == 2
        assert ("moorage_jobs", frozenset({"kind": "scan.image", "state": "queued"}.items())) in s
        assert value(s, "moorage_metrics_database_refresh_ok") == 1
        # Cached: a second refresh within the TTL reads nothing (the new row is not seen).
        async with engine.begin() as conn:
            await conn.execute(sa.delete(jobs).where(jobs.c.kind == "scan.image"))
        await gauges.refresh()
        assert value(_samples(m), "moorage_jobs", kind="scan.image", state="succeeded") == 2
        # Forced: counts that fell to zero read 0 instead of vanishing.
        await gauges.refresh(force=True)
        s = _samples(m)
        assert value(s, "moorage_jobs", kind="scan.image", state="succeeded") == 0
        assert (
            "moorage_jobs",
            frozenset({"kind": "scan.image", "state": "succeeded"}.items()),
        ) in s
        # Concurrent scrapes share one read.
        gauges.ttl = 0.0
        await asyncio.gather(*(gauges.refresh() for _ in range(5)))


async def test_database_down_keeps_the_last_figures() -> None:
    from ..conftest import free_port

    m = _metrics()
    dead = create_engine(
        f"postgresql://nobody@127.0.0.1:{free_port()}/none-{uuid.uuid4().hex[:6]}", 1
    )
    try:
        gauges = DatabaseGauges(dead, m, ttl=0)
        assert await gauges.refresh() is None
        s = _samples(m)
        assert value(s, "moorage_metrics_database_refresh_ok") == 0
    finally:
        await dead.dispose()


def test_moorage_config_masks_the_scrape_token_and_the_oidc_secret() -> None:
    """``moorage config`` prints metrics.token and auth.oidc.client_secret masked, and the
    auth.token section (same key name, a section) in full."""
    import json
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "MOORAGE_METRICS_TOKEN": "scrape-token-0123456789",
        "MOORAGE_AUTH_OIDC_CLIENT_SECRET": "oidc-client-secret-0123",
    }
    r = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["metrics"]["token"] == "***" and doc["auth"]["oidc"]["client_secret"] == "***"
    assert doc["auth"]["token"]["issuer"] == "moorage"
    assert "0123456789" not in r.stdout and "secret-0123" not in r.stdout


async def test_a_refresh_loop_stops_when_its_cancelled_read_fails_on_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's shutdown cancels the refresh loop. When the cancellation hit a read, SQLAlchemy
    could raise another error while cleaning up the connection ("Can't reconnect until invalid
    transaction is rolled back"); the loop logged it as a failed read and went on, and the
    worker's shutdown waited for it forever (stop 20's CI: a two-worker server never exited)."""
    import moorage.metrics.database as database

    reading = asyncio.Event()

    async def read_then_fail_on_cancel(conn: Any, *_: Any) -> Any:
        reading.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise sa.exc.InvalidRequestError(
                "Can't reconnect until invalid transaction is rolled back."
            ) from None

    monkeypatch.setattr(database, "read_snapshot", read_then_fail_on_cancel)
    engine = create_engine(f"sqlite:///{tmp_path}/m.db", 1)
    try:
        gauges = DatabaseGauges(engine, _metrics(), ttl=0.01)
        task = asyncio.create_task(gauges.run())
        await asyncio.wait_for(reading.wait(), 10)
        task.cancel()  # once, as NodeMetrics.stop did
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done and task.cancelled()
    finally:
        await engine.dispose()
