"""Memory of one worker under many parallel pulls of one big blob (issue 10).

    flock /tmp/moorage-bench.lock python bench/parallel_pulls.py [--pulls 100] [--blob-mib 1024]
        [--settle 60] [--code DIR] [--env KEY=VALUE ...]

Starts `moorage serve --no-auth` (one worker, SQLite, filesystem store) with the code in
``--code`` (default: this tree) on PYTHONPATH, pushes one blob of ``--blob-mib`` MiB (curl, one
streamed PATCH), waits 10 s and takes the idle RSS, then runs ``--pulls`` `curl -o /dev/null` GETs
of it at once while sampling the server's RSS every 50 ms; reports the peak, the wall time and
the aggregate throughput, then the RSS ``--settle`` seconds after the last pull ended. Every
process it starts it stops by its own PID.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import servers  # noqa: E402

MiB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pulls", type=int, default=100)
    ap.add_argument("--blob-mib", type=int, default=1024)
    ap.add_argument("--settle", type=float, default=60)
    ap.add_argument("--code", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    ap.add_argument("--repeat", type=int, default=1, help="run the set of pulls this many times")
    ap.add_argument("--rate", default="", help="curl --limit-rate per pull, e.g. 20M")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="moorage-bench-pulls-") as t:
        tmp = Path(t)
        blob = tmp / "blob"
        piece = os.urandom(MiB)
        h = hashlib.sha256()
        with open(blob, "wb") as f:
            for i in range(a.blob_mib):
                chunk = piece[i % 251 :] + piece[: i % 251]
                f.write(chunk)
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        port = servers.free_port()
        env = {**os.environ, "PYTHONPATH": a.code, "MOORAGE_LOG_LEVEL": "warning"}
        env.update(kv.split("=", 1) for kv in a.env)  # type: ignore[misc]
        log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, "-m", "moorage.cli", "serve", "--no-auth", "--port", str(port)]
        proc = subprocess.Popen(
            [*argv, "--data-dir", str(tmp / "data")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=a.code,
        )
        log.close()
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    with urllib.request.urlopen(base + "/readyz", timeout=2):
                        break
                except OSError:
                    time.sleep(0.1)
            measure.curl_push_blob(base, "bench/big", blob, digest)
            blob.unlink()
            url = f"{base}/v2/bench/big/blobs/{digest}"
            measure.curl_get(url)  # one pull first: caches and pools warm
            time.sleep(10)
            idle = servers.rss_bytes(servers.process_tree(proc.pid))
            curl = ["curl", "-s", "--fail", "-o", "/dev/null"]
            if a.rate:
                curl += ["--limit-rate", a.rate]
            walls = []
            failed = 0
            with servers.RssSampler(proc.pid) as sampler:
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    pulls = [subprocess.Popen([*curl, url]) for _ in range(a.pulls)]
                    failed += sum(1 for p in pulls if p.wait() != 0)
                    walls.append(time.perf_counter() - t0)
            wall = min(walls)
            if a.repeat > 1:
                print("walls: " + ", ".join(f"{w:.2f} s" for w in walls))
            time.sleep(a.settle)
            after = servers.rss_bytes(servers.process_tree(proc.pid))
            total = a.pulls * a.blob_mib * MiB
            print(
                f"pulls {a.pulls} x {a.blob_mib} MiB ({failed} failed): wall {wall:.1f} s, "
                f"{total / wall / 1e6:.0f} MB/s; RSS idle {idle / MiB:.0f} MiB, peak "
                f"{sampler.peak / MiB:.0f} MiB, {a.settle:.0f} s after "
                f"{after / MiB:.0f} MiB ({after / idle:.2f}x idle)",
                flush=True,
            )
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
