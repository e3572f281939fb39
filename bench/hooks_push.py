"""Cost the webhooks capability adds to a manifest push (its subscriber runs in the push's
transaction: one indexed SELECT on ``webhooks``; with a subscribed webhook, also a delivery row
and a job row).

    python bench/hooks_push.py [--pushes 400] [--rounds 3]

The real Moorage application, in process over SQLite (no sockets): manifest PUTs by tag, driven
through httpx's ASGI transport, in three configurations run alternately — without the
capability, with it and no webhook, with it and one namespace webhook subscribed to pushes (jobs
off, so deliveries only queue). Prints the best round's milliseconds per push of each and the
ratios to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from moorage.app import Moorage  # noqa: E402
from moorage.config import load_config  # noqa: E402
from moorage.db.engine import upgrade  # noqa: E402

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def _round(mode: str, pushes: int) -> float:
    import moorage.runtime
    from moorage.hooks.wiring import CAPABILITY

    caps = () if mode == "no capability" else (CAPABILITY,)
    saved = moorage.runtime.installed
    moorage.runtime.installed = lambda: caps  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="moorage-bench-hooks-") as tmp:
        config = load_config(
            None,
            environ={},
            overrides={
                "data_dir": tmp,
                "auth.enabled": False,
                "jobs.enabled": False,
                "log.access_log": False,
                "webhooks.allowed_networks": ["127.0.0.1/32"],
            },
        )
        await upgrade(config.database_url)
        app = Moorage(config)
        await app.startup()
        try:
            if mode == "one webhook":
                from moorage.hooks.service import create_in

                assert app.ctx is not None
                async with app.ctx.write_engine.begin() as conn:
                    await create_in(
                        conn, config, scope="namespace", target="bench",
                        url="http://127.0.0.1:9/hook", events=["push"], fmt="distribution",
                        secret="bench-secret-0123456789", description="", actor="bench",
                    )  # fmt: skip
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as c:
                cfg = json.dumps({"os": "linux", "architecture": "amd64"}).encode()
                digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
                r = await c.post(f"/v2/bench/app/blobs/uploads/?digest={digest}", content=cfg)
                assert r.status_code == 201, r.text
                doc: dict[str, Any] = {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": digest, "size": len(cfg)},
                    "layers": [],
                }  # fmt: skip
                started = time.perf_counter()
                for i in range(pushes):
                    doc["annotations"] = {"n": str(i)}
                    r = await c.put(
                        f"/v2/bench/app/manifests/t{i}",
                        content=json.dumps(doc).encode(),
                        headers={"Content-Type": MANIFEST},
                    )
                    assert r.status_code == 201, r.text
                return (time.perf_counter() - started) * 1000 / pushes
        finally:
            await app.shutdown()
            moorage.runtime.installed = saved  # type: ignore[assignment]


async def main(pushes: int, rounds: int) -> None:
    modes = ["no capability", "no webhook", "one webhook"]
    results: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):
        for mode in modes:
            results[mode].append(await _round(mode, pushes))
    base = min(results[modes[0]])
    print(f"{pushes} manifest pushes per round, {rounds} rounds, SQLite, pid {os.getpid()}")
    for mode in modes:
        best = min(results[mode])
        print(
            f"{mode:>14}: {best:6.2f} ms/push best, {statistics.median(results[mode]):6.2f} "
            f"median, ×{best / base:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    asyncio.run(main(a.pushes, a.rounds))
