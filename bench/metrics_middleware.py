"""Cost per request of the metrics middleware (moorage.metrics.MetricsMiddleware).

    python bench/metrics_middleware.py [--requests 200000] [--rounds 5]

Drives an ASGI application directly in one event loop, the way uvicorn calls it: a stand-in
that answers like a manifest GET (start + one 1.5 KB body), called bare and wrapped, on the
paths of a manifest GET, a blob HEAD, an upload PATCH (with a request body) and an API call.
Prints the added cost per request in microseconds (best round of each, so that noise from
other processes counts as little as possible) and the route classification alone. No server,
no sockets: this isolates the middleware from everything else a request costs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry

from moorage.metrics import MetricsMiddleware, MoorageMetrics, RouteClassifier

BODY = b"x" * 1500
DIGEST = "sha256:" + "ab" * 32
CASES = {
    "manifest GET": ("GET", "/v2/library/alpine/manifests/3.20"),
    "blob HEAD": ("HEAD", f"/v2/library/alpine/blobs/{DIGEST}"),
    "upload PATCH": ("PATCH", "/v2/team/app/blobs/uploads/0d5c3f2e-6b0a-4c8e-9a57-3f1f0c7c1a11"),
    "API GET": ("GET", "/api/v1/repositories/team/app/-/tags"),
}


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["method"] == "PATCH":
        await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": BODY})


async def _send(message: Any) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _loop(target: Any, scope: dict[str, Any], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await target(scope, _receive, _send)
    return time.perf_counter() - t


async def main_async(n: int, rounds: int) -> None:
    metrics = MoorageMetrics(CollectorRegistry())
    api = ["/api/v1/repositories/{repository}", "/api/v1/repositories/{repository}/-/tags"]
    wrapped = MetricsMiddleware(app, metrics, RouteClassifier.from_templates(api))
    print(f"{n} requests per round, best of {rounds} rounds")
    print(f"{'case':<14} {'bare µs':>8} {'wrapped µs':>11} {'added µs':>9}")
    for name, (method, path) in CASES.items():
        scope = {"type": "http", "method": method, "path": path, "headers": []}
        bare = min([await _loop(app, scope, n) for _ in range(rounds)])
        mid = min([await _loop(wrapped, scope, n) for _ in range(rounds)])
        print(f"{name:<14} {bare / n * 1e6:8.2f} {mid / n * 1e6:11.2f} {(mid - bare) / n * 1e6:9.2f}")
    classify = RouteClassifier.from_templates(api)
    for name, (_m, path) in CASES.items():
        t = time.perf_counter()
        for _ in range(n):
            classify(path)
        print(f"classify {name:<14} {(time.perf_counter() - t) / n * 1e6:6.3f} µs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    asyncio.run(main_async(args.requests, args.rounds))


if __name__ == "__main__":
    main()
