"""Benchmark: matching an image's inventory against a full-size vulnerability database.

Builds an OSV database of the size of osv.dev's Debian + PyPI + npm exports (synthetic records
in their real shapes: DEBIAN-CVE records per source package for Debian 11/12/13 with a heavy
tail — a few packages such as ``linux`` carry thousands —, PyPI and npm GHSA-style records with
ECOSYSTEM/SEMVER ranges), imports it with the real importer (``import_source`` on an all.zip),
then times ``Matcher.match`` on an inventory of N packages (60% Debian, 25% PyPI, 15% npm,
``linux-libc-dev`` among them). Prints the import rate and the match time (median and best of
the rounds) with the process's CPU time beside it (on a busy shared machine wall time
mostly measures waiting for a core). Target (issue 12): 1,000 packages in under 1 s.

    PYTHONPATH=. python bench/vulndb_match.py [--packages 1000] [--rounds 5]
        [--debian 45000 --pypi 15000 --npm 20000] [--database-url postgresql://...]

Run under ``flock /tmp/moorage-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moorage.db.engine import create_engine, upgrade  # noqa: E402
from moorage.scan.model import Inventory, OSInfo, Package  # noqa: E402
from moorage.scan.vulndb.importer import import_source  # noqa: E402
from moorage.scan.vulndb.matcher import Matcher  # noqa: E402

MODIFIED = "2026-11-01T00:00:00Z"
CVSS = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"


def _names(rng: random.Random, prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}-{rng.choice('abcdefgh')}" for i in range(n)]


def _pick(rng: random.Random, names: list[str]) -> str:
    """A heavy tail: low indexes (and ``linux``) get most of the advisories."""
    i = min(int(rng.paretovariate(1.1)) - 1, len(names) - 1)
    return names[i] if rng.random() < 0.5 else rng.choice(names)


def debian_records(rng: random.Random, n: int, names: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        pkg = "linux" if i % 6 == 0 else _pick(rng, names)
        affected = []
        for rel, suffix in (("11", "+deb11u"), ("12", "+deb12u"), ("13", "")):
            fixed = f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}-{rng.randint(1, 5)}{suffix}{rng.randint(1, 9) if suffix else ''}"
            events: list[dict[str, str]] = [{"introduced": "0"}]
            if rng.random() < 0.8:
                events.append({"fixed": fixed})
            affected.append(
                {
                    "package": {
                        "ecosystem": f"Debian:{rel}",
                        "name": pkg,
                        "purl": f"pkg:deb/debian/{pkg}?arch=source",
                    },
                    "ranges": [{"type": "ECOSYSTEM", "events": events}],
                    "ecosystem_specific": {
                        "urgency": rng.choice(
                            ["low", "medium", "high", "unimportant", "not yet assigned"]
                        )
                    },
                }
            )
        out.append(
            {"id": f"DEBIAN-CVE-2025-{i:05d}", "modified": MODIFIED, "upstream": [f"CVE-2025-{i:05d}"],
             "details": "synthetic", "affected": affected}
        )  # fmt: skip
    return out


def language_records(
    rng: random.Random, n: int, eco: str, names: list[str], tag: str
) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        pkg = _pick(rng, names)
        intro = f"{rng.randint(0, 3)}.{rng.randint(0, 9)}.0"
        fixed = f"{rng.randint(4, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
        rtype = "SEMVER" if eco == "npm" else "ECOSYSTEM"
        out.append(
            {"id": f"GHSA-{tag}-{i:05d}", "modified": MODIFIED, "aliases": [f"CVE-2024-{tag}{i:05d}"],
             "summary": "synthetic", "severity": [{"type": "CVSS_V3", "score": CVSS}],
             "database_specific": {"severity": "HIGH"},
             "affected": [{"package": {"ecosystem": eco, "name": pkg},
                           "ranges": [{"type": rtype, "events": [{"introduced": intro}, {"fixed": fixed}]}]}]}
        )  # fmt: skip
    return out


def inventory(
    rng: random.Random, n: int, deb: list[str], pypi: list[str], npm: list[str]
) -> Inventory:
    pkgs: list[Package] = [
        Package("deb", "linux-libc-dev", "6.1.0-1", source_name="linux", source_version="6.1.0-1")
    ]
    n_deb, n_py = int(n * 0.6), int(n * 0.25)
    for name in rng.sample(deb, n_deb - 1):
        v = f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}-{rng.randint(1, 5)}"
        pkgs.append(Package("deb", f"lib{name}", v, source_name=name, source_version=v))
    for name in rng.sample(pypi, n_py):
        pkgs.append(
            Package(
                "pypi", name.upper(), f"{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
            )
        )
    for name in rng.sample(npm, n - n_deb - n_py):
        pkgs.append(
            Package("npm", name, f"{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}")
        )
    return Inventory(OSInfo("debian", "12"), tuple(pkgs), ("sha256:" + "0" * 64,))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--debian", type=int, default=45000)
    ap.add_argument("--pypi", type=int, default=15000)
    ap.add_argument("--npm", type=int, default=20000)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    args = ap.parse_args()
    rng = random.Random(42)
    deb, pypi, npm = _names(rng, "src", 6000), _names(rng, "py", 8000), _names(rng, "js", 12000)
    with tempfile.TemporaryDirectory(prefix="moorage-vulndb-bench-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        await upgrade(url)
        zpath = Path(tmp) / "all.zip"
        records = (
            debian_records(rng, args.debian, deb)
            + language_records(rng, args.pypi, "PyPI", pypi, "py")
            + language_records(rng, args.npm, "npm", npm, "js")
        )
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
            for r in records:
                zf.writestr(f"{r['id']}.json", json.dumps(r))
        n_records = len(records)
        del records  # not held while timing (a server holds no such heap)
        gc.collect()
        engine = create_engine(url, 4)
        try:
            t0 = time.perf_counter()
            result = await import_source(engine, str(zpath))
            t_import = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = await import_source(engine, str(zpath))
            t_reimport = time.perf_counter() - t0
            inv = inventory(rng, args.packages, deb, pypi, npm)
            matcher = Matcher(engine)
            times, cpu, found = [], [], 0
            for _ in range(args.rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                found = len(await matcher.match(inv))
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        finally:
            await engine.dispose()
    backend = url.split(":", 1)[0]
    print(
        f"database ({backend}): {n_records} records ({args.debian} Debian, {args.pypi} PyPI, {args.npm} npm)"
    )
    print(
        f"import: {t_import:.1f} s ({result.added / t_import:.0f} records/s); unchanged re-import {t_reimport:.1f} s ({again.unchanged} unchanged)"
    )
    print(
        f"match {len(inv.packages)} packages: median {statistics.median(times):.3f} s, best {min(times):.3f} s over {args.rounds} rounds (the first, cold caches: {times[0]:.3f} s); {found} findings"
    )
    print(
        f"  CPU time of the process (all threads; what wall time is on an idle machine): median {statistics.median(cpu):.3f} s, first {cpu[0]:.3f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
