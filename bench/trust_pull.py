"""What a signed-only pull policy adds to a manifest request on a cache hit.

One ``moorage serve --no-auth`` (one worker), two repositories holding the same kind of small
image: ``bench/plain`` (no policy) and ``bench/signed`` (``moorage trust set-policy ...
--require-signature on --signer k``, signed with a cosign signature by key ``k``; an unsigned
tag there is refused before measuring, proving the policy is on). After one
warm-up pull of each, the same load runs against both, alternating, ``--rounds`` times:

- manifest GET by tag: ``wrk -t2 -cC -dDs`` (HTTP/1.1 keep-alive);
- manifest HEAD by tag: ``hey -c C -z Ds -m HEAD`` (wrk hangs on HEAD).

Two views of the added cost per request: ``1/rps(signed) - 1/rps(plain)`` (the server's wall
time per request at saturation with one worker — noisy on a shared machine), and the server's
CPU time (utime+stime of its process tree, from /proc, including a second of deferred work
after each run) per request served, which other load on the machine does not inflate. A third
figure measures the rule alone, in process: ``SignatureRule.manifest_read`` on a warm decision cache, averaged
over ``--calls`` calls (what the hot path pays beyond the lookup it already does).

    PYTHONPATH=. flock /tmp/moorage-bench.lock python bench/trust_pull.py [--rounds 3]

Only 127.0.0.1; the server is stopped by the process id this script started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import hey, wrk  # noqa: E402
from bench.servers import moorage_spec, process_tree, running  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """utime + stime of the server's process tree (CPU it used, whatever else runs)."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICK

ACCEPT = "Accept: application/vnd.oci.image.manifest.v1+json"


def _cli(data_dir: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _setup(base: str, data_dir: Path, work: Path) -> float:
    """Two images, a key, the policy and a signature of the signed image. Returns the seconds
    from the end of the ``set-policy`` command to the server's first refusal (the staleness of
    its view: at most the refresh interval plus a request)."""
    from tests.trust.helpers import new_key, public_pem
    from tests.trust.push import push_cosign_signature, push_image

    key = new_key("p256")
    (work / "k.pub").write_bytes(public_pem(key))

    async def push() -> str:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            await push_image(c, "bench/plain", "v1")
            digest, _ = await push_image(c, "bench/signed", "v1")
            await push_cosign_signature(c, "bench/signed", digest, [key])
            await push_image(c, "bench/signed", "unsigned")  # proves the policy is on
            return digest

    asyncio.run(push())
    _cli(data_dir, "trust", "add-key", "bench", "k", "--public-key", str(work / "k.pub"))
    _cli(data_dir, "trust", "set-policy", "bench/signed", "--require-signature", "on", "--signer", "k")
    changed = time.monotonic()
    deadline = changed + 30
    while True:  # the server sees the CLI's policy within its refresh interval
        r = httpx.get(f"{base}/v2/bench/signed/manifests/unsigned", headers={"Accept": ACCEPT[8:]})
        if r.status_code == 403:
            visible = time.monotonic() - changed
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the policy did not apply: {r.status_code} {r.text[:300]}")
        time.sleep(0.05)
    for repo in ("plain", "signed"):
        r = httpx.get(f"{base}/v2/bench/{repo}/manifests/v1", headers={"Accept": ACCEPT[8:]})
        if r.status_code != 200:
            raise SystemExit(f"warm-up pull of bench/{repo} failed: {r.status_code} {r.text[:300]}")
    return visible


async def _rule_alone(data_dir: Path, calls: int) -> float:
    """Microseconds per SignatureRule.manifest_read on a warm cache, in this process."""
    from moorage.config import load_config
    from moorage.db import queries as core
    from moorage.runtime import start_runtime, stop_runtime
    from moorage.services.rules import ManifestRead, Requester
    from moorage.trust.rule import SignatureRule

    config = load_config(None, overrides={"data_dir": str(data_dir), "auth.enabled": False})
    rt = await start_runtime(config, run_jobs=False, pool_size=1)
    try:
        service = rt.services["trust"]
        service.refresh_seconds = 3600.0  # measure the hit, not the periodic generation read
        rule = SignatureRule(service, rt.audit)
        async with rt.ctx.engine.connect() as conn:
            row = await core.manifest_by_tag(conn, "bench/signed", "v1")
        assert row is not None
        read = ManifestRead("bench/signed", "v1", row.digest, row.media_type, False, Requester.system())
        await rule.manifest_read(read)  # fills the cache
        start = time.perf_counter()
        for _ in range(calls):
            await rule.manifest_read(read)
        return (time.perf_counter() - start) / calls * 1e6
    finally:
        await stop_runtime(rt)


def main() -> None:
    # A timeout's SIGTERM unwinds the context managers: the server started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    cmd = f"{sys.executable} -m moorage.cli serve --host {{host}} --port {{port}} --data-dir {{data_dir}} --no-auth"
    spec = moorage_spec(cmd, 1, None, "moorage", env={"PYTHONPATH": str(ROOT)})
    figures: dict[str, list[float]] = {k: [] for k in ("get-plain", "get-signed", "head-plain", "head-signed")}
    p50: dict[str, list[float]] = {k: [] for k in figures}
    cpu_us: dict[str, list[float]] = {k: [] for k in figures}
    with tempfile.TemporaryDirectory(prefix="moorage-trust-bench-") as tmp, running(spec, Path(tmp)) as srv:
        visible = _setup(srv.base_url, srv.data_dir, Path(tmp))
        for i in range(args.rounds):
            order = ("plain", "signed") if i % 2 == 0 else ("signed", "plain")
            for repo in order:
                url = f"{srv.base_url}/v2/bench/{repo}/manifests/v1"
                runs = {}
                for kind in ("get", "head"):
                    before = cpu_seconds(srv.pid)
                    if kind == "get":
                        res = wrk(url, args.connections, args.duration, headers=[ACCEPT])
                    else:
                        res = hey(url, args.connections, args.duration, method="HEAD", headers=[ACCEPT])
                    time.sleep(1.0)  # deferred work (pull audit records) belongs to the run
                    used = cpu_seconds(srv.pid) - before
                    cpu_us[f"{kind}-{repo}"].append(used / max(res.requests, 1) * 1e6)
                    runs[kind] = res
                for kind, res in runs.items():
                    if res.errors or res.socket_errors:
                        raise SystemExit(f"{kind} {repo}: {res.errors} errors, {res.socket_errors} socket errors")
                    figures[f"{kind}-{repo}"].append(res.requests_per_s)
                    p50[f"{kind}-{repo}"].append(res.p50_ms or 0.0)
        rule_us = asyncio.run(_rule_alone(srv.data_dir, args.calls))
    out: dict[str, object] = {"load_average": os.getloadavg()[0]}
    for kind in ("get", "head"):
        plain = statistics.median(figures[f"{kind}-plain"])
        signed = statistics.median(figures[f"{kind}-signed"])
        out[kind] = {
            "plain_rps": round(plain),
            "signed_rps": round(signed),
            "ratio": round(signed / plain, 3),
            "added_us_per_request": round((1 / signed - 1 / plain) * 1e6, 1),
            "plain_p50_ms": round(statistics.median(p50[f"{kind}-plain"]), 2),
            "signed_p50_ms": round(statistics.median(p50[f"{kind}-signed"]), 2),
            "plain_cpu_us_per_request": round(statistics.median(cpu_us[f"{kind}-plain"]), 1),
            "signed_cpu_us_per_request": round(statistics.median(cpu_us[f"{kind}-signed"]), 1),
            "added_cpu_us_per_request": round(
                statistics.median(cpu_us[f"{kind}-signed"]) - statistics.median(cpu_us[f"{kind}-plain"]), 1
            ),
            "rounds_rps": {"plain": figures[f"{kind}-plain"], "signed": figures[f"{kind}-signed"]},
        }
    out["rule_alone_us_per_call"] = round(rule_us, 2)
    out["cli_policy_visible_after_s"] = round(visible, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
