"""Sending deliveries: the ``hooks.deliver`` job, the receiver address policy, the request.

One job per delivery, on the shared queue, so a delivery survives node restarts and is sent by
whichever node claims it; a failed attempt raises, and the queue retries it with exponential
backoff (``jobs.retry_base_seconds`` doubling to ``jobs.retry_max_seconds``) until
``webhooks.max_attempts``. Every attempt is logged with its HTTP status (or error) and duration.

Delivery is at least once: a node that dies after the receiver answered but before the attempt
was recorded sends it again. Receivers deduplicate by the event ``id`` (the same on every
attempt: the body is rendered once) or by ``X-Moorage-Delivery``.

Server-side request forgery: a webhook owner chooses the URL, the registry makes the request
from inside its network. The host is resolved here, every address it resolves to must be
allowed (public, or inside ``webhooks.allowed_networks``), and the request goes to the checked
address (Host header and TLS server name kept), so a DNS answer cannot change in between.
Redirects are not followed; proxies from the environment are not used; the answer's body is
read only up to a few kilobytes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncEngine

from .. import __version__
from ..auth.keycrypt import KeyDecryptionError, open_text
from ..db.engine import reader
from ..jobs.runner import current_attempt, node_name
from ..metrics.definitions import METRICS
from . import queries as q
from .config import WebhooksConfig
from .signing import HEADER, sign

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("moorage.hooks")

DELIVER = "hooks.deliver"
PRUNE = "hooks.prune"
MAX_URL = 2048
MAX_ANSWER = 4096
USER_AGENT = f"Moorage-Webhooks/{__version__}"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The receiver's address is not one the operator allows (message says why)."""


class DeliveryFailed(Exception):
    """An attempt failed; the job queue retries it."""


def secret_context(uid: str) -> str:
    return f"webhook:{uid}"


def check_url(url: str, policy: AddressPolicy | None = None) -> str:
    """A receiver URL as it may be stored: http(s), a host, no credentials, no fragment; an IP
    literal (or ``localhost``) must be allowed by *policy* already. Raises ValueError."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise ValueError(f"url is a URL of at most {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("url must start with https:// or http://")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials (the signature authenticates)")
    if parts.fragment:
        raise ValueError("url must not have a #fragment")
    if policy is not None:
        host = parts.hostname
        literal = _literal(host)
        if literal is not None and not policy.allows(literal):
            raise ValueError(policy.refusal(host, literal))
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            if not policy.allows(ipaddress.ip_address("127.0.0.1")):
                raise ValueError(policy.refusal(host, ipaddress.ip_address("127.0.0.1")))
    return url


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AddressPolicy:
    """Which receiver addresses are allowed (``webhooks.public_networks``,
    ``webhooks.allowed_networks``)."""

    def __init__(self, config: WebhooksConfig) -> None:
        self.public = config.public_networks
        self.networks = config.networks()

    def allows(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self.networks):
            return True
        return self.public and ip.is_global and not ip.is_multicast

    @staticmethod
    def refusal(host: str, ip: IPAddress) -> str:
        return (
            f"{host} is {ip}, which webhooks may not call: loopback, private and link-local "
            "addresses need the operator's webhooks.allowed_networks"
        )

    async def resolve(self, host: str, port: int) -> IPAddress:
        """The address to connect to: every address *host* resolves to must be allowed."""
        literal = _literal(host)
        if literal is not None:
            candidates = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(10):
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, TimeoutError) as exc:
                raise AddressRefused(f"cannot resolve {host}: {exc}") from None
            candidates = []
            for info in infos:
                ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                if ip not in candidates:
                    candidates.append(ip)
            if not candidates:
                raise AddressRefused(f"{host} resolves to no address")
        for ip in candidates:
            if not self.allows(ip):
                raise AddressRefused(self.refusal(host, ip))
        return candidates[0]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deliverer:
    """Runs ``hooks.deliver`` jobs. One per process (it keeps a connection pool)."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: WebhooksConfig,
        key_secret: str | None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.engine = engine  # writer(engine)
        self._read = reader(engine)  # built once: the same pool, never SQLite's write lock
        self.config = config
        self.key_secret = key_secret
        self.policy = AddressPolicy(config)
        self.node = node_name()
        self._http = http

    @property
    def http(self) -> httpx.AsyncClient:
        """The connection pool, made at the first delivery: httpx (and httpcore, trio) is not
        imported by a server with no webhooks to deliver."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout),
                follow_redirects=False,
                trust_env=False,  # an environment proxy would reach what the policy refuses
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The job handler: one attempt at one delivery."""
        raw = payload.get("delivery")
        if not isinstance(raw, int):
            return {"skipped": "no delivery id"}
        async with self._read.connect() as conn:
            delivery = await q.get_delivery(conn, raw)
            hook = await q.get_webhook(conn, delivery.webhook_id) if delivery else None
        if delivery is None or hook is None:
            return {"skipped": "the delivery or its webhook was deleted"}
        if delivery.state in ("succeeded", "failed"):
            return {"skipped": f"already {delivery.state}"}
        if not hook.enabled:
            async with self.engine.begin() as conn:
                await q.finish_delivery(conn, delivery.id, "failed", "the webhook is disabled")
            return {"skipped": "the webhook is disabled"}
        number = delivery.attempts + 1
        job = current_attempt()
        last = number >= delivery.max_attempts or (job is not None and job[0] >= job[1])
        started = datetime.now(UTC)
        try:
            secret = open_text(self.key_secret, secret_context(hook.uid), hook.secret)
        except KeyDecryptionError as exc:
            outcome = Outcome(None, str(exc), 0.0)
        else:
            assert delivery.body is not None
            outcome = await self.send(
                hook.url,
                delivery.body.encode("utf-8"),
                delivery.content_type,
                secret,
                {"X-Moorage-Event": delivery.kind, "X-Moorage-Delivery": delivery.uid},
            )
        state = "succeeded" if outcome.ok else ("failed" if last else "retrying")
        async with self.engine.begin() as conn:
            await q.record_attempt(
                conn,
                delivery.id,
                number=number,
                started_at=started,
                duration_ms=outcome.duration_ms,
                status=outcome.status,
                error=outcome.error,
                node=self.node,
                state=state,
            )
        if outcome.ok:
            return {"status": outcome.status, "attempt": number}
        reason = outcome.error or f"the receiver answered {outcome.status}"
        raise DeliveryFailed(f"delivery {delivery.id} attempt {number}: {reason}")

    async def send(
        self,
        url: str,
        body: bytes,
        content_type: str,
        secret: str,
        extra_headers: dict[str, str],
    ) -> Outcome:
        """POST *body* to *url*, signed; never raises."""
        import httpx

        t0 = time.perf_counter()

        def done(status: int | None, error: str | None, outcome: str) -> Outcome:
            elapsed = time.perf_counter() - t0
            METRICS.webhook_deliveries.labels(outcome).inc()
            if status is not None:
                METRICS.webhook_delivery_duration.observe(elapsed)
            return Outcome(status, error, round(elapsed * 1000, 2))

        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            ip = await self.policy.resolve(host, port)
        except AddressRefused as exc:
            return done(None, str(exc), "failure")
        except ValueError as exc:
            return done(None, f"invalid URL: {exc}", "failure")
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        if parts.port:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rpartition("@")[2]
        headers = {
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
            "Host": host_header,
            HEADER: sign(secret, body),
            **extra_headers,
        }
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self.http.stream(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                ) as r:
                    read = 0
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_ANSWER:
                            break
                    status = r.status_code
        except TimeoutError:
            return done(None, f"no answer within {self.config.timeout:g} s", "timeout")
        except httpx.TimeoutException:
            return done(None, f"no answer within {self.config.timeout:g} s", "timeout")
        except httpx.HTTPError as exc:
            return done(None, f"{type(exc).__name__}: {str(exc)[:300]}", "failure")
        if 200 <= status < 300:
            return done(status, None, "success")
        return done(status, None, "failure")
