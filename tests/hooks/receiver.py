"""A webhook receiver for tests: a real HTTP server on a free loopback port that records every
delivery (method, path, headers, raw body) and answers as told — 200, an error status such as
500, or no answer for a while (a timeout for the sender).

    with WebhookReceiver() as rx:
        rx.respond_with(500, times=2)        # the next two deliveries fail, then 200 again
        rx.hang(seconds=5, times=1)          # the next delivery gets no answer for 5 s
        ... deliveries to rx.url("/hook") ...
        got = rx.wait_for(3)                 # the first three deliveries (or fail after a timeout)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 10 * 1024 * 1024


@dataclass(frozen=True)
class Delivery:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float  # time.time()
    answered: int  # the status we answered (0: no answer, the sender gave up first)


@dataclass
class _Plan:
    status: int
    delay: float = 0.0


class WebhookReceiver:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._plans: deque[_Plan] = deque()
        self._cond = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self.send_error(413)
                    return
                body = self.rfile.read(length) if length else b""
                plan = receiver._next_plan()
                if plan.delay:
                    receiver._release.wait(plan.delay)
                answered = plan.status
                try:
                    payload = b"{}"
                    self.send_response(plan.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the sender hung up while we waited
                    answered = 0
                receiver._record(
                    Delivery(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.time(),
                        answered,
                    )
                )

            do_POST = _handle  # noqa: N815
            do_PUT = _handle  # noqa: N815
            do_GET = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- control ---------------------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond_with(self, status: int, times: int = 1) -> None:
        with self._cond:
            self._plans.extend(_Plan(status) for _ in range(times))

    def hang(self, seconds: float, times: int = 1, status: int = 200) -> None:
        """Hold the next *times* deliveries without an answer for *seconds* (or until
        :meth:`release`), then answer *status* if the sender is still there."""
        with self._cond:
            self._plans.extend(_Plan(status, seconds) for _ in range(times))

    def release(self) -> None:
        self._release.set()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(
                    f"{len(self.deliveries)} deliveries after {timeout}s, expected {count}"
                )
            return list(self.deliveries[:count])

    # --- internals ---------------------------------------------------------------------------

    def _next_plan(self) -> _Plan:
        with self._cond:
            return self._plans.popleft() if self._plans else _Plan(200)

    def _record(self, d: Delivery) -> None:
        with self._cond:
            self.deliveries.append(d)
            self._cond.notify_all()

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
