"""Audit writer throughput (issue 9, "the audit pipeline must keep up").

    flock /tmp/moorage-bench.lock python bench/audit_writer.py [--events 100000] [--database-url URL]

Queues ``--events`` pull records (what a burst of manifest GETs leaves: actor, repository,
tag, digest, client, user agent, request id, details) in an AuditLog on a freshly migrated
database — a SQLite file in a temporary directory unless ``--database-url`` names a PostgreSQL
one — then times the writer draining them: chain hashing, serialization and the batched inserts,
the activity counters of the same transaction included. Prints records/s for the drain (wall
clock, and per CPU-second of this process: the figure a busy machine distorts least), and
separately the CPU time per record of the sealing alone (hashing + canonical JSON). Then a
burst of ``--events`` pulls into a queue of ``--queue-size``: peak queue length, aggregated
records and memory (tracemalloc peak) while it is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moorage.audit import AuditConfig, AuditEvent, AuditLog  # noqa: E402
from moorage.audit.events import seal  # noqa: E402
from moorage.db.engine import create_engine, upgrade  # noqa: E402


def pull(i: int) -> AuditEvent:
    return AuditEvent(
        "manifest.pull",
        actor=f"user{i % 7}",
        actor_type="user",
        repository=f"team/app{i % 13}",
        tag="latest",
        digest="sha256:" + f"{i % 97:064x}",
        client_addr=f"10.0.{i % 5}.{i % 200}",
        user_agent="containerd/1.7.20",
        request_id=f"{i:016x}",
        details={"status": 200},
    )


async def drain(url: str, n: int) -> tuple[float, float]:
    engine = create_engine(url)
    audit = AuditLog(engine, AuditConfig(queue_size=max(n, 1), flush_interval_ms=60000))
    await audit.start()
    try:
        for i in range(n):
            audit.record_nowait(pull(i))
        start, cpu = time.perf_counter(), time.process_time()
        await audit.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert audit.written >= n, (audit.written, n)
    finally:
        await audit.stop()
        await engine.dispose()
    return n / elapsed, n / cpu


def seal_cost(n: int) -> float:
    events = [pull(i) for i in range(n)]
    prev = "0" * 64
    start = time.process_time()
    for i, e in enumerate(events):
        prev = seal(e, i + 1, prev).hash
    return (time.process_time() - start) / n * 1e6


async def burst(url: str, n: int, queue_size: int) -> dict[str, float]:
    engine = create_engine(url)
    audit = AuditLog(engine, AuditConfig(queue_size=queue_size))
    await audit.start()
    tracemalloc.start()
    peak_queue = 0
    try:
        for i in range(n):
            audit.record_nowait(pull(i))
            if i % 1000 == 0:
                peak_queue = max(peak_queue, audit.pending)
                await asyncio.sleep(0)  # let the writer run, as a server's event loop would
        _, peak_mem = tracemalloc.get_traced_memory()
        await audit.stop()
    finally:
        tracemalloc.stop()
        await engine.dispose()
    return {"peak_queue": peak_queue, "written": audit.written, "peak_mib": peak_mem / 2**20}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--queue-size", type=int, default=10_000)
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="moorage-auditbench-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/moorage.db"
        await upgrade(url)
        backend = url.split(":", 1)[0]
        rate, per_cpu = await drain(url, args.events)
        print(
            f"audit writer, {backend}: {args.events} pull records drained at {rate:,.0f}/s "
            f"wall, {per_cpu:,.0f} per CPU-second (all threads of this process)"
        )
        print(f"sealing alone (hash + canonical JSON): {seal_cost(20_000):.1f} us CPU per record")
        b = await burst(url, args.events, args.queue_size)
        print(
            f"burst of {args.events} pulls, queue_size {args.queue_size}: peak queue "
            f"{b['peak_queue']:.0f}, records written {b['written']:.0f}, "
            f"tracemalloc peak {b['peak_mib']:.1f} MiB"
        )


if __name__ == "__main__":
    asyncio.run(main())
