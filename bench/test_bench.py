"""Checks of the benchmark's parts that need no server: ``pytest bench``."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import oci_images  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

WRK_404 = """\
Running 1s test @ http://127.0.0.1:42607/v2/bench/nope/manifests/1
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    28.71ms   27.42ms 151.58ms   85.27%
    Req/Sec   164.67     41.00   270.00     71.43%
  Latency Distribution
     50%   21.78ms
     75%   39.22ms
     90%   63.06ms
     99%  125.12ms
  345 requests in 1.10s, 90.29KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 345
Requests/sec:    314.11
Transfer/sec:     82.21KB
"""

HEY_OK = """\
Summary:
  Requests/sec:\t373.8487

Response time histogram:
  0.002 [1]\t|
  0.006 [122]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  50% in 0.0089 secs
  99% in 0.0376 secs

Status code distribution:
  [200]\t370 responses
  [404]\t8 responses
"""

HEY_REFUSED = """\
Summary:
  Requests/sec:\t8691.0235

Status code distribution:

Error distribution:
  [8726]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
"""


def test_parse_wrk() -> None:
    r = measure.parse_wrk(WRK_404)
    assert (r.requests_per_s, r.requests, r.errors, r.socket_errors) == (314.11, 345, 345, 3)
    assert (r.p50_ms, r.p99_ms) == (21.78, 125.12)
    assert r.suspect


def test_parse_hey() -> None:
    r = measure.parse_hey(HEY_OK)
    assert (r.requests_per_s, r.requests, r.errors, r.socket_errors) == (373.8487, 378, 8, 0)
    assert r.p50_ms == 8.9 and r.suspect
    refused = measure.parse_hey(HEY_REFUSED)
    assert (refused.errors, refused.socket_errors) == (0, 8726) and refused.suspect


def test_small_image_layout(tmp_path: Path) -> None:
    img = oci_images.make_small_image(tmp_path / "img", random.Random(3), "x")
    index = json.loads((img.path / "index.json").read_text())
    assert index["manifests"][0]["digest"] == img.manifest.digest
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    blobs = img.path / "blobs" / "sha256"
    config = json.loads((blobs / img.config.digest[7:]).read_text())
    assert 3 <= len(img.layers) <= 5
    for layer, diff_id in zip(img.layers, config["rootfs"]["diff_ids"], strict=True):
        data = (blobs / layer.digest[7:]).read_bytes()
        assert oci_images.sha256_digest(data) == layer.digest and len(data) == layer.size
        assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == diff_id


def test_small_images_are_reproducible(tmp_path: Path) -> None:
    a = oci_images.make_small_images(tmp_path / "a", 2, seed=5)
    b = oci_images.make_small_images(tmp_path / "b", 2, seed=5)
    assert [i.manifest.digest for i in a] == [i.manifest.digest for i in b]
    assert a[0].manifest.digest != a[1].manifest.digest


def test_big_image(tmp_path: Path) -> None:
    blob = tmp_path / "big.bin"
    digest = oci_images.make_random_file(blob, 3 << 20)
    assert digest == oci_images.file_digest(blob)
    img = oci_images.make_big_image(tmp_path / "big", blob, digest)
    assert img.layers == [oci_images.Descriptor(oci_images.MEDIA_LAYER_TAR, digest, 3 << 20)]


def test_moorage_argv() -> None:
    spec = servers.moorage_spec("python -m moorage.cli", 2, "c.yml", "m")
    assert spec.argv(5000, Path("/d")) == [
        *("python", "-m", "moorage.cli", "serve", "--host", "127.0.0.1", "--port", "5000"),
        *("--data-dir", "/d", "--workers", "2", "--config", "c.yml"),
    ]
    custom = servers.moorage_spec("run-it {host}:{port} {data_dir} -w {workers}", 3, None, "m")
    assert custom.argv(7, Path("/x")) == ["run-it", "127.0.0.1:7", "/x", "-w", "3"]


def test_ratios_and_table() -> None:
    results = {
        "distribution": {
            "metrics": {"small_push_s": 2.0, "manifest_get_rps": 1000.0},
            "samples": {"small_push_s": [2.0, 3.0]},
        },
        "moorage": {
            "metrics": {"small_push_s": 3.0, "manifest_get_rps": 500.0},
            "samples": {"small_push_s": [3.0, 3.3]},
            "invalid": ["manifest_get_rps"],
        },
    }
    rel = report.ratios(results)
    assert rel["moorage"]["small_push_s"] == 1.5 and rel["moorage"]["manifest_get_rps"] == 0.5
    labels = {"images": "40", "parallel": "4", "big": "1 GiB", "conns": "64", "blob_kib": "150"}
    text = report.table(results, rel, labels)
    assert "push 40 small images" in text and "1.50x" in text and "500 !" in text
    assert "50%" in text  # the spread of distribution's push rounds


def test_process_tree_and_rss() -> None:
    tree = servers.process_tree(os.getppid())
    assert os.getpid() in tree
    assert servers.rss_bytes([os.getpid()]) > 1 << 20


def test_gc_bench_small_registry(tmp_path: Path) -> None:
    """bench/gc.py end to end on a tiny registry (SQLite, filesystem): the pass removes exactly
    the garbage, rows and objects, and leaves the live sample."""
    import asyncio
    import importlib.util

    # ``gc`` is a built-in module's name: load the script under another.
    spec = importlib.util.spec_from_file_location("gc_bench", Path(__file__).parent / "gc.py")
    assert spec is not None and spec.loader is not None
    gc_bench = importlib.util.module_from_spec(spec)
    sys.modules["gc_bench"] = gc_bench
    spec.loader.exec_module(gc_bench)
    shape = gc_bench.Shape(
        300, 30, blobs_per_manifest=4, shared=20, repositories=10, live_sample=50
    )
    r = asyncio.run(gc_bench.scenario("t", shape, "fs", "sqlite", tmp_path, None))
    assert r.checks == "ok"
    assert (r.removed_manifests, r.removed_blobs, r.objects_deleted) == (30, 120, 120)


def test_wait_idle_charges_busy_time_after_an_idle_gap() -> None:
    """Work a server starts after a pause (a job poll) is counted; the pause is not."""
    import subprocess
    import time

    code = (
        "import time\n"
        "time.sleep(0.8)\n"
        "end = time.process_time() + 0.6\n"
        "while time.process_time() < end: pass\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)  # past the interpreter's start
        t0 = time.perf_counter()
        busy = servers.wait_idle(proc.pid, settle=1.5)
        waited = time.perf_counter() - t0
        assert 0.4 <= busy <= 1.5, busy  # ~0.6 s of CPU (more wall on a busy machine)
        assert waited >= 0.5 + 0.6 + 1.5 - 0.3, waited  # it waited through the gap and the work
        assert servers.wait_idle(proc.pid) < 0.25  # idle now: at most one interval's tail
    finally:
        proc.kill()
        proc.wait()
