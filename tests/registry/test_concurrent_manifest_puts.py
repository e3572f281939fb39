"""200 concurrent manifest PUTs with every capability subscribed (issue 10, the write path).

A manifest PUT runs the content rules and the push's subscribers (scan queue, webhook outbox,
replication triggers, GC queues, tag history) in its transaction. On SQLite those transactions
once each asked for the write lock on their own: SQLite's busy handler is no queue, and under
200 concurrent pushes some waited past busy_timeout and were answered 503 "database
unavailable". Now a process's writers queue in arrival order (db/engine.py _WriterQueue) and a
PUT runs as one unit of the writer thread's group commit (db/inline.py). What must hold: every
PUT answered 201, every tag pulls back its manifest, the subscribers' rows were written in the
same transactions (a pending scan for each manifest), several PUTs shared a transaction, and
the server logged no lock timeouts — neither for the pushes nor for the audit and job writers
that share the lock with them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, sha256

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CLIENTS = 200
PUTS = 400


@pytest.fixture(scope="module")
def server() -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-puts-") as tmp:
        srv = MoorageServer(Path(tmp) / "data", extra_args=["--no-auth"])
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def _manifest(config: bytes, n: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [],
            "annotations": {"n": str(n)},
        }
    ).encode()


async def _load(base: str, repos: list[str], config: bytes) -> list[tuple[int, str]]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
        for repo in repos:
            r = await c.post(
                f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(config)}, content=config
            )
            assert r.status_code == 201, r.text
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(PUTS):
            queue.put_nowait(n)
        answers: list[tuple[int, str]] = []

        async def client() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                r = await c.put(
                    f"/v2/{repos[n % len(repos)]}/manifests/v{n}",
                    content=_manifest(config, n),
                    headers={"Content-Type": MANIFEST},
                )
                answers.append((r.status_code, r.text[:200]))

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return answers


def test_concurrent_manifest_puts_all_succeed_in_shared_transactions(
    server: MoorageServer,
) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    repos = [f"load/r{i}" for i in range(10)]
    before = httpx.get(f"{server.url}/readyz", timeout=60).json()["diagnostics"]["writes"]

    answers = asyncio.run(_load(server.url, repos, config))

    failed = [a for a in answers if a[0] != 201]
    assert not failed, f"{len(failed)} of {PUTS} PUTs failed, e.g. {failed[:3]}"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for n in range(0, PUTS, 37):
            r = c.get(f"/v2/{repos[n % len(repos)]}/manifests/v{n}", headers={"Accept": MANIFEST})
            assert r.status_code == 200
            assert r.content == _manifest(config, n)
    after = httpx.get(f"{server.url}/readyz", timeout=60).json()["diagnostics"]["writes"]
    units = after["operations"] - before["operations"]
    batches = after["transactions"] - before["transactions"]
    # Every PUT ran on the writer thread, and transactions were shared.
    assert units >= PUTS
    assert batches < units
    with sqlite3.connect(server.data_dir / "moorage.db") as db:
        (pending,) = db.execute(
            "SELECT count(*) FROM scan_results WHERE repository LIKE 'load/%'"
        ).fetchone()
    assert pending == PUTS  # scan on push queued each one in the push's transaction
    assert server.log_path is not None
    assert "database is locked" not in server.log_path.read_text(errors="replace")
