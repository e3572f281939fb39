"""The job queue's own cost per job, in process (no server): N ``scan.manifest`` jobs whose
layers are all in the layer cache (what scan-on-push costs once a base is known), run through
the real runtime (every capability's job kinds registered, so every pool is polled) and the
real JobRunner on an embedded SQLite data dir.

    flock /tmp/moorage-bench.lock python bench/job_overhead.py --jobs 200

Prints jobs/s (wall, from the first claim to the last finish), CPU ms per job
(``time.process_time`` of this process over the same span: runner + scan + SQLAlchemy +
aiosqlite) and the database transactions per job (counted on the engines with SQLAlchemy
``begin`` events; "write" is the writer engine). ``--trivial`` runs a no-op job kind instead,
to see the queue alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def _bench(data_dir: Path, n: int, trivial: bool) -> dict[str, Any]:
    import sqlalchemy as sa

    from moorage.config import load_config
    from moorage.db import job_queries
    from moorage.db import queries as core_q
    from moorage.db.engine import upgrade
    from moorage.db.queries import now
    from moorage.db.schema import jobs
    from moorage.oci import mediatypes as mt
    from moorage.runtime import start_runtime, stop_runtime
    from moorage.scan.inventory import RECORD_VERSION
    from moorage.scan.service import SCAN_JOB, queue_scan
    from moorage.scan.tables import scan_layers

    config = load_config(
        None,
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "auth.enabled": False,
            "jobs.poll_seconds": 0.5,
            "scanning.on_push": False,
            "scanning.attach_sbom": False,
        },
    )
    await upgrade(config.database_url)
    rt = await start_runtime(config, run_jobs=False)
    try:
        kind = "bench.noop"
        done = 0

        async def noop(payload: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True}

        rt.jobs.register(kind, noop)
        base = "sha256:" + hashlib.sha256(b"base").hexdigest()
        record = json.dumps({"v": RECORD_VERSION, "files": {}, "removed": [], "opaque": [],
                             "errors": []})  # fmt: skip
        async with rt.ctx.write_engine.begin() as conn:
            await conn.execute(
                sa.insert(scan_layers).values(
                    digest=base, version=RECORD_VERSION, record=record, analyzed_at=now()
                )
            )
            repo_id = await core_q.ensure_repository(conn, "bench/img", "bench")
            for i in range(n):
                if trivial:
                    await job_queries.enqueue(conn, kind, {"i": i})
                    continue
                app = "sha256:" + hashlib.sha256(b"app%d" % i).hexdigest()
                await conn.execute(
                    sa.insert(scan_layers).values(
                        digest=app, version=RECORD_VERSION, record=record, analyzed_at=now()
                    )
                )
                cfg = "sha256:" + hashlib.sha256(b"cfg%d" % i).hexdigest()
                layer_t = "application/vnd.oci.image.layer.v1.tar+gzip"
                doc = {
                    "schemaVersion": 2,
                    "mediaType": mt.OCI_MANIFEST,
                    "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg, "size": 2},
                    "layers": [
                        {"mediaType": layer_t, "digest": base, "size": 10},
                        {"mediaType": layer_t, "digest": app, "size": 10},
                    ],
                }
                payload = json.dumps(doc).encode()
                digest = "sha256:" + hashlib.sha256(payload).hexdigest()
                await core_q.insert_manifest(
                    conn, repo_id, digest=digest, media_type=mt.OCI_MANIFEST,
                    artifact_type=None, subject_digest=None, config_digest=cfg,
                    annotations=None, payload=payload, references=[],
                )  # fmt: skip
                await queue_scan(conn, "bench/img", digest, force=False)
        counts = {"write": 0, "read": 0}

        def on_begin(conn: Any) -> None:
            write = conn.get_execution_options().get("moorage_write")
            counts["write" if write else "read"] += 1

        sa.event.listen(rt.ctx.engine.sync_engine, "begin", on_begin)
        watched = kind if trivial else SCAN_JOB
        inner = rt.jobs.handlers[watched]
        all_done = asyncio.Event()

        async def counted(payload: dict[str, Any]) -> Any:
            nonlocal done
            out = await inner(payload)
            done += 1
            if done >= n:
                all_done.set()
            return out

        rt.jobs.handlers[watched] = counted
        t0, c0 = time.perf_counter(), time.process_time()
        rt.jobs.start()
        await asyncio.wait_for(all_done.wait(), timeout=600)
        while rt.jobs.running:  # the last finish transaction  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        await rt.jobs.stop()
        async with rt.ctx.engine.connect() as conn:
            states: dict[str, int] = dict(
                (
                    await conn.execute(
                        sa.select(jobs.c.state, sa.func.count())
                        .where(jobs.c.kind == watched)
                        .group_by(jobs.c.state)
                    )
                ).all()
            )
        return {
            "kind": watched,
            "jobs": n,
            "states": states,
            "jobs_per_s": n / wall,
            "cpu_ms_per_job": cpu * 1000 / n,
            "write_tx_per_job": counts["write"] / n,
            "read_tx_per_job": counts["read"] / n,
        }
    finally:
        await stop_runtime(rt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--trivial", action="store_true", help="no-op jobs instead of scans")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="moorage-jobbench-") as tmp:
        (Path(tmp) / "data").mkdir()
        out = asyncio.run(_bench(Path(tmp) / "data", args.jobs, args.trivial))
    print(
        f"{out['jobs']} {out['kind']} jobs {out['states']}: {out['jobs_per_s']:.0f} jobs/s, "
        f"{out['cpu_ms_per_job']:.2f} CPU ms/job, write tx/job {out['write_tx_per_job']:.2f}, "
        f"read tx/job {out['read_tx_per_job']:.2f}"
    )


if __name__ == "__main__":
    main()
