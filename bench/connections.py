"""What the request-head deadline and connection cap (moorage/connections.py) cost.

    flock /tmp/moorage-bench.lock python bench/connections.py [--rounds 3] [--seconds 8]

Starts two `moorage serve --no-auth` processes (one worker, SQLite) side by side: one with the
defaults (GuardedHttpToolsProtocol: http.header_timeout 10 s, http.max_connections 2048) and one
with both off (http.header_timeout 0, http.max_connections 0: uvicorn's own httptools protocol).
Each round runs, on each server in turn, `wrk -t2 -c64` on `GET /v2/` with kept-alive
connections, then with `Connection: close` (a new connection per request: the path that arms and
cancels the timer most), and prints req/s and the ratio guarded/plain. Every process it starts
it stops by its own PID.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moorage.cli",
            "serve",
            "--no-auth",
            "--port",
            str(port),
            "--data-dir",
            str(tmp / name),
        ],
        env={**os.environ, **env, "MOORAGE_LOG_LEVEL": "warning"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{name} did not start")


def wrk(port: int, seconds: int, close: bool) -> float:
    args = ["wrk", "-t2", "-c64", f"-d{seconds}s"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{port}/v2/"], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="moorage-bench-conn-") as t:
        tmp = Path(t)
        servers = {
            "guarded": start(tmp, "guarded", {}),
            "plain": start(
                tmp,
                "plain",
                {"MOORAGE_HTTP_HEADER_TIMEOUT": "0", "MOORAGE_HTTP_MAX_CONNECTIONS": "0"},
            ),
        }
        try:
            results: dict[tuple[str, bool], list[float]] = {}
            for r in range(a.rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for close in (False, True):
                    for name in order:
                        rps = wrk(servers[name][1], a.seconds, close)
                        results.setdefault((name, close), []).append(rps)
                        print(
                            f"round {r + 1} {name:8} {'close' if close else 'keep-alive':10} "
                            f"{rps:9.0f} req/s",
                            flush=True,
                        )
            for close in (False, True):
                g = sorted(results[("guarded", close)])
                p = sorted(results[("plain", close)])
                gm, pm = g[len(g) // 2], p[len(p) // 2]
                print(
                    f"{'Connection: close' if close else 'keep-alive':18} median guarded "
                    f"{gm:.0f} req/s, plain {pm:.0f} req/s, ratio {gm / pm:.2f} "
                    f"(best {max(g) / max(p):.2f})"
                )
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
