"""Write-path load: concurrent small uploads and tag pushes, and a metadata-heavy push.

    python bench/write_load.py concurrency [--backend sqlite|postgresql] [--clients 200]
    python bench/write_load.py metadata [--repos 3000] [--clients 16] [--workers 1]

``concurrency`` (issue 10, "the write path under concurrency"): one Moorage server (one worker
unless ``--workers``), ``--clients`` concurrent clients. Phase 1: ``--uploads`` small blobs
(``--size`` bytes, default 4 KiB), each POST + PATCH + PUT as docker and skopeo do; phase 2:
``--tags`` tag PUTs (small image manifests over one shared config blob, a new tag each).
Prints uploads/s and tag PUTs/s (requests divided by the phase's wall time) and each
operation's p50 and p99 latency (an upload's latency spans its three requests), and the
server's CPU time (utime + stime of its process tree, from /proc) per tag PUT: during the tag
phase, and deferred (after it, until the server is idle for 8 s: the scan jobs the pushes
queue). ``MOORAGE_JOBS_ENABLED=false`` in the environment measures the PUTs alone.
``--profile FILE`` records the server with ``py-spy record -f raw`` during the tag phase.

``metadata`` (issue 9): ``--repos`` repositories, each one config blob and three tagged
manifests, pushed by ``--clients`` concurrent clients — monolithic blob uploads (POST ?digest=)
on Moorage, POST + PUT on Distribution, which has no monolithic POST — against Moorage and CNCF
Distribution 2.8.2, ``--rounds`` interleaved rounds (each on fresh repositories). Prints each
server's wall time and the ratio.

Clients are keep-alive connections of bench/rawhttp.py in this process (httpx's async client
cost ~4 ms of CPU per request here and became the bottleneck); on a 2-core machine they share the
CPU with the server: figures are for comparing runs, not absolute. All traffic goes to 127.0.0.1; every
process started here is stopped by its own id. Run under ``flock /tmp/moorage-bench.lock``.
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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rawhttp import Connection, Response  # noqa: E402
from bench.servers import (  # noqa: E402
    RunningServer,
    cpu_seconds,
    distribution_spec,
    moorage_spec,
    process_tree,
    running,
    wait_idle,
)

PG_ADMIN_URL = os.environ.get("MOORAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    name = f"moorage_bench_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", PG_ADMIN_URL, "-qc", f'CREATE DATABASE "{name}"'], check=True)
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        subprocess.run(
            ["psql", PG_ADMIN_URL, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
        )


@contextlib.contextmanager
def moorage(work: Path, workers: int, env: dict[str, str]) -> Iterator[RunningServer]:
    level = os.environ.get("MOORAGE_BENCH_LOG_LEVEL", "error")
    base = {"MOORAGE_AUTH_ENABLED": "false", "MOORAGE_LOG_LEVEL": level}
    cmd = f"{sys.executable} -m moorage.cli"
    spec = moorage_spec(cmd, workers, None, f"moorage-w{workers}", base | env)
    with running(spec, work) as srv:
        yield srv


def image_manifest(config: bytes, layers: list[tuple[str, int]], note: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}
                for d, n in layers
            ],
            "annotations": {"n": note},
        }
    ).encode()


async def pool(
    url: str, n: int, clients: int, work: Callable[[Connection, int], Awaitable[None]]
) -> float:
    """Run work(conn, 0..n-1) on *clients* concurrent keep-alive connections; wall time."""
    parts = urlsplit(url)
    counter = iter(range(n))

    async def worker() -> None:
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            for i in counter:
                await work(conn, i)
        finally:
            await conn.close()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - t


def _check(r: Response, code: int, what: str) -> Response:
    if r.status != code:
        raise RuntimeError(f"{what}: {r.status} {r.text[:300]}")
    return r


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


# --- concurrency --------------------------------------------------------------------------------


async def concurrency_phase(
    url: str, args: argparse.Namespace, pid: int | None = None
) -> dict[str, object]:
    run = uuid.uuid4().hex[:6]
    upload_lat: list[float] = []
    tag_lat: list[float] = []

    async def upload(c: Connection, i: int) -> None:
        repo = f"load/{run}/u{i % 50}"
        blob = os.urandom(args.size)
        t = time.perf_counter()
        r = _check(await c.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, "POST")
        r = _check(await c.request("PATCH", r.headers["location"], blob), 202, "PATCH")
        r = await c.request("PUT", _with_digest(r.headers["location"], sha256(blob)))
        _check(r, 201, "PUT")
        upload_lat.append(time.perf_counter() - t)

    up_time = await pool(url, args.uploads, args.clients, upload)

    config = json.dumps({"architecture": "amd64", "os": "linux", "run": run}).encode()
    repos = [f"load/{run}/t{i}" for i in range(20)]

    async def seed(c: Connection, i: int) -> None:
        target = f"/v2/{repos[i]}/blobs/uploads/?digest={sha256(config)}"
        _check(await c.request("POST", target, config), 201, "POST ?digest=")

    await pool(url, len(repos), 4, seed)

    async def tag(c: Connection, i: int) -> None:
        repo = repos[i % len(repos)]
        body = image_manifest(config, [], f"{run}-{i}")
        t = time.perf_counter()
        r = await c.request("PUT", f"/v2/{repo}/manifests/v{i}", body, {"Content-Type": MANIFEST})
        _check(r, 201, "manifest PUT")
        tag_lat.append(time.perf_counter() - t)

    pids = process_tree(pid) if pid else []
    spy = None
    if args.profile and pid:
        spy = await asyncio.create_subprocess_exec(
            "py-spy",
            "record",
            "-f",
            "raw",
            "-r",
            "200",
            "-o",
            args.profile,
            *(["--subprocesses"] if len(pids) > 1 else []),
            "-p",
            str(pid),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # let py-spy attach before the phase
    cpu0 = cpu_seconds(pids)
    tag_time = await pool(url, args.tags, args.clients, tag)
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        await asyncio.wait_for(spy.wait(), 60)
    cpu1 = cpu_seconds(pids)
    # Deferred work (the scan jobs the pushes queued): until the server has been idle (under 5%
    # of a core) for 8 s — longer than the job runner's poll (jobs.poll_seconds 5 s, +20%
    # jitter), which may leave the queued jobs alone for that long — or --idle seconds.
    if pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.to_thread(wait_idle, pid, 8.0, 0.5, 0.05, args.idle)
    last = cpu_seconds(pids)
    per_put = 1000 / args.tags if pids and args.tags else float("nan")
    return {
        "tag_cpu_ms": (cpu1 - cpu0) * per_put,
        "deferred_cpu_ms": (last - cpu1) * per_put,
        "uploads": args.uploads,
        "uploads_per_s": args.uploads / up_time,
        "upload_p50_s": pct(upload_lat, 0.5),
        "upload_p99_s": pct(upload_lat, 0.99),
        "tags": args.tags,
        "tags_per_s": args.tags / tag_time,
        "tag_p50_s": pct(tag_lat, 0.5),
        "tag_p99_s": pct(tag_lat, 0.99),
    }


def cmd_concurrency(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="moorage-load-"))
    try:
        for backend in args.backend:
            ctx = pg_database() if backend == "postgresql" else contextlib.nullcontext(None)
            with ctx as db_url:
                env = {"MOORAGE_DATABASE_URL": db_url} if db_url else {}
                with moorage(work / backend, args.workers, env) as srv:
                    result = asyncio.run(concurrency_phase(srv.base_url, args, srv.pid))
            print(
                f"{backend:10} workers={args.workers} clients={args.clients} size={args.size}: "
                f"{result['uploads_per_s']:.0f} uploads/s (p50 {result['upload_p50_s']:.3f} s, "
                f"p99 {result['upload_p99_s']:.3f} s); {result['tags_per_s']:.0f} tag PUTs/s "
                f"(p50 {result['tag_p50_s']:.3f} s, p99 {result['tag_p99_s']:.3f} s); "
                f"server CPU per tag PUT {result['tag_cpu_ms']:.2f} ms in the phase + "
                f"{result['deferred_cpu_ms']:.2f} ms deferred; "
                f"load average {Path('/proc/loadavg').read_text().split()[0]}",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {work} (server logs: {work}/*/server.log)", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- metadata-heavy push ------------------------------------------------------------------------


async def metadata_push(url: str, kind: str, repos: int, clients: int, tag: str) -> float:
    async def push(c: Connection, i: int) -> None:
        repo = f"meta/{tag}/r{i}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "r": f"{tag}{i}"}).encode()
        digest = sha256(config)
        if kind == "moorage":
            target = f"/v2/{repo}/blobs/uploads/?digest={digest}"
            _check(await c.request("POST", target, config), 201, "POST ?digest=")
        else:
            r = _check(await c.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, "POST")
            r = await c.request("PUT", _with_digest(r.headers["location"], digest), config)
            _check(r, 201, "PUT")
        for t in range(3):
            body = image_manifest(config, [], f"{tag}-{i}-{t}")
            r = await c.request(
                "PUT", f"/v2/{repo}/manifests/v{t}", body, {"Content-Type": MANIFEST}
            )
            _check(r, 201, "manifest PUT")

    return await pool(url, repos, clients, push)


def cmd_metadata(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="moorage-meta-"))
    times: dict[str, list[float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            servers: list[tuple[str, str, RunningServer]] = []
            dist = stack.enter_context(
                running(distribution_spec(args.distribution), work / "distribution")
            )
            servers.append(("distribution", "distribution", dist))
            for w in args.workers:
                srv = stack.enter_context(moorage(work / f"moorage-w{w}", w, {}))
                servers.append((f"moorage-w{w}", "moorage", srv))
            for rnd in range(args.rounds):
                order = servers[rnd % len(servers) :] + servers[: rnd % len(servers)]
                for name, kind, srv in order:
                    wall = asyncio.run(
                        metadata_push(srv.base_url, kind, args.repos, args.clients, f"x{rnd}")
                    )
                    times.setdefault(name, []).append(wall)
                    print(f"round {rnd + 1} {name:14} {wall:7.2f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {name: min(v) for name, v in times.items()}
    for name, value in best.items():
        ratio = value / best["distribution"]
        print(
            f"{name:14} best {value:7.2f} s  all {' '.join(f'{v:.2f}' for v in times[name])}"
            f"  ratio {ratio:.2f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("concurrency")
    c.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    c.add_argument("--workers", type=int, default=1)
    c.add_argument("--clients", type=int, default=200)
    c.add_argument("--uploads", type=int, default=2000)
    c.add_argument("--size", type=int, default=4096)
    c.add_argument("--tags", type=int, default=5000)
    c.add_argument("--keep", action="store_true", help="keep the work directory and server log")
    c.add_argument(
        "--idle",
        type=float,
        default=60.0,
        help="at most this many seconds after the tag phase counted in the server's CPU per PUT "
        "(deferred jobs; counting stops once the server is idle for 8 s)",
    )
    c.add_argument("--profile", help="py-spy record -f raw of the server during the tag phase")
    c.set_defaults(func=cmd_concurrency)
    m = sub.add_parser("metadata")
    m.add_argument("--repos", type=int, default=3000)
    m.add_argument("--clients", type=int, default=16)
    m.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    m.add_argument("--rounds", type=int, default=2)
    m.add_argument("--distribution", default=shutil.which("docker-registry") or "docker-registry")
    m.set_defaults(func=cmd_metadata)
    args = ap.parse_args()
    if args.cmd == "concurrency" and not args.backend:
        args.backend = ["sqlite"]
    args.func(args)


if __name__ == "__main__":
    main()
