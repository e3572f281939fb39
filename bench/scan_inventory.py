"""Inventory speed, in process (no server): one large layer through the walker and the
analyzers, and 40 images sharing one base layer merged from cached layer records.

    flock /tmp/moorage-bench.lock python bench/scan_inventory.py --mib 1024

The large layer is a gzip tar (level 1) of incompressible files plus a real dpkg status file
(this machine's), so the figure is dominated by inflating and walking the archive; what the
analyzers read is small. The 40-image figure is the merge of cached records (what a shared
base costs each image after the first)."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tarfile
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moorage.scan.inventory import analyze_layer, merge  # noqa: E402


def big_layer(mib: int) -> bytes:
    """A gzip layer of *mib* MiB of files (1 MiB each), streamed into memory."""
    out = bytearray()
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)

    class Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            data = bytes(b)  # type: ignore[call-overload]
            out.extend(comp.compress(data))
            return len(data)

    with tarfile.open(fileobj=Sink(), mode="w|") as tar:
        status = Path("/var/lib/dpkg/status").read_bytes()
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = len(status)
        tar.addfile(info, io.BytesIO(status))
        chunk = os.urandom(1 << 20)
        for i in range(mib):
            info = tarfile.TarInfo(f"data/{i // 100}/f{i}.bin")
            info.size = len(chunk)
            tar.addfile(info, io.BytesIO(chunk))
    out.extend(comp.flush())
    return bytes(out)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), 1 << 20):
        yield bytes(view[i : i + (1 << 20)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    args = ap.parse_args()
    blob = big_layer(args.mib)
    t0, c0 = time.perf_counter(), time.process_time()
    record = asyncio.run(analyze_layer(chunks(blob)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    inv = merge([("sha256:" + "1" * 64, record)])
    print(f"layer {args.mib} MiB uncompressed ({len(blob) >> 20} MiB gzip): {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU, {args.mib / wall:.0f} MiB/s; {len(inv.packages)} packages, "
          f"errors {list(inv.errors)}")  # fmt: skip
    t0 = time.perf_counter()
    for n in range(40):
        app = {"v": 1, "files": {}, "removed": [], "opaque": [], "errors": []}
        merge([("sha256:" + "1" * 64, record), (f"sha256:{n:064d}", app)])
    print(f"40 images sharing that base, merged from cached records: "
          f"{time.perf_counter() - t0:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
