"""HTTP plumbing under every registry call: authentication (Basic and the token flow), retries
with backoff, redirects, error mapping, bounded error bodies.

:class:`Transport` is the base of :class:`moorage.replication.client.RegistryClient`; it knows
the registry's origin and its credentials, nothing of manifests or blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ssl
import time
from collections.abc import AsyncIterable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

from .auth import Challenge, Credentials, Token, parse_challenges
from .bounds import Limits, load_json, read_bounded
from .errors import (
    NotFound,
    PeerProtocolError,
    PeerUnavailable,
    RegistryError,
    TLSFailure,
    Unauthorized,
)
from .models import RetryPolicy, Timeouts, TLSOptions
from .ratelimit import BandwidthLimiter

if TYPE_CHECKING:
    import httpx

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_LIMIT = 64 * 1024
_TOKEN_BODY_LIMIT = 1024 * 1024


class Transport:
    """Sends requests to one registry with its credentials (see :class:`RegistryClient`)."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        tls: TLSOptions | None = None,
        timeouts: Timeouts | None = None,
        limiter: BandwidthLimiter | None = None,
        *,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        max_connections: int = 32,
        name_mapper: Callable[[str], str] | None = None,
        user_agent: str = "moorage-replication",
        auth_scheme: Literal["basic"] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        url = httpx.URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"registry URL must be http(s)://host[:port], not {base_url[:100]!r}")
        self.base_url = url
        self.credentials = credentials
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.limits = limits or Limits()
        self.name_mapper = name_mapper
        self._http = httpx.AsyncClient(
            verify=(tls or TLSOptions()).context(),
            timeout=(timeouts or Timeouts()).httpx(),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            # Blobs and manifests are hashed as sent: no transparent decompression.
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )
        # "basic" or "bearer" once a challenge told us; "basic" from the start when the caller
        # knows the registry takes Basic credentials on every request (saves a round trip).
        self._scheme: str | None = auth_scheme if credentials is not None else None
        self._bearer: Challenge | None = None
        self._tokens: dict[frozenset[str], Token] = {}
        self._token_locks: dict[frozenset[str], asyncio.Lock] = {}
        self._extra_scopes: dict[frozenset[str], frozenset[str]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.base_url)!r})"

    # --- URLs and authentication ------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        import httpx

        return httpx.URL(str(self.base_url) + path)

    def _same_origin(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (
            self.base_url.scheme,
            self.base_url.host,
            self.base_url.port,
        )

    def _resolve(self, request_url: httpx.URL, location: str) -> httpx.URL:
        if len(location) > self.limits.max_header_bytes:
            raise PeerProtocolError("Location header is too long")
        url = request_url.join(location)
        if url.scheme not in ("http", "https"):
            raise PeerProtocolError(f"Location {location[:100]!r} is not an http(s) URL")
        return url

    async def _authorization(self, url: httpx.URL, scopes: tuple[str, ...]) -> str | None:
        if not self._same_origin(url):
            return None  # never hand our credentials to a storage backend or another host
        if self._scheme == "basic" and self.credentials is not None:
            return self.credentials.basic_header()
        if self._scheme == "bearer" and self._bearer is not None:
            token = await self._token(frozenset(scopes))
            return f"Bearer {token.value}"
        return None

    async def _token(self, scopes: frozenset[str], refresh: bool = False) -> Token:
        if len(self._token_locks) > 4096:  # bounded: forget the idle ones
            self._token_locks = {k: v for k, v in self._token_locks.items() if v.locked()}
        lock = self._token_locks.setdefault(scopes, asyncio.Lock())
        async with lock:
            token = self._tokens.get(scopes)
            if token is not None and token.fresh() and not refresh:
                return token
            assert self._bearer is not None
            token = await self._fetch_token(
                self._bearer, scopes | self._extra_scopes.get(scopes, frozenset())
            )
            if len(self._tokens) >= 1024:  # bounded: drop the oldest entry
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[scopes] = token
            return token

    async def _fetch_token(self, challenge: Challenge, scopes: frozenset[str]) -> Token:
        import httpx

        realm = httpx.URL(challenge.realm or "")
        if realm.scheme not in ("http", "https") or not realm.host:
            raise PeerProtocolError(f"token realm {challenge.realm!r} is not an http(s) URL")
        if (
            self.credentials is not None
            and realm.scheme == "http"
            and self.base_url.scheme == "https"
        ):
            raise PeerProtocolError("refusing to send credentials to a plain-HTTP token realm")
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params += [("scope", s) for s in sorted(scopes)]
        headers = {}
        if self.credentials is not None:
            params.append(("account", self.credentials.username))
            headers["Authorization"] = self.credentials.basic_header()
        url = realm.copy_merge_params(tuple(params))
        response = await self._send("GET", url, scopes=None, headers=headers)
        async with contextlib.aclosing(Closing(response)):
            if response.status_code in (401, 403):
                raise Unauthorized(
                    response.status_code,
                    f"the token service at {realm.host} refused the credentials",
                )
            await self._raise_for_status(response, "token request")
            body = load_json(
                await read_bounded(response, _TOKEN_BODY_LIMIT, "token response"),
                self.limits,
                "token response",
            )
        if not isinstance(body, dict):
            raise PeerProtocolError("token response is not a JSON object")
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value or len(value) > 65536 or "\n" in value:
            raise PeerProtocolError("token response carries no usable token")
        return Token.from_response(value, body.get("expires_in"))

    def _learn(
        self, challenges: list[Challenge], had_auth: str | None, scopes: frozenset[str]
    ) -> bool:
        """Take in a 401's challenges; True when retrying the request may now succeed."""
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            self._scheme, self._bearer = "bearer", bearer
            # The registry may name scopes we did not think of: ask for those too from now on.
            extra = set(bearer.scopes) - scopes
            if extra and len(self._extra_scopes) < 1024:
                self._extra_scopes[scopes] = frozenset(extra)
            # A token we sent was refused (expired early, or revoked): fetch a fresh one.
            self._tokens.pop(scopes, None)
            return True
        if basic is not None and self.credentials is not None:
            if had_auth is not None and had_auth.startswith("Basic "):
                return False  # our credentials were refused
            self._scheme = "basic"
            return True
        return False

    # --- sending ------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        *,
        scopes: tuple[str, ...] | None,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> httpx.Response:
        """Send a request; return the (streamed, unread) response. ``scopes=None`` sends no
        authorization of ours. Replayable requests (no body, or bytes) are retried on
        connection errors, 5xx and 429; a streamed body is sent once."""
        import httpx

        replayable = content is None or isinstance(content, bytes)
        attempts = self.retry.attempts if replayable else 1
        attempt = 0
        auth_retried = False
        while True:
            request_headers = dict(headers or {})
            sent_auth: str | None = None
            if scopes is not None:
                sent_auth = await self._authorization(url, scopes)
                if sent_auth is not None:
                    request_headers["Authorization"] = sent_auth
            request = self._http.build_request(
                method, url, headers=request_headers, content=content
            )
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                cause = _ssl_cause(exc)
                if cause is not None:
                    raise TLSFailure(f"{method} {show(url)}: TLS: {cause}") from exc
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise PeerUnavailable(f"{method} {show(url)}: {exc!r}") from exc
            status = response.status_code
            if status == 401 and scopes is not None and not auth_retried:
                values = response.headers.get_list("www-authenticate")
                if sum(len(v) for v in values) > self.limits.max_header_bytes:
                    await discard(response)
                    raise PeerProtocolError("WWW-Authenticate header is too long")
                learnt = self._learn(parse_challenges(values), sent_auth, frozenset(scopes))
                if not replayable:
                    # The body is gone; the caller sees the 401 and may retry with the fresh
                    # token the next request will fetch (a token expired mid-upload).
                    return response
                await discard(response)
                if learnt:
                    auth_retried = True
                    continue
                raise Unauthorized(401, f"{method} {show(url)}: authentication required or refused")
            if status in _RETRY_STATUSES and attempt + 1 < attempts:
                wait = self._retry_after(response, attempt)
                await discard(response)
                if wait is not None:
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
                raise PeerUnavailable(
                    f"{method} {show(url)}: {status}, and the peer asks to wait longer than "
                    f"{self.retry.max_retry_after:.0f}s"
                )
            return response

    def _retry_after(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying; None when the peer asks for longer than we wait."""
        value = response.headers.get("retry-after")
        if value is None or len(value) > 64:
            return self.retry.delay(attempt)
        value = value.strip()
        if value.isdecimal():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return self.retry.delay(attempt)
            seconds = max(0.0, when.timestamp() - time.time())
        if seconds > self.retry.max_retry_after:
            return None
        return seconds

    async def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        """Raise the error a non-2xx response stands for (body read bounded, OCI code parsed)."""
        status = response.status_code
        if status < 300:
            return
        code, message = None, ""
        with contextlib.suppress(Exception):
            body = await read_bounded(response, ERROR_BODY_LIMIT, "error body")
            doc = load_json(body, self.limits, "error body")
            errors = doc.get("errors") if isinstance(doc, dict) else None
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                code = str(errors[0].get("code", ""))[:100] or None
                message = str(errors[0].get("message", ""))[:300]
        text = (
            f"{what}: {status}"
            + (f" {code}" if code else "")
            + (f" ({message})" if message else "")
        )
        if status in (401, 403):
            raise Unauthorized(status, text, code)
        if status == 404:
            raise NotFound(status, text, code)
        if status in _RETRY_STATUSES:
            raise PeerUnavailable(text)
        raise RegistryError(status, text, code)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        scopes: tuple[str, ...],
        what: str,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        ok: tuple[int, ...] = (200,),
        missing_ok: bool = False,
        limit: int | None = None,
    ) -> tuple[httpx.Response, bytes] | None:
        """A small request on the registry's origin whose body is read whole (bounded).
        Returns None for a 404 when ``missing_ok``."""
        url = self._url(path)
        response = await self._send(method, url, scopes=scopes, headers=headers, content=content)
        async with contextlib.aclosing(Closing(response)):
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code not in ok:
                await self._raise_for_status(response, what)
                raise RegistryError(
                    response.status_code, f"{what}: unexpected {response.status_code}"
                )
            body = b""
            if method != "HEAD":
                body = await read_bounded(response, limit or self.limits.max_json_bytes, what)
            return response, body

    async def _follow(
        self,
        method: str,
        url: httpx.URL,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send, following up to 5 redirects (blob storage backends); authorization goes only
        to the registry's own origin (see :meth:`_authorization`)."""
        for _ in range(6):
            response = await self._send(method, url, scopes=scopes, headers=headers)
            if response.status_code not in REDIRECTS:
                return response
            location = response.headers.get("location")
            await discard(response)
            if not location:
                raise PeerProtocolError(f"{method} {show(url)}: redirect without Location")
            url = self._resolve(url, location)
        raise PeerProtocolError(f"{method} {show(url)}: too many redirects")


def content_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower()


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a transport error (httpx wraps httpcore's, which wraps ssl's) when
    retrying cannot help: an untrusted certificate, or a peer that does not speak TLS. (A TLS
    connection that breaks mid-transfer is an ordinary, retryable, connection failure.)"""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError) or (
            isinstance(seen, ssl.SSLError) and seen.reason == "WRONG_VERSION_NUMBER"
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def discard(response: httpx.Response) -> None:
    """Close a response we are done with. A short unread body (an empty 201, an error page) is
    read first: httpcore reuses a connection only after the whole response went through, and a
    new connection per request costs more than the read."""
    import httpx

    if not response.is_closed and not response.is_stream_consumed:
        length: str = response.headers.get("content-length", "")
        if response.request.method == "HEAD" or (length.isdecimal() and int(length) <= 65536):
            with contextlib.suppress(httpx.HTTPError):
                async for _ in response.aiter_raw():
                    pass
    await response.aclose()


class Closing:
    """Adapter so that ``contextlib.aclosing`` closes an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def aclose(self) -> None:
        await discard(self.response)


def show(url: httpx.URL) -> str:
    """A URL for messages: no query (upload state, tokens) and no user info."""
    return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"
