"""The measurements: skopeo copies, raw HTTP blob transfers with curl, wrk/hey load, sha256.

Every function here talks to 127.0.0.1 only (URLs are built from a RunningServer).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from oci_images import MEDIA_MANIFEST, OciImage

MB = 1_000_000
_CHUNK = 1 << 20


class BenchError(RuntimeError):
    pass


def _run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)!r} exited {proc.returncode}:\n{proc.stderr[-2000:]}{proc.stdout[-500:]}"
        )
    return proc.stdout


# --- skopeo ---------------------------------------------------------------------------------


class Skopeo:
    """skopeo with a private home, so its blob-info cache starts empty and stays ours.

    As root, skopeo keeps its blob-location cache in /var/lib/containers/cache and will try
    cross-repository mounts it remembers from earlier runs. Run unprivileged, it uses
    $XDG_DATA_HOME/containers/cache instead; ``unshare --user`` gives it an unprivileged uid
    (no other change: same network, same files) so that our XDG_DATA_HOME is honoured.
    """

    def __init__(self, home: Path, use_userns: bool = True) -> None:
        self.home = home
        for sub in ("data", "config", "run", "tmp"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        self.registries_conf = home / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.policy = home / "policy.json"
        self.policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "TMPDIR": str(home / "tmp"),
        }
        self.prefix = ["unshare", "--user"] if use_userns else []

    @staticmethod
    def userns_works() -> bool:
        try:
            return (
                subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode == 0
            )
        except FileNotFoundError:
            return False

    def copy(self, src: str, dst: str) -> None:
        _run(
            [
                *self.prefix,
                "skopeo",
                "--policy",
                str(self.policy),
                "--tmpdir",
                str(self.home / "tmp"),
                "copy",
                "--quiet",
                "--retry-times",
                "0",
                # Keep layers byte-for-byte: skopeo would otherwise gzip uncompressed layers.
                "--preserve-digests",
                "--registries-conf",
                str(self.registries_conf),
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                src,
                dst,
            ],
            env=self.env,
        )

    def reset_cache(self) -> None:
        """Forget every blob location (so the next push uploads instead of mounting)."""
        cache = self.home / "data" / "containers" / "cache" / "blob-info-cache-v1.boltdb"
        cache.unlink(missing_ok=True)


def timed_parallel(jobs: Sequence[tuple[str, str]], skopeo: Skopeo, parallel: int) -> float:
    """Run ``skopeo copy src dst`` for each job, ``parallel`` at a time; wall seconds."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for f in [pool.submit(skopeo.copy, src, dst) for src, dst in jobs]:
            f.result()
    return time.perf_counter() - t0


def push_images(images: Sequence[OciImage], prefix: str, skopeo: Skopeo, parallel: int) -> float:
    """Push every image to ``docker://{prefix}/{image dir name}:1``; wall seconds."""
    jobs = [(img.skopeo_ref(), f"docker://{prefix}/{img.path.name}:1") for img in images]
    return timed_parallel(jobs, skopeo, parallel)


def pull_images(
    images: Sequence[OciImage], prefix: str, dest: Path, skopeo: Skopeo, parallel: int
) -> float:
    """Pull from ``prefix`` into fresh ``dir:`` directories (which keep layers as they are)."""
    dest.mkdir(parents=True, exist_ok=True)
    jobs = [
        (f"docker://{prefix}/{img.path.name}:1", f"dir:{dest / img.path.name}") for img in images
    ]
    seconds = timed_parallel(jobs, skopeo, parallel)
    for img in images:
        for layer in img.layers:
            if not (dest / img.path.name / layer.digest.removeprefix("sha256:")).is_file():
                raise BenchError(f"pull of {img.path.name} lacks layer {layer.digest}")
    shutil.rmtree(dest)
    return seconds


# --- raw HTTP blob transfers ----------------------------------------------------------------


def _request(
    base: str, method: str, target: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)
    conn.request(method, target, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def _target(base: str, location: str) -> str:
    """Path and query of an upload Location (absolute or relative) on ``base``."""
    u = urllib.parse.urlsplit(urllib.parse.urljoin(base + "/", location))
    return u.path + (f"?{u.query}" if u.query else "")


def curl_push_blob(base: str, repo: str, blob: Path, digest: str) -> float:
    """POST an upload, PATCH the whole file with curl (streamed, Content-Length), PUT ?digest=.

    Returns wall seconds from POST to the PUT's 201.
    """
    t0 = time.perf_counter()
    resp = _request(base, "POST", f"/v2/{repo}/blobs/uploads/", {"Content-Length": "0"})
    if resp.status != 202:
        raise BenchError(f"POST upload: {resp.status}")
    target = _target(base, resp.headers["Location"])
    out = _run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--request",
            "PATCH",
            "--upload-file",
            str(blob),
            "--header",
            "Content-Type: application/octet-stream",
            "--header",
            "Expect:",
            "--dump-header",
            "-",
            "--output",
            "/dev/null",
            base + target,
        ]
    )
    location = _header(out, "location")
    if location is None:
        raise BenchError(f"PATCH upload: no Location in\n{out}")
    target = _target(base, location)
    sep = "&" if "?" in target else "?"
    resp = _request(
        base,
        "PUT",
        f"{target}{sep}digest={urllib.parse.quote(digest)}",
        {"Content-Length": "0"},
    )
    if resp.status != 201:
        raise BenchError(f"PUT upload: {resp.status}")
    return time.perf_counter() - t0


def _header(raw: str, name: str) -> str | None:
    value = None
    for line in raw.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip().lower() == name:
            value = rest.strip()  # the last response's header wins
    return value


def curl_get(url: str, headers: Sequence[str] = ()) -> tuple[float, int]:
    """GET ``url`` to /dev/null with curl (following redirects); (seconds, bytes)."""
    argv = ["curl", "--silent", "--show-error", "--fail", "--location", "--output", "/dev/null"]
    for h in headers:
        argv += ["--header", h]
    out = _run([*argv, "--write-out", "%{time_total} %{size_download}", url])
    seconds, size = out.split()
    return float(seconds), int(size)


# --- load generators ------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests_per_s: float
    requests: int
    errors: int  # responses outside 2xx/3xx
    socket_errors: int  # connect/read/write errors and timeouts
    p50_ms: float | None
    p99_ms: float | None

    @property
    def suspect(self) -> bool:
        """Any error response, or socket errors on more than 0.1% of requests."""
        return self.errors > 0 or self.socket_errors > self.requests / 1000

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_latency(out: str, pct: str) -> float | None:
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    return float(m.group(1)) * _WRK_UNITS[m.group(2)] if m else None


def wrk(
    url: str, connections: int, duration: int, threads: int = 2, headers: Sequence[str] = ()
) -> LoadResult:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    return parse_wrk(_run([*argv, url], timeout=duration + 60))


def parse_wrk(out: str) -> LoadResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    errors = socket_errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        socket_errors = sum(int(x) for x in m.groups())
    return LoadResult(
        float(rps.group(1)),
        int(total.group(1)),
        errors,
        socket_errors,
        _wrk_latency(out, "50"),
        _wrk_latency(out, "99"),
    )


def _hey_latency(out: str, pct: str) -> float | None:
    m = re.search(rf"\b{pct}% in ([\d.]+) secs", out)
    return round(float(m.group(1)) * 1000, 3) if m else None


def hey(
    url: str, connections: int, duration: int, method: str = "GET", headers: Sequence[str] = ()
) -> LoadResult:
    argv = ["hey", "-c", str(connections), "-z", f"{duration}s", "-m", method]
    for h in headers:
        argv += ["-H", h]
    return parse_hey(_run([*argv, url], timeout=duration + 60))


def parse_hey(out: str) -> LoadResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise BenchError(f"cannot parse hey output:\n{out}")
    ok = errors = socket_errors = 0
    for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out):
        if 200 <= int(code) < 400:
            ok += int(n)
        else:
            errors += int(n)
    if m := re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", out):
        socket_errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", m.group(1), re.M))
    return LoadResult(
        float(rps.group(1)),
        ok + errors + socket_errors,
        errors,
        socket_errors,
        _hey_latency(out, "50"),
        _hey_latency(out, "99"),
    )


MANIFEST_ACCEPT = f"Accept: {MEDIA_MANIFEST}"


# --- baseline -------------------------------------------------------------------------------


def sha256_seconds(path: Path, chunk: int = _CHUNK) -> float:
    """Time spent in hashlib.sha256 over the file, read in ``chunk``-byte pieces.

    Only ``update`` is timed: reading is outside the clock, so this is the hashing floor
    that any registry verifying a digest pays.
    """
    h = hashlib.sha256()
    spent = 0.0
    with path.open("rb", buffering=0) as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(buf):
            t0 = time.perf_counter()
            h.update(view[:n])
            spent += time.perf_counter() - t0
    return spent


def busy_cpu_percent(seconds: float = 2.0) -> float:
    """Share of all CPUs busy (not idle, not iowait) over ``seconds``, from /proc/stat.

    Taken while the benchmark itself is idle, it tells how much else is running.
    """

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle  # user..steal; guest time is already in user

    total0, idle0 = snapshot()
    time.sleep(seconds)
    total1, idle1 = snapshot()
    total = total1 - total0
    return 100.0 * (total - (idle1 - idle0)) / total if total else 0.0
