#!/usr/bin/env python3
"""Benchmark Moorage against CNCF Distribution, side by side, on the same generated images.

    python bench/run.py                 # full run, both servers (about 6 minutes)
    python bench/run.py --quick         # smoke run, under 2 minutes
    python bench/run.py --only distribution

All servers run at once; every measurement is repeated for ``--rounds`` rounds, and within a
round each server takes its turn (the order rotates every round), so that the noise of a shared
machine falls on all of them alike. The best round is kept. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import oci_images  # noqa: E402
import report  # noqa: E402
from measure import MB, LoadResult, Skopeo  # noqa: E402
from oci_images import OciImage  # noqa: E402
from servers import (  # noqa: E402
    RssSampler,
    RunningServer,
    ServerSpec,
    cpu_seconds,
    distribution_spec,
    moorage_spec,
    process_tree,
    running,
    wait_idle,
)

MiB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent
BUSY_WARN_PERCENT = 15.0


@dataclass
class Settings:
    images: int
    parallel: int
    big_mib: int
    rounds: int
    duration: int
    connections: int
    seed: int
    settle: float = 6.5

    @property
    def big_bytes(self) -> int:
        return self.big_mib * MiB

    @property
    def big_label(self) -> str:
        return f"{self.big_mib // 1024} GiB" if self.big_mib % 1024 == 0 else f"{self.big_mib} MiB"


@dataclass
class Inputs:
    images: list[OciImage]
    big_blob: Path
    big_digest: str
    big_image: OciImage
    sha256_s: float

    @property
    def load_blob(self) -> oci_images.Descriptor:
        """The blob fetched under load: the smallest layer of img0."""
        return min(self.images[0].layers, key=lambda d: d.size)


@dataclass
class Target:
    """One running server and what was measured on it."""

    spec: ServerSpec
    server: RunningServer
    rss: RssSampler
    skopeo: Skopeo
    work: Path
    samples: dict[str, list[float]] = field(default_factory=dict)
    loads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per round
    suspect: set[str] = field(default_factory=set)  # load figures with errors

    @property
    def name(self) -> str:
        return self.spec.name

    settle: float = 0.0

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's process tree."""
        return cpu_seconds(process_tree(self.server.pid))

    def wait_idle(self, settle: float | None = None) -> float:
        """Wait until the server's process tree is idle; the seconds it was busy meanwhile.
        ``settle`` (default: the run's ``--settle``) is how long it must stay idle."""
        return wait_idle(self.server.pid, self.settle if settle is None else settle)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 12 images, 256 MiB, 2 s loads, 2 rounds"
    )
    p.add_argument("--only", choices=["distribution", "moorage"], help="run one server only")
    p.add_argument("--images", type=int, help="small images to push and pull (40; quick 12)")
    p.add_argument("--parallel", type=int, default=4, help="skopeo copies at once (4)")
    p.add_argument("--big-mib", type=int, help="size of the big layer in MiB (1024; quick 256)")
    p.add_argument("--rounds", type=int, help="rounds of every measurement, best kept (3; quick 2)")
    p.add_argument("--duration", type=int, help="seconds per load run (10; quick 2)")
    p.add_argument("--connections", type=int, default=64, help="load connections (64)")
    p.add_argument("--seed", type=int, default=1, help="seed for the generated content (1)")
    p.add_argument(
        "--settle",
        type=float,
        default=6.5,
        help="after each measurement, seconds the server must stay idle before the next one; "
        "its busy time until then is charged to the measurement (6.5: longer than Moorage's "
        "5 s +/- 20%% job poll, so that jobs a push queued, such as scans, are counted)",
    )
    p.add_argument(
        "--moorage-cmd",
        default="moorage",
        help="launcher prefix, to which 'serve --host H --port P --data-dir D --workers N "
        "[--config F]' is appended; or a full command line with {port} (and {host}, "
        "{data_dir}, {workers}, {config}) placeholders (default: moorage)",
    )
    p.add_argument(
        "--workers", default="1", help="Moorage worker counts, comma-separated, e.g. 1,2 (1)"
    )
    p.add_argument("--moorage-config", help="file passed to 'moorage serve --config'")
    p.add_argument("--moorage-ready-path", default="/readyz", help="readiness path (/readyz)")
    p.add_argument(
        "--moorage-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for Moorage (repeatable); unless given here or already set: "
        "MOORAGE_AUTH_ENABLED=false, MOORAGE_LOG_LEVEL=error",
    )
    p.add_argument(
        "--server-logs",
        action="store_true",
        help="leave both servers' default logging on (access logs); quiet by default",
    )
    p.add_argument("--distribution-bin", default="docker-registry", help="Distribution binary")
    p.add_argument(
        "--json",
        type=Path,
        default=BENCH_DIR / "results" / "latest.json",
        help="results file (bench/results/latest.json)",
    )
    p.add_argument(
        "--workdir", type=Path, help="for inputs, data and logs; kept (default: a temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp work dir afterwards")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    q = args.quick
    return Settings(
        images=args.images or (12 if q else 40),
        parallel=args.parallel,
        big_mib=args.big_mib or (256 if q else 1024),
        rounds=args.rounds or (2 if q else 3),
        duration=args.duration or (2 if q else 10),
        connections=args.connections,
        seed=args.seed,
        settle=args.settle,
    )


def server_specs(args: argparse.Namespace) -> list[ServerSpec]:
    specs: list[ServerSpec] = []
    if args.only in (None, "distribution"):
        specs.append(distribution_spec(args.distribution_bin, quiet=not args.server_logs))
    if args.only in (None, "moorage"):
        env = moorage_env(args)
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
        for n in counts:
            name = "moorage" if len(counts) == 1 else f"moorage-w{n}"
            spec = moorage_spec(args.moorage_cmd, n, args.moorage_config, name, env)
            spec.ready_path = args.moorage_ready_path
            specs.append(spec)
    return specs


def moorage_env(args: argparse.Namespace) -> dict[str, str]:
    """Moorage's extra environment: made comparable to Distribution as configured here."""
    env = dict(kv.split("=", 1) for kv in args.moorage_env)
    defaults = {"MOORAGE_AUTH_ENABLED": "false"}  # Distribution runs without auth too
    if not args.server_logs:
        defaults["MOORAGE_LOG_LEVEL"] = "error"  # like Distribution: errors only, no access log
    for key, value in defaults.items():
        if key not in env and key not in os.environ:
            env[key] = value
    return env


def preflight(specs: list[ServerSpec]) -> None:
    missing = [t for t in ("skopeo", "curl", "wrk", "hey", "unshare") if not shutil.which(t)]
    for spec in specs:
        exe = spec.argv(0, Path("."))[0]
        if not shutil.which(exe):
            hint = " (pip install -e ., --moorage-cmd, or --only distribution)"
            missing.append(exe + (hint if spec.kind == "moorage" else ""))
    if missing:
        sys.exit("missing: " + ", ".join(dict.fromkeys(missing)))


# --- inputs ---------------------------------------------------------------------------------


def make_inputs(work: Path, s: Settings) -> Inputs:
    t0 = time.perf_counter()
    images = oci_images.make_small_images(work / "images", s.images, s.seed)
    big_blob = work / "big.bin"
    digest = oci_images.make_random_file(big_blob, s.big_bytes)
    big_image = oci_images.make_big_image(work / "big-image", big_blob, digest)
    log(
        f"generated {len(images)} images ({sum(i.total_bytes for i in images) / MB:.1f} MB) "
        f"and a {s.big_label} layer in {time.perf_counter() - t0:.1f}s"
    )
    sha = min(measure.sha256_seconds(big_blob) for _ in range(3))
    log(f"sha256 of {s.big_label}: {sha:.2f}s ({s.big_bytes / sha / MB:.0f} MB/s)")
    return Inputs(images, big_blob, digest, big_image, sha)


# --- rounds ---------------------------------------------------------------------------------


def interleave(
    targets: list[Target], rounds: int, key: str, fn: Callable[[Target, int], float]
) -> None:
    """Run ``fn(target, round)`` for every target, ``rounds`` times, rotating the order. Each
    run starts on an idle server: what the last one left for the server to do in the
    background is not charged to this one."""
    for r in range(rounds):
        k = r % len(targets)
        for t in targets[k:] + targets[:k]:
            t.wait_idle(settle=0.5)
            cpu = t.cpu_seconds()
            with t.rss.window(key):  # which phase makes the peak (the JSON's rss_windows_MiB)
                t.samples.setdefault(key, []).append(fn(t, r))
            # The server's CPU for the round (its later work included when fn waits for it):
            # steadier than wall time where clients and server share two cores.
            t.samples.setdefault(key + "_cpu", []).append(t.cpu_seconds() - cpu)
    summary = ", ".join(
        f"{t.name} " + "/".join(f"{v:.2f}" for v in t.samples[key]) for t in targets
    )
    log(f"{key}: {summary}")


def sustained(key: str, fn: Callable[[Target, int], float]) -> Callable[[Target, int], float]:
    """A timed phase, charged until the server is idle again: ``fn``'s seconds (the client's
    view) plus the seconds the server went on working after it (scans queued by a push, audit
    records written behind the requests). Both parts are kept in the samples."""

    def timed(t: Target, r: int) -> float:
        client = fn(t, r)
        drain = t.wait_idle()
        t.samples.setdefault(key + "_client", []).append(client)
        t.samples.setdefault(key + "_drain", []).append(drain)
        return client + drain

    return timed


def _check_served(srv: RunningServer, image: OciImage) -> None:
    """Before timing load on them, the targets must answer with the right content."""
    req = urllib.request.Request(
        f"{srv.base_url}/v2/bench/r0/{image.path.name}/manifests/1",
        headers={"Accept": oci_images.MEDIA_MANIFEST},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    if oci_images.sha256_digest(body) != image.manifest.digest:
        raise measure.BenchError(f"{srv.spec.name}: manifest of {image.path.name} differs")


def run_phases(targets: list[Target], inputs: Inputs, s: Settings) -> None:
    big = s.big_bytes

    # 1. Small images. Each round pushes to its own repositories (bench/rN/imgM); skopeo's
    #    blob-info cache is emptied first so that it uploads rather than mounts.
    def small_push(t: Target, r: int) -> float:
        t.skopeo.reset_cache()
        return measure.push_images(
            inputs.images, f"{t.server.registry}/bench/r{r}", t.skopeo, s.parallel
        )

    def small_pull(t: Target, r: int) -> float:
        return measure.pull_images(
            inputs.images,
            f"{t.server.registry}/bench/r{r}",
            t.work / "pulled",
            t.skopeo,
            s.parallel,
        )

    interleave(targets, s.rounds, "small_push_s", sustained("small_push_s", small_push))
    interleave(targets, s.rounds, "small_pull_s", sustained("small_pull_s", small_pull))

    # 2. The big layer: skopeo (whole client) and curl (the protocol alone). Before each
    #    transfer, sync so that the last one's writeback does not land on this one.
    def skopeo_push(t: Target, r: int) -> float:
        t.skopeo.reset_cache()
        os.sync()
        with t.rss.window("big_push"):
            t0 = time.perf_counter()
            t.skopeo.copy(
                inputs.big_image.skopeo_ref(),
                f"docker://{t.server.registry}/bench/big-skopeo-{r}:1",
            )
            return time.perf_counter() - t0

    def curl_push(t: Target, r: int) -> float:
        os.sync()
        with t.rss.window("big_push"):
            return measure.curl_push_blob(
                t.server.base_url, f"bench/big-raw-{r}", inputs.big_blob, inputs.big_digest
            )

    def skopeo_pull(t: Target, r: int) -> float:
        dest = t.work / f"big-pull-{r}"
        os.sync()
        t0 = time.perf_counter()
        t.skopeo.copy(f"docker://{t.server.registry}/bench/big-skopeo-{r}:1", f"dir:{dest}")
        seconds = time.perf_counter() - t0
        if (dest / inputs.big_digest.removeprefix("sha256:")).stat().st_size != big:
            raise measure.BenchError(f"{t.name}: the pulled big layer has the wrong size")
        shutil.rmtree(dest)
        return seconds

    def curl_pull(t: Target, r: int) -> float:
        url = f"{t.server.base_url}/v2/bench/big-raw-{r}/blobs/{inputs.big_digest}"
        seconds, size = measure.curl_get(url)
        if size != big:
            raise measure.BenchError(f"{t.name}: the big blob GET returned {size} bytes")
        return seconds

    interleave(targets, s.rounds, "big_skopeo_push_s", sustained("big_skopeo_push_s", skopeo_push))
    interleave(targets, s.rounds, "big_curl_push_s", sustained("big_curl_push_s", curl_push))
    interleave(targets, s.rounds, "big_skopeo_pull_s", sustained("big_skopeo_pull_s", skopeo_pull))
    interleave(targets, s.rounds, "big_curl_pull_s", sustained("big_curl_pull_s", curl_pull))

    # 3. Request rates at s.connections connections.
    for t in targets:
        _check_served(t.server, inputs.images[0])
    accept = [measure.MANIFEST_ACCEPT]
    manifest_path = f"/v2/bench/r0/{inputs.images[0].path.name}/manifests/1"
    blob_path = f"/v2/bench/r0/{inputs.images[0].path.name}/blobs/{inputs.load_blob.digest}"

    def loaded(key: str, run: Callable[[str], LoadResult], path: str) -> None:
        def fn(t: Target, r: int) -> float:
            # Sustained: the requests over the load's time plus the time the server went on
            # working after the load ended (e.g. writing the requests' audit records).
            res = run(t.server.base_url + path)
            drain = t.wait_idle()
            load_s = res.requests / res.requests_per_s if res.requests_per_s else 0.0
            rate = res.requests / (load_s + drain) if load_s + drain else 0.0
            t.loads.setdefault(key, []).append(
                {**res.to_json(), "drain_s": round(drain, 3), "sustained_rps": round(rate, 1)}
            )
            t.samples.setdefault(key.replace("_rps", "_load_rps"), []).append(res.requests_per_s)
            if res.suspect:
                t.suspect.add(key)
            return rate

        interleave(targets, s.rounds, key, fn)

    c, d = s.connections, s.duration
    loaded("manifest_get_rps", lambda url: measure.wrk(url, c, d, headers=accept), manifest_path)
    loaded(
        "manifest_head_rps",
        lambda url: measure.hey(url, c, d, method="HEAD", headers=accept),
        manifest_path,
    )
    loaded("blob_get_rps", lambda url: measure.wrk(url, c, d), blob_path)


def metrics_of(t: Target, inputs: Inputs, s: Settings) -> dict[str, float]:
    best_s = {k: min(v) for k, v in t.samples.items() if k.endswith("_s")}
    best_rps = {k: max(v) for k, v in t.samples.items() if k.endswith("_rps")}
    big = s.big_bytes
    return {
        "small_push_s": best_s["small_push_s"],
        "small_pull_s": best_s["small_pull_s"],
        "big_skopeo_push_MBps": big / best_s["big_skopeo_push_s"] / MB,
        "big_skopeo_pull_MBps": big / best_s["big_skopeo_pull_s"] / MB,
        "big_curl_push_MBps": big / best_s["big_curl_push_s"] / MB,
        "big_curl_pull_MBps": big / best_s["big_curl_pull_s"] / MB,
        "big_curl_push_x_sha256": best_s["big_curl_push_s"] / inputs.sha256_s,
        "big_skopeo_push_x_sha256": best_s["big_skopeo_push_s"] / inputs.sha256_s,
        "rss_idle_MiB": t.samples["rss_idle_B"][0] / MiB,
        "rss_big_push_MiB": t.rss.windows["big_push"] / MiB,
        "rss_peak_MiB": t.rss.peak / MiB,
        "small_push_client_s": min(t.samples["small_push_s_client"]),
        "small_push_cpu_s": min(t.samples["small_push_s_cpu"]),
        "small_pull_cpu_s": min(t.samples["small_pull_s_cpu"]),
        "manifest_get_rps": best_rps["manifest_get_rps"],
        "manifest_get_load_rps": best_rps["manifest_get_load_rps"],
        "manifest_head_rps": best_rps["manifest_head_rps"],
        "blob_get_rps": best_rps["blob_get_rps"],
        "blob_get_MBps": best_rps["blob_get_rps"] * inputs.load_blob.size / MB,
    }


def bench(specs: list[ServerSpec], inputs: Inputs, s: Settings, work: Path) -> dict[str, Any]:
    use_userns = Skopeo.userns_works()
    if not use_userns:
        log("warning: 'unshare --user' fails; skopeo shares the system blob-info cache")
    targets: list[Target] = []
    with ExitStack() as stack:
        for spec in specs:
            twork = work / spec.name
            twork.mkdir(parents=True)
            srv = stack.enter_context(running(spec, twork))
            rss = stack.enter_context(RssSampler(srv.pid))
            log(f"{spec.name}: ready on {srv.base_url} (pid {srv.pid})")
            skopeo = Skopeo(twork / "skopeo-home", use_userns)
            targets.append(Target(spec, srv, rss, skopeo, twork, settle=s.settle))
        time.sleep(1.0)
        for t in targets:
            t.samples["rss_idle_B"] = [float(t.rss.sample())]
        run_phases(targets, inputs, s)
    # The servers have stopped here, and so have their samplers: the peaks are final.
    results: dict[str, Any] = {}
    for t in targets:
        results[t.name] = {
            "command": (t.work / "argv.txt").read_text().strip(),
            "workers": t.spec.workers,
            "metrics": metrics_of(t, inputs, s),
            "samples": t.samples,
            "loads": t.loads,
            "rss_windows_MiB": {k: round(v / MiB, 1) for k, v in t.rss.windows.items()},
            "invalid": sorted(m for k in t.suspect for m in (k, k.replace("_rps", "_MBps"))),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    specs = server_specs(args)
    preflight(specs)

    # A --workdir given is never deleted; the default temporary one is, unless --keep.
    keep = args.keep or args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="moorage-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}{' (kept)' if keep else ''}")
    started = dt.datetime.now(dt.UTC)
    busy_before = measure.busy_cpu_percent()
    log(f"CPU busy with other work before the run: {busy_before:.0f}%")
    try:
        inputs = make_inputs(work / "inputs", s)
        results = bench(specs, inputs, s, work)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    busy_after = measure.busy_cpu_percent()

    rel = report.ratios(results)
    labels = {
        "images": str(s.images),
        "parallel": str(s.parallel),
        "big": s.big_label,
        "conns": str(s.connections),
        "blob_kib": str(inputs.load_blob.size // 1024),
    }
    print()
    print(
        f"sha256 alone over the {s.big_label} layer: {inputs.sha256_s:.2f}s "
        f"({s.big_bytes / inputs.sha256_s / MB:.0f} MB/s); target: a push within 1.3x of it"
    )
    print(f"best of {s.rounds} rounds per figure; MB = 10^6 bytes")
    print(f"CPU busy with other work: {busy_before:.0f}% before the run, {busy_after:.0f}% after")
    if max(busy_before, busy_after) > BUSY_WARN_PERCENT:
        print("WARNING: the machine was busy with other work; the figures are not reliable")
    print(report.table(results, rel, labels))
    print()
    for name, res in results.items():
        print(f"{name}: {res['command']}")
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "argv": sys.argv,
        "settings": asdict(s),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "busy_cpu_percent": {"before": busy_before, "after": busy_after},
        "sha256_s": inputs.sha256_s,
        "big_bytes": s.big_bytes,
        "load_blob_bytes": inputs.load_blob.size,
        "metrics": [asdict(m) for m in report.METRICS],
        "servers": results,
        "ratios": rel,
    }
    report.write_json(args.json, doc)
    print(f"results: {args.json}  ({shlex.join(['python', *sys.argv])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
