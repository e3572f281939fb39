#!/usr/bin/env python3
"""The push/pull workload on one Moorage node beside three nodes behind HAProxy, in one run.

    python bench/ha.py                         # S3 (moto), 12 images, 256 MiB blob, 2 rounds
    python bench/ha.py --storage filesystem    # a shared directory instead of S3
    python bench/ha.py --images 24 --big-mib 512 --rounds 3 --duration 5

Both targets use PostgreSQL (a database each, on 127.0.0.1:5432, dropped afterwards) and the same
store kind (S3: one moto server, a bucket each). The cluster is three ``moorage serve`` processes
with one configuration and HAProxy running deploy/haproxy.cfg, exactly as tests/ha runs them.
Rounds alternate the order of the targets; the best round is kept. Everything runs on 127.0.0.1
— on a 2-core machine three nodes share the same two cores as one, so the figures show what the
load balancer and the shared state cost, not what more machines would add.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import measure  # noqa: E402
import oci_images  # noqa: E402
import s3 as s3bench  # noqa: E402
import servers  # noqa: E402
from run import interleave  # noqa: E402

from tests.ha.harness import HAProxy, wait_for  # noqa: E402

MB = 1e6
PG_ADMIN = os.environ.get("MOORAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Target:
    name: str
    base_url: str
    registry: str
    skopeo: measure.Skopeo
    work: Path
    samples: dict[str, list[float]] = field(default_factory=dict)


def psql(sql: str) -> None:
    subprocess.run(["psql", PG_ADMIN, "-qc", sql], check=True, capture_output=True, timeout=60)


def database(stack: ExitStack, name: str) -> str:
    psql(f'CREATE DATABASE "{name}"')
    stack.callback(psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    env = {**os.environ, "MOORAGE_DATABASE_URL": url, "MOORAGE_LOG_LEVEL": "error"}
    subprocess.run(
        [sys.executable, "-m", "moorage.cli", "db", "upgrade"],
        env=env,
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    return url


def node_env(db_url: str, storage: dict[str, str]) -> dict[str, str]:
    return {
        **s3bench.QUIET,
        **storage,
        "MOORAGE_DATABASE_URL": db_url,
        "MOORAGE_DATABASE_MIGRATE_ON_START": "false",
    }


def start_targets(stack: ExitStack, args: argparse.Namespace, work: Path) -> list[Target]:
    tag = uuid.uuid4().hex[:8]
    stores: dict[str, dict[str, str]] = {}
    if args.storage == "s3":
        port = servers.free_port()
        endpoint = f"http://{servers.HOST}:{port}"
        moto = s3bench.start_moto(port)
        stack.callback(lambda: (moto.terminate(), moto.wait(15)))
        for name in ("single", "cluster"):
            s3bench.make_bucket(endpoint, name)
            env = s3bench.s3_env(endpoint, name, redirect=False)
            stores[name] = {k: v for k, v in env.items() if k not in s3bench.QUIET}
    else:
        for name in ("single", "cluster"):
            root = work / f"{name}-store"
            root.mkdir()
            stores[name] = {
                "MOORAGE_STORAGE_DRIVER": "filesystem",
                "MOORAGE_STORAGE_FILESYSTEM_ROOT": str(root),
            }
    cmd = f"{sys.executable} -m moorage.cli"
    use_userns = measure.Skopeo.userns_works()

    single_db = database(stack, f"moorage_bench_single_{tag}")
    spec = servers.moorage_spec(cmd, 1, None, "single", node_env(single_db, stores["single"]))
    (work / "single").mkdir()
    single = stack.enter_context(servers.running(spec, work / "single"))

    cluster_db = database(stack, f"moorage_bench_cluster_{tag}")
    nodes = []
    for i in range(3):
        spec = servers.moorage_spec(
            cmd, 1, None, f"node{i + 1}", node_env(cluster_db, stores["cluster"])
        )
        (work / f"node{i + 1}").mkdir()
        nodes.append(stack.enter_context(servers.running(spec, work / f"node{i + 1}")))
    lb = HAProxy(work, [n.registry for n in nodes]).start()
    stack.callback(lb.stop)
    wait_for("haproxy health checks", lambda: set(lb.server_states().values()) == {"UP"})

    return [
        Target(
            "1 node",
            single.base_url,
            single.registry,
            measure.Skopeo(work / "sk1", use_userns),
            work / "single",
        ),
        Target(
            "3 nodes + HAProxy",
            lb.url,
            lb.host,
            measure.Skopeo(work / "sk3", use_userns),
            work / "lb",
        ),
    ]


def run(args: argparse.Namespace, work: Path) -> list[Target]:
    images = oci_images.make_small_images(work / "images", args.images, seed=1)
    big = work / "big.bin"
    big_digest = oci_images.make_random_file(big, args.big_mib << 20)
    with ExitStack() as stack:
        targets = start_targets(stack, args, work)
        for t in targets:
            t.work.mkdir(exist_ok=True)

        def small_push(t: Target, r: int) -> float:
            t.skopeo.reset_cache()
            return measure.push_images(images, f"{t.registry}/bench/r{r}", t.skopeo, args.parallel)

        def small_pull(t: Target, r: int) -> float:
            prefix = f"{t.registry}/bench/r{r}"
            return measure.pull_images(images, prefix, t.work / "pulled", t.skopeo, args.parallel)

        def big_push(t: Target, r: int) -> float:
            return measure.curl_push_blob(t.base_url, f"bench/big{r}", big, big_digest)

        def big_pull(t: Target, r: int) -> float:
            secs, size = measure.curl_get(f"{t.base_url}/v2/bench/big{r}/blobs/{big_digest}")
            if size != args.big_mib << 20:
                raise measure.BenchError(f"{t.name}: pulled {size} bytes")
            return secs

        def manifest_load(t: Target, r: int) -> float:
            url = f"{t.base_url}/v2/bench/r0/{images[0].path.name}/manifests/1"
            res = measure.wrk(
                url, args.connections, args.duration, headers=[measure.MANIFEST_ACCEPT]
            )
            if res.suspect:
                raise measure.BenchError(f"{t.name}: errors under load: {res}")
            return res.requests_per_s

        interleave(targets, args.rounds, "small_push_s", small_push)
        interleave(targets, args.rounds, "small_pull_s", small_pull)
        interleave(targets, args.rounds, "big_push_s", big_push)
        interleave(targets, args.rounds, "big_pull_s", big_pull)
        interleave(targets, args.rounds, "manifest_get_rps", manifest_load)
    return targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", choices=["s3", "filesystem"], default="s3")
    ap.add_argument("--images", type=int, default=12, help="small images (12)")
    ap.add_argument("--parallel", type=int, default=4, help="skopeo copies at once (4)")
    ap.add_argument("--big-mib", type=int, default=256, help="big blob, MiB (256)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, best kept (2)")
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk load (5)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="moorage-ha-bench-") as tmp:
        targets = run(args, Path(tmp))
    big = (args.big_mib << 20) / MB
    print(
        f"\n{args.storage}, PostgreSQL; {args.images} small images ({args.parallel} at a time), "
        f"{args.big_mib} MiB blob, wrk -c{args.connections} -d{args.duration}s; "
        f"best of {args.rounds} rounds; {time.time() - started:.0f} s in all\n"
    )
    print(
        "| target | small push s | small pull s | big push (curl) MB/s | big pull (curl) MB/s "
        "| manifest GET req/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for t in targets:
        s = t.samples
        print(
            f"| {t.name} | {min(s['small_push_s']):.2f} | {min(s['small_pull_s']):.2f} "
            f"| {big / min(s['big_push_s']):,.0f} | {big / min(s['big_pull_s']):,.0f} "
            f"| {max(s['manifest_get_rps']):,.0f} |"
        )


if __name__ == "__main__":
    main()
