"""The upload invariants under group commit (issue 10), with a crash in the middle of the load.

Thirty-two clients push blobs (POST, PATCH, PUT) and tagged manifests while the server batches
their database writes (many operations share one transaction: /readyz counts them).
The server is then SIGKILLed under that load — with this many writers queued, inside a batch —
and restarted. What must hold (docs/architecture.md, "Upload invariants"):

- every blob and manifest whose push was answered 201 is there, whole;
- every ``blobs`` row points at complete bytes (size and digest checked on disk) — a blob row
  only after its bytes are durable, never a partial blob visible;
- every link (``repository_blobs``) points at a blob row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, postgres_database, sha256

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def own_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """A server with a database of its own: the checks below read every row of it."""
    with tempfile.TemporaryDirectory(prefix="moorage-batch-") as tmp:
        database = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with database as url:
            srv = MoorageServer(Path(tmp) / "data", database_url=url, extra_args=["--no-auth"])
            srv.start()
            try:
                yield srv
            finally:
                srv.stop()


def _rows(srv: MoorageServer, sql: str) -> list[tuple[str, ...]]:
    if srv.database_url is None:
        with sqlite3.connect(srv.data_dir / "moorage.db") as conn:
            return [tuple(str(v) for v in row) for row in conn.execute(sql)]
    out = subprocess.run(
        ["psql", srv.database_url, "-AtF", "\t", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line]


def _push(c: httpx.Client, repo: str, n: int, acked: list[tuple[str, str, bytes]]) -> None:
    blob = os.urandom(4096 + n)
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    r = c.patch(r.headers["Location"], content=blob)
    r = c.put(r.headers["Location"], params={"digest": sha256(blob)})
    if r.status_code != 201:
        raise RuntimeError(r.text)
    acked.append(("blob", sha256(blob), blob))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(blob),
                "size": len(blob),
            },
            "layers": [],
        }
    ).encode()
    r = c.put(f"/v2/{repo}/manifests/t{n}", content=manifest, headers={"Content-Type": MANIFEST})
    if r.status_code != 201:
        raise RuntimeError(r.text)
    acked.append(("tag", f"t{n}", manifest))


def test_invariants_hold_when_killed_mid_batch(own_server: MoorageServer) -> None:
    stop = threading.Event()
    acked: dict[str, list[tuple[str, str, bytes]]] = {}

    def client(i: int) -> None:
        repo = f"batch/c{i}"
        mine = acked.setdefault(repo, [])
        with httpx.Client(base_url=own_server.url, timeout=30) as c:
            n = 0
            while not stop.is_set():
                try:
                    _push(c, repo, n, mine)
                except (httpx.HTTPError, RuntimeError):
                    if stop.is_set():
                        return
                    time.sleep(0.05)
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while sum(len(v) for v in acked.values()) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Under 32 pushers on a busy 2-core machine /readyz can take longer than httpx's 5 s.
        writes = httpx.get(f"{own_server.url}/readyz", timeout=60).json()["diagnostics"]["writes"]
        own_server.stop(signal.SIGKILL)  # under load: writers queued, a batch in flight
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert sum(len(v) for v in acked.values()) >= 300
    # Group commit happened: more operations than transactions.
    assert writes["operations"] > writes["transactions"], writes

    own_server.start()
    with httpx.Client(base_url=own_server.url, timeout=30) as c:
        for repo, items in acked.items():
            for kind, ref, body in items:
                if kind == "blob":
                    r = c.get(f"/v2/{repo}/blobs/{ref}")
                else:
                    r = c.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST})
                assert r.status_code == 200 and r.content == body, (repo, kind, ref)

    store = own_server.data_dir / "storage"
    for digest, size in _rows(own_server, "SELECT digest, size FROM blobs"):
        algorithm, hex_ = digest.split(":")
        data = (store / "blobs" / algorithm / hex_[:2] / hex_).read_bytes()
        assert len(data) == int(size) and hashlib.sha256(data).hexdigest() == hex_, digest
    dangling = _rows(
        own_server,
        "SELECT rb.blob_id FROM repository_blobs rb LEFT JOIN blobs b ON b.id = rb.blob_id"
        " WHERE b.id IS NULL",
    )
    assert dangling == []
