"""Benchmark: what a quota check costs a push, by namespace size.

A namespace's usage is computed from the reference tables at each push into a namespace with a
quota (moorage/lifecycle/quota.py, docs/lifecycle.md "Quotas"). This generates metadata only
(no blob bytes): one namespace of R repositories holding M manifests in all, each referencing a
config, a base layer shared by every manifest of its repository, and L own layers, then times
``usage()`` (median and best of the rounds) — the time the namespace's lock is held beyond the
push itself.

    PYTHONPATH=. python bench/quota_usage.py [--manifests 1000,10000,50000] [--layers 4]
        [--repositories 50] [--rounds 5] [--database-url postgresql://...]

Run under ``flock /tmp/moorage-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moorage.db.engine import create_engine, upgrade  # noqa: E402
from moorage.db.schema import (  # noqa: E402
    blobs,
    manifest_references,
    manifests,
    repositories,
)
from moorage.lifecycle.quota import added_bytes, usage  # noqa: E402
from moorage.oci.manifest import parse_manifest  # noqa: E402
from moorage.services.rules import ManifestWrite, Requester  # noqa: E402


def digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


async def fill(url: str, ns: str, total: int, layers: int, repos: int) -> None:
    engine = create_engine(url, 2)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            repo_ids = []
            for r in range(repos):
                res = await conn.execute(
                    sa.insert(repositories).values(name=f"{ns}/r{r}", namespace=ns, created_at=now)
                )
                repo_ids.append(int(res.inserted_primary_key[0]))  # type: ignore[index]
            blob_rows, man_rows, ref_rows = [], [], []
            for r in range(repos):
                blob_rows.append(
                    {"digest": digest(ns, "base", r), "size": 30_000_000, "created_at": now}
                )
            mid = 0
            for i in range(total):
                r = i % repos
                own = [digest(ns, i, k) for k in range(layers + 1)]  # config + layers
                for k, d in enumerate(own):
                    blob_rows.append(
                        {"digest": d, "size": 1000 if k == 0 else 2_000_000, "created_at": now}
                    )
                mid += 1
                man_rows.append(
                    {
                        "repository_id": repo_ids[r],
                        "digest": digest(ns, "m", i),
                        "media_type": "application/vnd.oci.image.manifest.v1+json",
                        "size": 800,
                        "payload": b"{}",
                        "created_at": now,
                    }
                )
                ref_rows.extend(
                    {"manifest_id": None, "digest": d, "kind": "blob", "_i": i}
                    for d in [digest(ns, "base", r), *own]
                )
            await conn.execute(sa.insert(blobs), blob_rows)
            await conn.execute(sa.insert(manifests), man_rows)
            ids = {
                row.digest: row.id
                for row in await conn.execute(
                    sa.select(manifests.c.id, manifests.c.digest).where(
                        manifests.c.repository_id.in_(repo_ids)
                    )
                )
            }
            refs = [
                {
                    "digest": x["digest"],
                    "kind": "blob",
                    "manifest_id": ids[digest(ns, "m", x["_i"])],
                }
                for x in ref_rows
            ]
            for k in range(0, len(refs), 20_000):
                await conn.execute(sa.insert(manifest_references), refs[k : k + 20_000])
    finally:
        await engine.dispose()


async def time_usage(url: str, ns: str, rounds: int) -> tuple[float, float, int, float]:
    """(median, best, usage) of ``usage()``, and the median of ``added_bytes()`` for a new
    manifest naming the namespace's first base layer and one layer of its own (what a push
    pays when the bound says it fits)."""
    engine = create_engine(url, 2)
    took, added = [], []
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(ns, "newconfig"),
            "size": 10,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 10}
            for d in (digest(ns, "base", 0), digest(ns, "newlayer"))
        ],
    }
    payload = __import__("json").dumps(doc).encode()
    parsed = parse_manifest(payload, "application/vnd.oci.image.manifest.v1+json")
    try:
        async with engine.connect() as conn:
            repo_id = await conn.scalar(
                sa.select(repositories.c.id).where(repositories.c.name == f"{ns}/r0")
            )
        write = ManifestWrite(
            f"{ns}/r0",
            int(repo_id or 0),
            digest(ns, "newmanifest"),
            ("t",),
            parsed,
            len(payload),
            Requester.system(),
        )
        for _ in range(rounds):
            async with engine.connect() as conn:
                t0 = time.perf_counter()
                used = await usage(conn, ns)
                took.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await added_bytes(conn, write)
                added.append(time.perf_counter() - t0)
    finally:
        await engine.dispose()
    return statistics.median(took), min(took), used, statistics.median(added)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifests", default="1000,10000,50000")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repositories", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--keep", default=None, help="SQLite file to keep (for EXPLAIN)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = a.database_url or f"sqlite:///{a.keep or tmp + '/bench.db'}"
        await upgrade(url)
        print(f"database: {url.split(':')[0]}; {a.layers} own layers + 1 shared base per manifest")
        for n, total in enumerate(int(x) for x in a.manifests.split(",")):
            ns = f"bench{n}{int(time.time()) % 100000}"
            t0 = time.perf_counter()
            await fill(url, ns, total, a.layers, a.repositories)
            filled = time.perf_counter() - t0
            med, best, used, add = await time_usage(url, ns, a.rounds)
            refs = total * (a.layers + 2)
            print(
                f"{total:>7} manifests, {refs:>8} references: usage() median {med * 1000:8.1f} ms,"
                f" best {best * 1000:8.1f} ms; added_bytes() median {add * 1000:6.2f} ms"
                f" ({used / 2**30:.1f} GiB; filled in {filled:.0f} s)"
            )


if __name__ == "__main__":
    asyncio.run(main())
