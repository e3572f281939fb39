"""A node's job runner as its own process, for the multi-process tests.

    python -m tests.jobs.worker DATABASE_URL OUT_FILE NAME [--hang]

Handlers append one line per run to OUT_FILE ("<kind> <n> <name>"; O_APPEND writes of one short
line are atomic). With --hang, ``test.slow`` never returns (the node is killed while running it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from moorage.db.engine import create_engine, writer
from moorage.jobs.config import JobsConfig
from moorage.jobs.runner import JobRunner


async def main(url: str, out: str, name: str, hang: bool, stale: float) -> None:
    engine = create_engine(url, 4)
    config = JobsConfig(
        poll_seconds=0.05,
        heartbeat_seconds=0.2,
        stale_seconds=stale,
        concurrency=4,
        retry_base_seconds=0.05,
    )
    runner = JobRunner(writer(engine), config, worker=name)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(kind: str, payload: dict[str, Any]) -> None:
        os.write(fd, f"{kind} {payload.get('n')} {name}\n".encode())

    async def record(payload: dict[str, Any]) -> int:
        await asyncio.sleep(0.002)
        note("test.record", payload)
        return int(payload["n"])

    async def slow(payload: dict[str, Any]) -> str:
        note("test.slow-start", payload)
        if hang:
            await asyncio.Event().wait()
        note("test.slow", payload)
        return name

    runner.register("test.record", record)
    runner.register("test.slow", slow)
    runner.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    flags = sys.argv[4:]
    # --stale=SECONDS: how long a silent node keeps its jobs (default 1.5 s: dead nodes' jobs
    # move on quickly).
    stale = [float(f.split("=", 1)[1]) for f in flags if f.startswith("--stale=")]
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], "--hang" in flags, *stale or [1.5]))
