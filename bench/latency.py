"""Per-request latency of a blob push and a manifest push, one request at a time.

    python bench/latency.py http://127.0.0.1:5000 [--rounds 30] [--size 150000]

Against a registry without authentication (``moorage serve --no-auth`` or Distribution). Prints
the median and 90th percentile of each request kind: HEAD blob, POST (open upload), PATCH, PUT
(commit), manifest PUT. Used to find where a small-image push spends its time (see
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import uuid

import httpx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--size", type=int, default=150_000)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in ("head", "post", "patch", "put", "manifest")}

    def timed(c: httpx.Client, kind: str, method: str, url: str, **kw: object) -> httpx.Response:
        t = time.perf_counter()
        r = c.request(method, url, **kw)  # type: ignore[arg-type]
        times[kind].append(time.perf_counter() - t)
        if kind != "head" and r.status_code >= 300:
            raise SystemExit(f"{method} {url}: {r.status_code} {r.text[:200]}")
        return r

    run = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=args.url, timeout=60) as c:
        for i in range(args.rounds):
            repo = f"latency/{run}/r{i}"
            blob = os.urandom(args.size)
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            timed(c, "head", "HEAD", f"/v2/{repo}/blobs/{digest}")
            r = timed(c, "post", "POST", f"/v2/{repo}/blobs/uploads/")
            r = timed(c, "patch", "PATCH", r.headers["Location"], content=blob)
            # Distribution's Location carries its own query (_state=...): add to it.
            loc = r.headers["Location"]
            sep = "&" if "?" in loc else "?"
            timed(c, "put", "PUT", f"{loc}{sep}digest={digest}")
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest,
                    "size": len(blob),
                },
                "layers": [],
            }
            timed(
                c,
                "manifest",
                "PUT",
                f"/v2/{repo}/manifests/1",
                content=json.dumps(manifest).encode(),
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
    for kind, values in times.items():
        values.sort()
        median = values[len(values) // 2] * 1000
        p90 = values[int(len(values) * 0.9)] * 1000
        print(f"{kind:9} median {median:6.2f} ms   p90 {p90:6.2f} ms")


if __name__ == "__main__":
    main()
