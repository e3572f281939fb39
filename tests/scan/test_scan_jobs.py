"""A scan-on-push job's own bookkeeping, in process on SQLite and PostgreSQL: its result row
says ``running`` from the claim on, and a scan whose layers are all cached costs two write
transactions (the claim, and the result with the job's success) and one read of the layer
cache."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from moorage.config import load_config
from moorage.db import queries as core_q
from moorage.db.engine import upgrade
from moorage.db.queries import now
from moorage.db.schema import jobs
from moorage.oci import mediatypes as mt
from moorage.runtime import Runtime, start_runtime, stop_runtime
from moorage.scan.inventory import RECORD_VERSION
from moorage.scan.service import queue_scan
from moorage.scan.tables import scan_layers, scan_results
from tests.conftest import postgres_database

from .layers import layer

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
RECORD = json.dumps({"v": RECORD_VERSION, "files": {}, "removed": [], "opaque": [], "errors": []})


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
async def rt(tmp_path: Path, db_url: str | None) -> AsyncIterator[Runtime]:
    overrides: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "auth.enabled": False,
        "jobs.poll_seconds": 30,
        "scanning.on_push": False,
    }
    if db_url:
        overrides["database.url"] = db_url
    config = load_config(None, environ={}, overrides=overrides)
    await upgrade(config.database_url)
    runtime = await start_runtime(config, run_jobs=False)
    try:
        yield runtime
    finally:
        await stop_runtime(runtime)


async def _image(rt: Runtime, n: int) -> str:
    """A manifest of two cached layers, its scan queued; returns its digest."""
    layers = ["sha256:" + hashlib.sha256(b"layer%d.%d" % (n, i)).hexdigest() for i in range(2)]
    cfg = "sha256:" + hashlib.sha256(b"cfg%d" % n).hexdigest()
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg, "size": 2},
        "layers": [{"mediaType": LAYER, "digest": d, "size": 10} for d in layers],
    }
    payload = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    async with rt.ctx.write_engine.begin() as conn:
        for d in layers:
            await conn.execute(
                sa.insert(scan_layers).values(
                    digest=d, version=RECORD_VERSION, record=RECORD, analyzed_at=now()
                )
            )
        repo_id = await core_q.ensure_repository(conn, "t/img", "t")
        await core_q.insert_manifest(
            conn, repo_id, digest=digest, media_type=mt.OCI_MANIFEST, artifact_type=None,
            subject_digest=None, config_digest=cfg, annotations=None, payload=payload,
            references=[],
        )  # fmt: skip
        assert await queue_scan(conn, "t/img", digest, force=False)
    return digest


async def test_a_cached_scan_job_is_two_write_transactions(rt: Runtime) -> None:
    digests = [await _image(rt, n) for n in range(3)]
    await rt.jobs.run_once()  # the first poll also looks for stale jobs: not counted
    await asyncio.gather(*rt.jobs._running.values())
    async with rt.ctx.write_engine.begin() as conn:  # the other kinds' at-start jobs: not ours
        await conn.execute(sa.delete(jobs).where(jobs.c.kind != "scan.manifest"))
    counts = {"write": 0, "read": 0}

    def on_begin(conn: Any) -> None:
        counts["write" if conn.get_execution_options().get("moorage_write") else "read"] += 1

    sa.event.listen(rt.ctx.engine.sync_engine, "begin", on_begin)
    try:
        rt.jobs._requeued_at = asyncio.get_running_loop().time()  # no stale-job look this poll
        assert await rt.jobs.run_once() == 1  # scans have one slot of their own
        claim_writes = counts["write"]
        # The claim wrote the scan's "running" with the job's (its task has not run yet).
        async with rt.ctx.engine.connect() as conn:
            status = {
                r.digest: r.status
                for r in await conn.execute(sa.select(scan_results.c.digest, scan_results.c.status))
            }
            job = (
                await conn.execute(
                    sa.select(jobs.c.state, jobs.c.claimed_by).where(
                        jobs.c.state == "running", jobs.c.kind == "scan.manifest"
                    )
                )
            ).one()
        assert claim_writes == 1
        assert status[digests[0]] == "done" and status[digests[1]] == "running"
        assert (job.state, job.claimed_by) == ("running", rt.jobs.worker)
        reads = counts["read"]
        await asyncio.gather(*rt.jobs._running.values())
    finally:
        sa.event.remove(rt.ctx.engine.sync_engine, "begin", on_begin)
    # The claim; the result row with the job's success. Reads: the manifest, the layer cache.
    assert counts["write"] == 2
    assert counts["read"] - reads <= 3
    async with rt.ctx.engine.connect() as conn:
        rows = {
            r.digest: r
            for r in await conn.execute(
                sa.select(scan_results).where(scan_results.c.digest.in_(digests))
            )
        }
        states = [r.state for r in await conn.execute(sa.select(jobs.c.state))]
    assert rows[digests[1]].status == "done" and rows[digests[1]].scanned_at is not None
    assert json.loads(rows[digests[1]].summary)["critical"] == 0
    assert states.count("succeeded") == 2 and states.count("queued") == 1


async def test_scans_that_need_one_new_layer_at_once_read_it_once(rt: Runtime) -> None:
    """Four scans of images on one new base layer, at the same time (scan-on-push of four
    pushes): the layer is read from storage once; the scan that read it counts it, the others
    wait for it and count nothing (CI saw [1, 1, 2, 2] layers analyzed where [1, 1, 1, 2]
    was right: the per-scan count came from a counter every scan of the process shared)."""
    from moorage.storage.base import blob_path

    blob = layer({"etc/alpine-release": b"3.14.2\n"})
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    await rt.ctx.storage.put_bytes(blob_path("sha256", digest.split(":")[1]), blob)
    scan = rt.services["scan"]
    results = await asyncio.gather(*(scan.counted_inventory([digest]) for _ in range(4)))
    assert sorted(n for _, n in results) == [0, 0, 0, 1]
    assert scan.layers_analyzed == 1
    assert len({json.dumps(inv, sort_keys=True, default=str) for inv, _ in results}) == 1
    # Now cached: nothing more is read.
    _, n = await scan.counted_inventory([digest])
    assert n == 0 and scan.layers_analyzed == 1
