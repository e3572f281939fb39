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

    def timed(kind: str, call: object) -> httpx.Response:
        t = time.perf_counter()
        r = call()  # type: ignore[operator]
        times[kind].append(time.perf_counter() - t)
        assert isinstance(r, httpx.Response) and r.status_code < 300 or kind == "head", r
        return r  # type: ignore[return-value]

    run = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=args.url, timeout=60) as c:
        for i in range(args.rounds):
            repo = f"latency/{run}/r{i}"
            blob = os.urandom(args.size)
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            timed("head", lambda: c.head(f"/v2/{repo}/blobs/{digest}"))
            r = timed("post", lambda: c.post(f"/v2/{repo}/blobs/uploads/"))
            loc = r.headers["Location"]
            r = timed("patch", lambda: c.patch(loc, content=blob))
            loc = r.headers["Location"]
            timed("put", lambda: c.put(loc, params={"digest": digest}))
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": digest,
                        "size": len(blob),
                    },
                    "layers": [],
                }
            ).encode()
            timed(
                "manifest",
                lambda: c.put(
                    f"/v2/{repo}/manifests/1",
                    content=manifest,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                ),
            )
    for kind, values in times.items():
        values.sort()
        median = values[len(values) // 2] * 1000
        p90 = values[int(len(values) * 0.9)] * 1000
        print(f"{kind:9} median {median:6.2f} ms   p90 {p90:6.2f} ms")


if __name__ == "__main__":
    main()
