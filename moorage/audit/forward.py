"""Forwarding of stored audit records to syslog (RFC 5424) and to an HTTP endpoint.

The flusher hands each forwarder the records it has just committed (``submit``: a deque append,
never blocking). Every forwarder drains its own bounded queue in its own task, retrying with
backoff while the receiver is unreachable; when the queue is full the oldest records are dropped
(and counted) -- the database keeps every record, so nothing is lost for ``moorage audit export``.
Delivery is at least once: a batch that failed part way is sent again whole; receivers can
de-duplicate on the record ``id``/``hash``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from .. import __version__
from ..aio import cancel_and_wait
from .config import SYSLOG_FACILITIES, HTTPForwardConfig, SyslogConfig, split_host_port
from .events import AuditRecord, format_time

log = logging.getLogger("moorage.audit")

_MAX_BACKOFF = 30.0
_WARN_EVERY = 60.0
# Largest UDP syslog message sent (RFC 5426 receivers SHOULD take 2048 octets; rsyslog's default
# maximum is 8k). Larger records are sent without their details (marked truncated).
UDP_MAX_MESSAGE = 8192


class ForwardError(Exception):
    pass


class Forwarder:
    """A bounded queue of records and the task that delivers them."""

    name = "forwarder"

    def __init__(self, queue_size: int = 10_000, batch_size: int = 200) -> None:
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.dropped = 0
        self.sent = 0
        self._queue: deque[AuditRecord] = deque()
        self._ready: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._last_warning = 0.0

    # -- called by the flusher ---------------------------------------------------------------

    def submit(self, records: Iterable[AuditRecord]) -> None:
        for rec in records:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(rec)
        if self._ready is not None and self._idle is not None:
            self._idle.clear()
            self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._ready = asyncio.Event()
            self._idle = asyncio.Event()
            self._closing = asyncio.Event()
            if self._queue:
                self._ready.set()
            self._task = asyncio.create_task(self._run(), name=f"audit-forward-{self.name}")

    async def close(self, grace: float = 5.0) -> None:
        """Give queued records up to *grace* seconds to go out, then stop."""
        task, self._task = self._task, None
        if task is not None:
            assert self._idle is not None and self._closing is not None
            if self._queue or not self._idle.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(grace):
                        await self._idle.wait()
            self._closing.set()  # the loop ends even if a cancellation below gets lost
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)
        if self._queue:
            log.warning(
                "audit %s forwarding stopped with %d record(s) undelivered",
                self.name,
                len(self._queue),
            )
        await self.aclose()

    async def _run(self) -> None:
        assert self._ready is not None and self._idle is not None and self._closing is not None
        failures = 0
        while not self._closing.is_set():
            if not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            self._idle.clear()
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            try:
                await self.send(batch)
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            except Exception as exc:  # noqa: BLE001 - forwarding never fails a request
                self._requeue(batch)
                failures += 1
                self._warn(exc)
                # Back off; close() ends the wait at once.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(_MAX_BACKOFF, 0.5 * 2 ** min(failures - 1, 10))):
                        await self._closing.wait()
                continue
            self.sent += len(batch)
            if failures:
                log.info("audit %s forwarding recovered", self.name)
            failures = 0
            self._failing_since = None

    def _requeue(self, batch: Sequence[AuditRecord]) -> None:
        for rec in reversed(batch):  # oldest are dropped first when the queue is full
            if len(self._queue) >= self.queue_size:
                self.dropped += 1
            else:
                self._queue.appendleft(rec)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning(
                "audit %s forwarding failed (%s: %s); %d record(s) queued, %d dropped; retrying",
                self.name,
                type(exc).__name__,
                exc,
                len(self._queue),
                self.dropped,
            )

    # -- the transport -----------------------------------------------------------------------

    async def send(self, batch: Sequence[AuditRecord]) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# --- syslog --------------------------------------------------------------------------------

_SEVERITY = {"success": 6, "partial": 5, "failure": 5, "denied": 4}  # info, notice, warning


def _printable(value: str, limit: int) -> str:
    text = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return text or "-"


def format_rfc5424(
    rec: AuditRecord,
    *,
    app_name: str = "moorage",
    facility: int = 10,
    hostname: str | None = None,
    procid: int | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - {json record}``.

    MSGID is the action; the MSG is the record as JSON (ASCII, so no BOM is needed). With
    *max_bytes*, an oversized record is sent without its details (``"details_truncated": true``).
    """
    pri = facility * 8 + _SEVERITY.get(rec.result, 5)
    header = " ".join(
        [
            f"<{pri}>1",
            format_time(rec.time),
            _printable(hostname if hostname is not None else socket.gethostname(), 255),
            _printable(app_name, 48),
            _printable(str(procid if procid is not None else os.getpid()), 128),
            _printable(rec.action, 32),
            "-",
        ]
    )
    body: dict[str, Any] = rec.to_dict()
    line = f"{header} {json.dumps(body, ensure_ascii=True)}".encode("ascii")
    if max_bytes is not None and len(line) > max_bytes:
        body["details"] = {}
        body["details_truncated"] = True
        body["user_agent"] = (body["user_agent"] or "")[:200] or None
        line = f"{header} {json.dumps(body, ensure_ascii=True)}".encode("ascii")[:max_bytes]
    return line


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogForwarder(Forwarder):
    name = "syslog"

    def __init__(
        self, config: SyslogConfig, queue_size: int = 10_000, batch_size: int = 200
    ) -> None:
        super().__init__(queue_size, batch_size)
        if not config.address:
            raise ValueError("syslog forwarding needs audit.syslog.address")
        self.host, self.port = split_host_port(config.address)
        self.protocol = config.protocol
        self.app_name = config.app_name
        self.facility = SYSLOG_FACILITIES[config.facility]
        self.hostname = socket.gethostname()
        self.timeout = 10.0
        self._sock: socket.socket | None = None
        self._sock_addr: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _messages(self, batch: Sequence[AuditRecord]) -> list[bytes]:
        limit = UDP_MAX_MESSAGE if self.protocol == "udp" else None
        return [
            format_rfc5424(
                rec,
                app_name=self.app_name,
                facility=self.facility,
                hostname=self.hostname,
                max_bytes=limit,
            )
            for rec in batch
        ]

    async def send(self, batch: Sequence[AuditRecord]) -> None:
        messages = self._messages(batch)
        if self.protocol == "udp":
            await self._send_udp(messages)
        else:
            await self._send_tcp(messages)

    async def _send_udp(self, messages: Sequence[bytes]) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is None:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            if not infos:
                raise ForwardError(f"cannot resolve {self.host}")
            family, _type, proto, _name, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            sock.setblocking(False)
            self._sock, self._sock_addr = sock, addr
        try:
            for message in messages:
                # A datagram send on a non-blocking socket completes or fails at once (uvloop,
                # the server's loop, has no sock_sendto). A full buffer raises BlockingIOError,
                # an OSError: the batch is retried later.
                self._sock.sendto(message, self._sock_addr)
        except OSError:
            self._close_udp()
            raise

    def _close_udp(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _send_tcp(self, messages: Sequence[bytes]) -> None:
        if self._writer is not None and self._reader is not None and self._reader.at_eof():
            await self._close_tcp()  # the receiver closed: reconnect rather than write into it
        writer = self._writer or await self._connect()
        try:
            writer.write(b"".join(octet_frame(m) for m in messages))
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except (OSError, TimeoutError, ConnectionError):
            await self._close_tcp()
            raise

    async def _connect(self) -> asyncio.StreamWriter:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        self._reader, self._writer = reader, writer
        return writer

    async def _close_tcp(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await writer.wait_closed()

    async def aclose(self) -> None:
        self._close_udp()
        await self._close_tcp()


# --- HTTP ----------------------------------------------------------------------------------

# A receiver answering these will refuse the same body again: drop the batch (logged).
_PERMANENT = frozenset({400, 413, 422})


class HTTPForwarder(Forwarder):
    """POSTs ``{"events": [record, ...]}`` (JSON) to the configured URL."""

    name = "http"

    def __init__(
        self,
        config: HTTPForwardConfig,
        queue_size: int = 10_000,
        batch_size: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(queue_size, batch_size)
        if not config.url:
            raise ValueError("HTTP forwarding needs audit.http.url")
        self.url = config.url
        self.max_retries = config.max_retries
        self.backoff = config.backoff_seconds
        headers = {"User-Agent": f"moorage/{__version__} audit-forwarder", **config.headers}
        self._client = httpx.AsyncClient(
            timeout=config.timeout, headers=headers, transport=transport
        )

    async def send(self, batch: Sequence[AuditRecord]) -> None:
        body = {"events": [rec.to_dict() for rec in batch]}
        error = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(_MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)))
            try:
                resp = await self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if resp.is_success:
                return
            if resp.status_code in _PERMANENT:
                self.dropped += len(batch)
                log.error(
                    "audit http receiver refused a batch of %d record(s) (ids %d..%d) with "
                    "status %d; dropped (they stay in the database)",
                    len(batch),
                    batch[0].id,
                    batch[-1].id,
                    resp.status_code,
                )
                return
            error = f"status {resp.status_code}"
        raise ForwardError(
            f"POST {self.url} failed after {self.max_retries + 1} attempt(s): {error}"
        )

    async def aclose(self) -> None:
        await self._client.aclose()
