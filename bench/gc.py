"""Online GC at registry scale: generated metadata (manifests, blob rows, links, references,
tags) inserted in bulk into a fresh database, small real blobs written to the store for the
garbage (and for a sample of live blobs, checked afterwards), then one GC pass timed phase by
phase (manifests reviewed and deleted, blob rows decided and deleted, stored objects deleted).

    python bench/gc.py                                  # the issue's sizes, filesystem and S3
    python bench/gc.py --manifests 20000 --garbage 2000 --storage fs
    python bench/gc.py --linearity                      # same garbage, registries 10x apart

Shape of the generated registry: ``--manifests`` image manifests in ``--repositories``
repositories, each referencing ``--blobs-per-manifest`` blobs of its own (config + layers) and
one base layer shared from a pool of ``--shared`` blobs; every blob is linked into its
repository. ``--garbage`` of the manifests are untagged and were untagged long ago (one
``tag_history`` row each), queued for review the way a tag move queues them; all others are
tagged. A pass then removes the garbage manifests and their own blobs (garbage x
blobs-per-manifest blob rows and objects) and keeps the shared base layers.

Only the garbage blobs and ``--live-sample`` live blobs exist in the store (writing a million
files would measure the disk, not GC): a pass never lists or reads the store, it deletes what
the database says. The live sample is checked to still be there after the pass.

Storage: ``fs`` (a temporary directory) and ``s3`` (moto on loopback, started and stopped by
its PID; objects deleted with batched DeleteObjects, 1,000 keys a request). Database: SQLite
(default) or ``--database-url postgresql://...`` (a fresh database is made there and dropped).
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from moorage.db import engine as db_engine  # noqa: E402
from moorage.db.meta import metadata  # noqa: E402
from moorage.db.schema import (  # noqa: E402
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tag_history,
    tags,
)
from moorage.lifecycle.config import GCConfig  # noqa: E402
from moorage.lifecycle.gc import Collector, digest_path  # noqa: E402
from moorage.lifecycle.tables import gc_blob_tombstones, gc_manifest_review  # noqa: E402
from moorage.storage.base import StorageDriver  # noqa: E402
from moorage.storage.filesystem import FilesystemDriver  # noqa: E402

CHUNK = 10_000  # rows per INSERT batch
MEDIA = "application/vnd.oci.image.manifest.v1+json"
ACCESS_KEY, SECRET_KEY = "bench-key", "bench-secret"


def blob_content(i: int) -> bytes:
    return b"moorage gc bench blob %d\n" % i


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Shape:
    manifests: int
    garbage: int
    blobs_per_manifest: int = 10
    shared: int = 1000
    repositories: int = 1000
    live_sample: int = 2000

    @property
    def blob_rows(self) -> int:
        return self.manifests * self.blobs_per_manifest + self.shared

    def garbage_manifest(self, m: int) -> bool:
        """Garbage manifests spread evenly over the registry (every k-th)."""
        if self.garbage <= 0:
            return False
        step = self.manifests // self.garbage
        return m % step == 0 and m // step < self.garbage


@dataclass
class Result:
    label: str
    storage: str
    database: str
    manifests: int
    blob_rows: int
    garbage_manifests: int
    garbage_blobs: int
    generate_s: float
    write_objects_s: float
    seconds: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0
    pass_cpu_s: float = 0.0  # this process's CPU (all threads: SQLite runs in one) in the pass
    removed_manifests: int = 0
    removed_blobs: int = 0
    objects_deleted: int = 0
    deletions_per_s: float = 0.0
    db_per_s: float = 0.0
    bytes_per_s: float = 0.0
    checks: str = ""


# --- the registry -----------------------------------------------------------------------------


class Rows:
    """Bulk inserts: SQLite through the sqlite3 module (executemany in one transaction; what
    SQLAlchemy would store, timestamps as its naive-UTC text), PostgreSQL through SQLAlchemy."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.sqlite = url.startswith("sqlite")
        self.pending: dict[sa.Table, list[dict[str, Any]]] = {}
        self.count = 0
        self._db: Any = None
        if self.sqlite:
            import sqlite3

            self._db = sqlite3.connect(url.removeprefix("sqlite:///"))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")

    def add(self, table: sa.Table, row: dict[str, Any]) -> None:
        self.pending.setdefault(table, []).append(row)
        self.count += 1

    @staticmethod
    def _value(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return v

    async def flush(self, force: bool = False) -> None:
        if not force and self.count < CHUNK * 3:
            return
        if self.sqlite:
            for table, rows in self.pending.items():
                if rows:
                    cols = list(rows[0])
                    sql = (
                        f"INSERT INTO {table.name} ({', '.join(cols)}) "
                        f"VALUES ({', '.join('?' for _ in cols)})"
                    )
                    self._db.executemany(
                        sql, [tuple(self._value(r[c]) for c in cols) for r in rows]
                    )
            self._db.commit()
        else:
            # Parents before children: PostgreSQL checks the foreign keys (a chunk can start
            # with a link to a blob whose row is later in the same chunk).
            order = {t: i for i, t in enumerate(metadata.sorted_tables)}
            async with self.engine.begin() as conn:
                for table, rows in sorted(self.pending.items(), key=lambda kv: order[kv[0]]):
                    if rows:
                        await conn.execute(sa.insert(table), rows)
        self.pending = {}
        self.count = 0

    async def close(self) -> None:
        await self.flush(force=True)
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


async def generate(url: str, engine: AsyncEngine, shape: Shape) -> list[int]:
    """Insert the registry's rows; returns the ids of the garbage blobs (a blob's content is
    ``blob_content(id)``)."""
    old = datetime.now(UTC) - timedelta(days=30)
    long_ago = old + timedelta(days=1)
    garbage_blobs: list[int] = []
    shared = [sha(blob_content(-1 - i)) for i in range(shape.shared)]
    out = Rows(url, engine)
    for r in range(shape.repositories):
        out.add(
            repositories,
            {
                "id": r + 1,
                "name": f"bench/r{r}",
                "namespace": "bench",
                "visibility": "private",
                "description": "",
                "pull_count": 0,
                "push_count": 0,
                "created_at": old,
            },
        )
    for i, d in enumerate(shared):
        out.add(
            blobs, {"id": i + 1, "digest": d, "size": len(blob_content(-1 - i)), "created_at": old}
        )
    blob_id = shape.shared
    shared_links: set[tuple[int, int]] = set()
    for m in range(shape.manifests):
        repo_id = m % shape.repositories + 1
        payload = b'{"schemaVersion":2,"bench":%d}' % m
        digest = sha(payload)
        mid = m + 1
        out.add(
            manifests,
            {
                "id": mid,
                "repository_id": repo_id,
                "digest": digest,
                "media_type": MEDIA,
                "size": len(payload),
                "payload": payload,
                "created_at": old,
            },
        )
        base = (m // 10) % shape.shared  # never all of a shared layer's users garbage
        refs = [shared[base]]
        if (repo_id, base + 1) not in shared_links:
            shared_links.add((repo_id, base + 1))
            out.add(
                repository_blobs, {"repository_id": repo_id, "blob_id": base + 1, "created_at": old}
            )
        garbage = shape.garbage_manifest(m)
        for _ in range(shape.blobs_per_manifest):
            blob_id += 1
            content = blob_content(blob_id)
            d = sha(content)
            refs.append(d)
            if garbage:
                garbage_blobs.append(blob_id)
            out.add(blobs, {"id": blob_id, "digest": d, "size": len(content), "created_at": old})
            out.add(
                repository_blobs, {"repository_id": repo_id, "blob_id": blob_id, "created_at": old}
            )
        for d in refs:
            out.add(manifest_references, {"manifest_id": mid, "digest": d, "kind": "blob"})
        tag = {"repository_id": repo_id, "name": f"t{m}"}
        if garbage:  # untagged long ago (a tag moved off it), queued for review then
            out.add(tag_history, {**tag, "manifest_digest": digest, "replaced_at": old})
            out.add(
                gc_manifest_review,
                {
                    "repository_id": repo_id,
                    "digest": digest,
                    "review_after": long_ago,
                    "reason": "tag_moved",
                    "created_at": old,
                },
            )
        else:
            out.add(tags, {**tag, "manifest_id": mid, "created_at": old, "updated_at": old})
        await out.flush()
    await out.close()
    return garbage_blobs


def live_sample(shape: Shape) -> list[int]:
    """Ids of live blobs (of tagged manifests) spread over the registry."""
    out: list[int] = []
    step = max(1, shape.manifests // max(1, shape.live_sample))
    for m in range(0, shape.manifests, step):
        if shape.garbage_manifest(m):
            continue
        out.append(shape.shared + m * shape.blobs_per_manifest + 1)
        if len(out) >= shape.live_sample:
            break
    return out


async def write_objects(storage: StorageDriver, ids: list[int]) -> None:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        content = blob_content(i)
        async with sem:
            await storage.put_bytes(digest_path(sha(content)), content)

    for start in range(0, len(ids), 5000):
        await asyncio.gather(*(one(i) for i in ids[start : start + 5000]))


def write_files(root: Path, ids: list[int]) -> None:
    """The filesystem store's layout, written directly (the driver's put costs a thread hop a
    file; this is setup, not the measurement)."""
    for i in ids:
        content = blob_content(i)
        full = root / digest_path(sha(content))
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(content)


# --- databases and stores ---------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    if kind.startswith("postgresql"):
        name = f"moorage_gcbench_{uuid.uuid4().hex[:10]}"
        admin = kind

        def psql(sql: str) -> None:
            subprocess.run(["psql", admin, "-q", "-c", sql], check=True, capture_output=True)

        psql(f'CREATE DATABASE "{name}"')
        try:
            yield admin.rsplit("/", 1)[0] + "/" + name
        finally:
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        yield f"sqlite:///{work / 'gc-bench.db'}"


class Moto:
    """moto's S3 server on a free loopback port (stopped by its own PID)."""

    def __init__(self) -> None:
        import servers

        self.port = servers.free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto did not start") from None
                time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def driver(self, bucket: str) -> StorageDriver:
        from moorage.storage.s3 import S3Driver, S3Settings

        d = S3Driver(
            S3Settings(
                bucket=bucket,
                endpoint=self.endpoint,
                access_key_id=ACCESS_KEY,
                secret_access_key=SECRET_KEY,
                path_style=True,
            )
        )
        await d._send("PUT", None)  # CreateBucket (path style: PUT /bucket)
        return d


# --- one scenario -----------------------------------------------------------------------------


async def scenario(
    label: str, shape: Shape, storage_kind: str, db: str, work: Path, moto: Moto | None
) -> Result:
    with database(db, work) as url:
        await asyncio.to_thread(db_engine.upgrade_sync, url)
        engine = db_engine.create_engine(url, 4)
        try:
            t = time.perf_counter()
            garbage = await generate(url, engine, shape)
            generated = time.perf_counter() - t
            live = live_sample(shape)
            t = time.perf_counter()
            if storage_kind == "fs":
                root = work / "storage"
                storage: StorageDriver = FilesystemDriver(str(root))
                await asyncio.to_thread(write_files, root, garbage + live)
            else:
                assert moto is not None
                storage = await moto.driver(f"gcbench-{uuid.uuid4().hex[:8]}")
                await write_objects(storage, garbage + live)
            written = time.perf_counter() - t
            # The production windows, except the grace: the blobs a manifest's removal queues
            # are reviewed in the same pass (``moorage gc run --grace 0``).
            cfg = GCConfig(
                grace_seconds=0,
                untagged_seconds=86400,
                history_days=7,
                pin_pulled_within_seconds=7 * 86400,
            )
            collector = Collector(db_engine.writer(engine), storage, cfg)
            cpu = time.process_time()
            report = await collector.run_pass(trigger="bench", actor="bench")
            cpu = time.process_time() - cpu
            res = Result(
                label=label,
                storage=storage_kind,
                database="postgresql" if db.startswith("postgresql") else "sqlite",
                manifests=shape.manifests,
                blob_rows=shape.blob_rows,
                garbage_manifests=shape.garbage,
                garbage_blobs=len(garbage),
                generate_s=round(generated, 1),
                write_objects_s=round(written, 1),
                seconds={k: round(v, 2) for k, v in report.seconds.items()},
                total_s=round(sum(report.seconds.values()), 2),
                pass_cpu_s=round(cpu, 2),
                removed_manifests=len(report.manifests),
                removed_blobs=len(report.blobs),
                objects_deleted=report.bytes_deleted,
            )
            db_s = report.seconds["manifests"] + report.seconds["blobs"]
            res.deletions_per_s = round(res.removed_blobs / max(res.total_s, 1e-9))
            res.db_per_s = round(res.removed_blobs / max(db_s, 1e-9))
            res.bytes_per_s = round(res.objects_deleted / max(report.seconds["bytes"], 1e-9))
            res.checks = await check(
                engine,
                storage,
                shape,
                [sha(blob_content(i)) for i in garbage],
                [sha(blob_content(i)) for i in live],
                report,
            )
            await storage.close()
            return res
        finally:
            await engine.dispose()
            if storage_kind == "fs":
                shutil.rmtree(work / "storage", ignore_errors=True)


async def check(
    engine: AsyncEngine,
    storage: StorageDriver,
    shape: Shape,
    garbage: list[str],
    live: list[str],
    report: Any,
) -> str:
    """What the pass left: every garbage blob's row and object gone, every live one there."""
    problems = []
    if len(report.manifests) != shape.garbage:
        problems.append(f"removed {len(report.manifests)} manifests, expected {shape.garbage}")
    if {d for d, _ in report.blobs} != set(garbage):
        problems.append(f"removed {len(report.blobs)} blobs, expected exactly {len(garbage)}")
    async with engine.connect() as conn:
        rows = await conn.scalar(sa.select(sa.func.count()).select_from(blobs))
        if rows != shape.blob_rows - len(garbage):
            problems.append(f"{rows} blob rows left, expected {shape.blob_rows - len(garbage)}")
        pending = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(gc_blob_tombstones)
            .where(gc_blob_tombstones.c.bytes_deleted_at.is_(None))
        )
        if pending:
            problems.append(f"{pending} tombstones still pending")
    for d in garbage[:: max(1, len(garbage) // 500)]:
        if await storage.stat(digest_path(d)) is not None:
            problems.append(f"garbage object {d} still stored")
            break
    for d in live[:500]:
        if await storage.stat(digest_path(d)) is None:
            problems.append(f"live object {d} deleted")
            break
    return "; ".join(problems) or "ok"


# --- main -------------------------------------------------------------------------------------


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of the machine's CPU time spent busy over *seconds* (all processes)."""

    def read() -> tuple[int, int]:
        parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts), idle

    t0, i0 = read()
    time.sleep(seconds)
    t1, i1 = read()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--manifests", type=int, default=100_000)
    p.add_argument("--garbage", type=int, default=10_000, help="garbage manifests")
    p.add_argument("--blobs-per-manifest", type=int, default=10)
    p.add_argument("--shared", type=int, default=1000)
    p.add_argument("--repositories", type=int, default=1000)
    p.add_argument("--storage", default="fs,s3", help="fs, s3 or fs,s3")
    p.add_argument("--database-url", default="sqlite", help="sqlite, or postgresql://admin-url")
    p.add_argument(
        "--linearity",
        action="store_true",
        help="instead: the same garbage (--garbage) in a registry of --manifests and of a "
        "tenth of it, filesystem only",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()

    shapes: list[tuple[str, Shape, str]] = []
    if args.linearity:
        for n in (args.manifests, args.manifests // 10):
            s = Shape(n, args.garbage, args.blobs_per_manifest, args.shared, args.repositories)
            shapes.append((f"linearity-{s.blob_rows}", s, "fs"))
    else:
        s = Shape(
            args.manifests, args.garbage, args.blobs_per_manifest, args.shared, args.repositories
        )
        for kind in args.storage.split(","):
            shapes.append((f"{kind}-{s.blob_rows}", s, kind.strip()))

    busy = cpu_busy()
    print(f"machine busy before: {busy:.0%} of {os.cpu_count()} CPUs", flush=True)
    results: list[Result] = []
    moto: Moto | None = None
    try:
        if any(kind == "s3" for _, _, kind in shapes):
            moto = Moto()
        for label, shape, kind in shapes:
            with tempfile.TemporaryDirectory(prefix="moorage-gcbench-") as tmp:
                r = asyncio.run(scenario(label, shape, kind, args.database_url, Path(tmp), moto))
            results.append(r)
            print(json.dumps(asdict(r)), flush=True)
    finally:
        if moto is not None:
            moto.stop()
    print(f"machine busy after: {cpu_busy():.0%}")
    print()
    print(
        "| run | store | db | manifests | blob rows | garbage blobs | phase 1 manifests s "
        "| phase 2 blob rows s | phase 3 objects s | total s | deletions/s | pass CPU s | check |"
    )
    print(
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    for r in results:
        print(
            f"| {r.label} | {r.storage} | {r.database} | {r.manifests:,} | {r.blob_rows:,} "
            f"| {r.removed_blobs:,} | {r.seconds.get('manifests', 0):.2f} "
            f"| {r.seconds.get('blobs', 0):.2f} | {r.seconds.get('bytes', 0):.2f} "
            f"| {r.total_s:.2f} | {r.deletions_per_s:,} | {r.pass_cpu_s:.2f} | {r.checks} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.checks == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
