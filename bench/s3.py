"""One Moorage node on S3 (moto on loopback) beside one on the filesystem: a large blob pushed
(curl: POST, one streamed PATCH, PUT ?digest=) and pulled (curl GET, streamed through the node;
and for S3 also with ``storage.s3.redirect`` on, curl following the 307 to the presigned URL).

    python bench/s3.py                 # 1 GiB, best of 2 rounds
    python bench/s3.py --size-mib 256 --rounds 3

Everything runs on 127.0.0.1. moto is a Python server keeping objects in memory: it, not the
driver, bounds the S3 figures; compare them with the filesystem node of the same run.
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

ACCESS_KEY, SECRET_KEY = "bench-key", "bench-secret"


def start_moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", servers.HOST, "-p", str(port)],
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{servers.HOST}:{port}/moto-api/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto did not start")


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ).create_bucket(Bucket=bucket)


QUIET = {  # as bench/run.py runs Moorage: no auth, error-level logs, no access log
    "MOORAGE_AUTH_ENABLED": "false",
    "MOORAGE_LOG_LEVEL": "error",
    "MOORAGE_LOG_ACCESS_LOG": "false",
}


def s3_env(endpoint: str, bucket: str, redirect: bool) -> dict[str, str]:
    return {
        **QUIET,
        "MOORAGE_STORAGE_DRIVER": "s3",
        "MOORAGE_STORAGE_S3_BUCKET": bucket,
        "MOORAGE_STORAGE_S3_ENDPOINT": endpoint,
        "MOORAGE_STORAGE_S3_PATH_STYLE": "true",
        "MOORAGE_STORAGE_S3_REDIRECT": "true" if redirect else "false",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--moorage", default=f"{sys.executable} -m moorage.cli")
    args = ap.parse_args()
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="moorage-s3-bench-") as tmp_s:
        tmp = Path(tmp_s)
        blob = tmp / "blob"
        h = hashlib.sha256()
        with open(blob, "wb") as f:
            for _ in range(args.size_mib):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                f.write(chunk)
        digest = "sha256:" + h.hexdigest()
        port = servers.free_port()
        endpoint = f"http://{servers.HOST}:{port}"
        moto = start_moto(port)
        try:
            make_bucket(endpoint, "bench")
            specs = {
                "filesystem": servers.moorage_spec(args.moorage, 1, None, "fs", dict(QUIET)),
                "s3": servers.moorage_spec(
                    args.moorage, 1, None, "s3", s3_env(endpoint, "bench", False)
                ),
                "s3-redirect": servers.moorage_spec(
                    args.moorage, 1, None, "s3r", s3_env(endpoint, "bench", True)
                ),
            }
            results: dict[str, dict[str, float]] = {}
            for rnd in range(args.rounds):
                for name, spec in specs.items():
                    work = tmp / f"{name}-{rnd}"
                    work.mkdir()
                    # Both S3 nodes of a round share one database, as nodes of a cluster do.
                    spec.env["MOORAGE_DATABASE_URL"] = f"sqlite:///{tmp}/{name[:2]}-{rnd}.db"
                    with servers.running(spec, work) as srv:
                        base = srv.base_url
                        repo = f"bench/s3-{rnd}"
                        r = results.setdefault(name, {"push": 0.0, "pull": 0.0, "rss": 0.0})
                        with servers.RssSampler(srv.pid) as rss:
                            if name != "s3-redirect":
                                secs = measure.curl_push_blob(base, repo, blob, digest)
                                r["push"] = max(r["push"], size / secs / 1e6)
                                src = repo
                            else:
                                src = "bench/s3-" + str(rnd)  # pushed by the "s3" node
                            secs, got = measure.curl_get(f"{base}/v2/{src}/blobs/{digest}")
                            if got != size:
                                raise RuntimeError(f"{name}: pulled {got} bytes, not {size}")
                            r["pull"] = max(r["pull"], size / secs / 1e6)
                        r["rss"] = max(r["rss"], rss.peak / 2**20)
            print(f"\n{args.size_mib} MiB blob, best of {args.rounds} rounds (MB/s; peak RSS MiB)")
            print("| node | push (curl) MB/s | pull (curl) MB/s | peak RSS MiB |")
            print("| --- | ---: | ---: | ---: |")
            for name, r in results.items():
                push = f"{r['push']:,.0f}" if r["push"] else "(pushed by s3)"
                print(f"| {name} | {push} | {r['pull']:,.0f} | {r['rss']:,.0f} |")
        finally:
            moto.terminate()
            moto.wait(15)


if __name__ == "__main__":
    main()
