"""An async client for any OCI distribution / Docker Registry V2 registry.

Used by replication (push and pull), and later by pull-through caches, to talk to *another*
registry: Moorage, CNCF Distribution, Docker Hub, ghcr.io, quay.io, Harbor, ...

What it takes care of, so that callers only name repositories and digests:

* authentication: anonymous, Basic, and the Docker token flow (tokens fetched per set of scopes,
  cached, refreshed before expiry and after a 401);
* retries with exponential backoff and jitter on connection errors, 5xx and 429 (honouring
  ``Retry-After``) for every request whose body can be replayed;
* timeouts per connect/read/write, never a total one: a 5 GiB layer may take an hour, a peer that
  stops sending for ``read`` seconds may not;
* hostile peers: every body read is capped, JSON nesting is checked, every manifest and blob is
  verified against its digest, digests and names are validated before they go into a URL, and
  credentials are only sent to the registry's own origin (and to its token realm);
* an optional bandwidth limit shared with other clients (:class:`BandwidthLimiter`).

Blob downloads are streamed (:meth:`RegistryClient.open_blob`); uploads take async iterables so
that a copy streams source to destination without holding a layer in memory. The resumable
upload loop itself is in :mod:`moorage.replication.transfer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import random
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import httpx

from ..oci import mediatypes as mt
from ..oci.digest import Digest, InvalidDigest
from ..oci.manifest import Descriptor, ManifestError, parse_descriptor
from ..oci.names import valid_name, valid_tag
from .auth import CATALOG_SCOPE, Challenge, Credentials, Token, parse_challenges, repository_scope
from .bounds import Limits, header, load_json, read_bounded
from .errors import (
    DigestMismatch,
    NotFound,
    PeerProtocolError,
    PeerUnavailable,
    RegistryError,
    TLSFailure,
    Unauthorized,
)
from .ratelimit import BandwidthLimiter

MANIFEST_MEDIA_TYPES = (
    mt.OCI_MANIFEST,
    mt.OCI_INDEX,
    mt.DOCKER_MANIFEST,
    mt.DOCKER_LIST,
    # Asked for so that an old image comes back as what it is (and fails with a clear
    # "schema 1" error) rather than as whatever conversion the peer would attempt.
    mt.DOCKER_SCHEMA1_SIGNED,
    mt.DOCKER_SCHEMA1,
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_LIMIT = 64 * 1024
_TOKEN_BODY_LIMIT = 1024 * 1024
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')
_RANGE = re.compile(r"^(?:bytes=)?(\d+)-(\d+)$")


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """``verify=False`` accepts any certificate (``--insecure``); ``ca_bundle`` is a PEM file of
    extra trusted CAs; ``client_cert``/``client_key`` for registries that want mutual TLS."""

    verify: bool = True
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def context(self) -> ssl.SSLContext | bool:
        if not self.verify:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-operation timeouts in seconds. ``read``/``write`` bound one socket operation (a stall),
    not a transfer: a multi-GB layer can take as long as it needs while bytes keep moving.
    ``pool`` is how long a request may wait for a free connection behind other transfers."""

    connect: float = 15.0
    read: float = 300.0
    write: float = 300.0
    pool: float = 3600.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` per request (1 = no retry); delays grow ``backoff * 2**n`` with jitter, capped
    at ``max_backoff``; a ``Retry-After`` longer than ``max_retry_after`` is not waited for."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int) -> float:
        base: float = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a HEAD tells: digest (as the peer announces it), media type, size."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest's exact bytes, media type and verified digest."""

    data: bytes = field(repr=False)
    media_type: str
    digest: str


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    # The peer said ``OCI-Subject``: it indexes referrers itself (OCI 1.1 referrers API), so the
    # pusher need not maintain the ``sha256-<hex>`` referrers tag.
    subject_indexed: bool


@dataclass(slots=True)
class Upload:
    """An upload session on the peer. ``location`` changes with every answer (Distribution keeps
    its state in it), ``offset`` is what the peer has acknowledged."""

    repo: str
    location: httpx.URL
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Referrers:
    """Referrers of a subject. ``source``: ``api`` (OCI 1.1 referrers API), ``tag`` (the
    ``sha256-<hex>`` referrers tag schema) or ``none`` (neither has any). ``index`` is the tag's
    index as stored, so that a copy can keep it byte for byte."""

    descriptors: list[Descriptor]
    source: Literal["api", "tag", "none"]
    index: Manifest | None = None


@dataclass(frozen=True, slots=True)
class PingResult:
    api_version: str | None
    auth: str | None  # "basic", "bearer" or None (the registry asked for no authentication)
    # False: the registry wants a login for /v2/ and we have no credentials (anonymous pulls of
    # public repositories may still work).
    authenticated: bool = True


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for *digest*: ``sha256-<hex>`` (distribution-spec 1.1)."""
    d = Digest.parse(digest)
    return f"{d.algorithm}-{d.hex}"


def docker_hub_name(name: str) -> str:
    """Docker Hub keeps official images under ``library/``: ``alpine`` → ``library/alpine``.
    Pass as ``name_mapper`` to a client for Docker Hub."""
    return name if "/" in name else f"library/{name}"


def _check_name(name: str) -> str:
    if not valid_name(name):
        raise ValueError(f"invalid repository name {name[:100]!r}")
    return name


def _check_reference(ref: str) -> str:
    if ":" in ref:
        return str(Digest.parse(ref))
    if not valid_tag(ref):
        raise ValueError(f"invalid tag {ref[:100]!r}")
    return ref


def _media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower()


class BlobStream:
    """An open blob download. Iterate :meth:`chunks` once; ``offset`` is where the bytes start
    (the requested offset, or 0 when the peer ignored the range), ``size`` the whole blob's size
    when known. With ``verify`` and offset 0 the digest is checked at the end of the stream."""

    def __init__(
        self,
        response: httpx.Response,
        digest: Digest,
        offset: int,
        size: int | None,
        verify: bool,
        limiter: BandwidthLimiter | None,
    ) -> None:
        self._response = response
        self._digest = digest
        self.offset = offset
        self.size = size
        self._verify = verify and offset == 0
        self._limiter = limiter

    async def chunks(self) -> AsyncIterator[bytes]:
        hasher = hashlib.new(self._digest.algorithm) if self._verify else None
        position = self.offset
        try:
            async for chunk in self._response.aiter_raw():
                if not chunk:
                    continue
                position += len(chunk)
                if self.size is not None and position > self.size:
                    raise PeerProtocolError(
                        f"blob {self._digest} is longer than its {self.size} bytes"
                    )
                if self._limiter is not None:
                    await self._limiter.acquire(len(chunk))
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk
        except httpx.TransportError as exc:
            raise PeerUnavailable(
                f"blob {self._digest} download broke at {position}: {exc!r}"
            ) from exc
        if self.size is not None and position != self.size:
            raise PeerUnavailable(
                f"blob {self._digest} download ended at {position} of {self.size} bytes"
            )
        if hasher is not None and hasher.hexdigest() != self._digest.hex:
            raise DigestMismatch(
                f"blob {self._digest} has digest {self._digest.algorithm}:{hasher.hexdigest()}"
            )

    async def aclose(self) -> None:
        await self._response.aclose()


class RegistryClient:
    """A client for one registry. Use as ``async with RegistryClient(...) as client:``.

    ``base_url`` is ``https://host[:port]`` (``http://`` for plain-HTTP registries);
    ``name_mapper`` rewrites repository names before they go into URLs (e.g.
    :func:`docker_hub_name`). ``auth_scheme="basic"`` sends the credentials with every request
    from the start instead of waiting for a challenge. ``transport`` is for tests that need a
    custom httpx transport.
    """

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
        self._referrers_api: bool | None = None

    async def __aenter__(self) -> RegistryClient:
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
        return f"RegistryClient({str(self.base_url)!r})"

    # --- URLs and authentication ------------------------------------------------------------

    def _repo(self, name: str) -> str:
        _check_name(name)
        return _check_name(self.name_mapper(name)) if self.name_mapper else name

    def _url(self, path: str) -> httpx.URL:
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
        async with contextlib.aclosing(_Closing(response)):
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
                    raise TLSFailure(f"{method} {_show(url)}: TLS: {cause}") from exc
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise PeerUnavailable(f"{method} {_show(url)}: {exc!r}") from exc
            status = response.status_code
            if status == 401 and scopes is not None and not auth_retried:
                values = response.headers.get_list("www-authenticate")
                if sum(len(v) for v in values) > self.limits.max_header_bytes:
                    await _discard(response)
                    raise PeerProtocolError("WWW-Authenticate header is too long")
                learnt = self._learn(parse_challenges(values), sent_auth, frozenset(scopes))
                if not replayable:
                    # The body is gone; the caller sees the 401 and may retry with the fresh
                    # token the next request will fetch (a token expired mid-upload).
                    return response
                await _discard(response)
                if learnt:
                    auth_retried = True
                    continue
                raise Unauthorized(
                    401, f"{method} {_show(url)}: authentication required or refused"
                )
            if status in _RETRY_STATUSES and attempt + 1 < attempts:
                wait = self._retry_after(response, attempt)
                await _discard(response)
                if wait is not None:
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
                raise PeerUnavailable(
                    f"{method} {_show(url)}: {status}, and the peer asks to wait longer than "
                    f"{self.retry.max_retry_after:.0f}s"
                )
            return response

    def _retry_after(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying; None when the peer asks for longer than we wait."""
        value = response.headers.get("retry-after")
        if value is None or len(value) > 64:
            return self.retry.delay(attempt)
        value = value.strip()
        if value.isdigit():
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
            body = await read_bounded(response, _ERROR_BODY_LIMIT, "error body")
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
        async with contextlib.aclosing(_Closing(response)):
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

    # --- API ------------------------------------------------------------------------------------

    async def ping(self) -> PingResult:
        """``GET /v2/`` with authentication: checks that the URL is a registry and that the
        credentials (if any) are accepted ("check connection"). Raises on failure, except for
        a login demanded of a client without credentials (``authenticated=False``)."""
        try:
            result = await self._request("GET", "/v2/", scopes=(), what="GET /v2/", limit=65536)
        except Unauthorized:
            if self.credentials is not None:
                raise
            return PingResult(None, self._scheme, authenticated=False)
        assert result is not None
        response, _ = result
        return PingResult(response.headers.get("docker-distribution-api-version"), self._scheme)

    async def head_manifest(self, repo: str, ref: str) -> ManifestInfo | None:
        """The digest, media type and size the peer announces for *ref*, or None if absent.
        (A HEAD cannot be verified; use :meth:`get_manifest` for content.)"""
        name, ref = self._repo(repo), _check_reference(ref)
        result = await self._request(
            "HEAD",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "pull"),),
            what=f"HEAD manifest {name}:{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            missing_ok=True,
        )
        if result is None:
            return None
        response, _ = result
        announced = header(response, "docker-content-digest", self.limits)
        if announced is None:
            if ":" not in ref:
                manifest = await self.get_manifest(repo, ref)
                return ManifestInfo(manifest.digest, manifest.media_type, len(manifest.data))
            announced = ref
        try:
            digest = str(Digest.parse(announced.strip()))
        except InvalidDigest as exc:
            raise PeerProtocolError(f"HEAD manifest {name}:{ref}: {exc}") from None
        if ":" in ref and digest != ref:
            raise DigestMismatch(f"manifest {name}@{ref} announced as {digest}")
        size = response.headers.get("content-length", "")
        return ManifestInfo(digest, _media_type(response), int(size) if size.isdigit() else -1)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest's exact bytes, verified: against the digest when *ref* is one, and
        against ``Docker-Content-Digest`` when the peer sends it. Raises :class:`NotFound`."""
        name, ref = self._repo(repo), _check_reference(ref)
        result = await self._request(
            "GET",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "pull"),),
            what=f"GET manifest {name}:{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            limit=self.limits.max_manifest_bytes,
        )
        assert result is not None
        response, data = result
        expected: Digest | None = Digest.parse(ref) if ":" in ref else None
        announced = header(response, "docker-content-digest", self.limits)
        if expected is None and announced:
            try:
                expected = Digest.parse(announced.strip())
            except InvalidDigest:
                expected = None  # a malformed header: fall back to our own sha256
        algorithm = expected.algorithm if expected else "sha256"
        actual = hashlib.new(algorithm, data).hexdigest()
        if expected is not None and actual != expected.hex:
            raise DigestMismatch(
                f"manifest {name}:{ref} has digest {algorithm}:{actual}, expected {expected}"
            )
        media_type = _media_type(response)
        if media_type not in MANIFEST_MEDIA_TYPES:
            # Generic or missing Content-Type: the document's own mediaType decides.
            doc = load_json(data, self.limits, f"manifest {name}:{ref}")
            declared = doc.get("mediaType") if isinstance(doc, dict) else None
            if isinstance(declared, str) and declared in MANIFEST_MEDIA_TYPES:
                media_type = declared
            elif isinstance(doc, dict):
                media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
        return Manifest(data, media_type, f"{algorithm}:{actual}")

    async def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> PutResult:
        """PUT a manifest by tag or digest; the peer must store exactly these bytes."""
        name, ref = self._repo(repo), _check_reference(ref)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ":" in ref:
            wanted = Digest.parse(ref)
            digest = f"{wanted.algorithm}:{hashlib.new(wanted.algorithm, data).hexdigest()}"
            if digest != ref:
                raise DigestMismatch(f"manifest bytes have digest {digest}, not {ref}")
        result = await self._request(
            "PUT",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "pull", "push"),),
            what=f"PUT manifest {name}:{ref}",
            headers={"Content-Type": media_type},
            content=data,
            ok=(200, 201, 202),
            limit=_ERROR_BODY_LIMIT,
        )
        assert result is not None
        response, _ = result
        announced = header(response, "docker-content-digest", self.limits)
        if announced and announced.strip() != digest and announced.split(":", 1)[0] == "sha256":
            raise DigestMismatch(f"{name}:{ref} was stored as {announced.strip()}, not {digest}")
        return PutResult(digest, "oci-subject" in response.headers)

    async def delete_manifest(self, repo: str, ref: str) -> None:
        name, ref = self._repo(repo), _check_reference(ref)
        await self._request(
            "DELETE",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "delete"),),
            what=f"DELETE manifest {name}:{ref}",
            ok=(200, 202, 204),
            limit=_ERROR_BODY_LIMIT,
        )

    async def head_blob(self, repo: str, digest: str) -> int | None:
        """The blob's size if the repository holds it, else None."""
        name, d = self._repo(repo), Digest.parse(digest)
        url = self._url(f"/v2/{name}/blobs/{d}")
        response = await self._follow("HEAD", url, (repository_scope(name, "pull"),))
        async with contextlib.aclosing(_Closing(response)):
            if response.status_code == 404:
                return None
            await self._raise_for_status(response, f"HEAD blob {name}@{d}")
            size = response.headers.get("content-length", "")
            return int(size) if size.isdigit() else -1

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
            if response.status_code not in _REDIRECTS:
                return response
            location = response.headers.get("location")
            await _discard(response)
            if not location:
                raise PeerProtocolError(f"{method} {_show(url)}: redirect without Location")
            url = self._resolve(url, location)
        raise PeerProtocolError(f"{method} {_show(url)}: too many redirects")

    @contextlib.asynccontextmanager
    async def open_blob(
        self,
        repo: str,
        digest: str,
        *,
        offset: int = 0,
        size: int | None = None,
        verify: bool = True,
    ) -> AsyncIterator[BlobStream]:
        """Stream a blob, from *offset* if the peer honours ranges (check ``stream.offset``).
        ``size`` (from the descriptor) bounds the stream; with ``verify`` a download from 0 is
        checked against the digest when its last chunk has been read."""
        name, d = self._repo(repo), Digest.parse(digest)
        url = self._url(f"/v2/{name}/blobs/{d}")
        headers = {"Range": f"bytes={offset}-"} if offset else None
        response = await self._follow("GET", url, (repository_scope(name, "pull"),), headers)
        try:
            start = 0
            if response.status_code == 206:
                m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("content-range", ""))
                if m is None or int(m.group(1)) != offset:
                    raise PeerProtocolError(f"blob {d}: bad Content-Range for a range request")
                start = offset
            elif response.status_code != 200:
                await self._raise_for_status(response, f"GET blob {name}@{d}")
                raise RegistryError(response.status_code, f"GET blob {name}@{d}: unexpected status")
            if size is None and response.status_code == 200:
                length = response.headers.get("content-length", "")
                size = int(length) if length.isdigit() else None
            yield BlobStream(response, d, start, size, verify, self.limiter)
        finally:
            await response.aclose()

    # --- uploads ------------------------------------------------------------------------------

    async def start_upload(
        self, repo: str, mount: str | None = None, from_repo: str | None = None
    ) -> Upload | None:
        """Open an upload session; with ``mount``/``from_repo`` try a cross-repository mount
        first. Returns None when the blob was mounted, else the session (a refused mount also
        opens one, as the spec says)."""
        name = self._repo(repo)
        scopes = [repository_scope(name, "pull", "push")]
        path = f"/v2/{name}/blobs/uploads/"
        if mount is not None and from_repo is not None:
            source = self._repo(from_repo)
            scopes.append(repository_scope(source, "pull"))
            path += f"?mount={Digest.parse(mount)}&from={source}"
        result = await self._request(
            "POST",
            path,
            scopes=tuple(scopes),
            what=f"start upload to {name}",
            ok=(201, 202),
            limit=_ERROR_BODY_LIMIT,
        )
        assert result is not None
        response, _ = result
        if response.status_code == 201 and mount is not None:
            return None
        location = header(response, "location", self.limits)
        if not location:
            raise PeerProtocolError(f"start upload to {name}: no Location")
        return Upload(name, self._resolve(response.request.url, location), 0)

    def _upload_scopes(self, upload: Upload) -> tuple[str, ...]:
        return (repository_scope(upload.repo, "pull", "push"),)

    def _take_location(self, upload: Upload, response: httpx.Response) -> None:
        location = header(response, "location", self.limits)
        if location:
            upload.location = self._resolve(response.request.url, location)

    def _acknowledged(self, response: httpx.Response) -> int | None:
        value = header(response, "range", self.limits)
        m = _RANGE.match(value.strip()) if value else None
        if m is None:
            return None
        start, end = int(m.group(1)), int(m.group(2))
        # "0-0" is what Distribution says for an empty session (and for one byte): read it as
        # empty; a wrong guess only costs a refused chunk and a fresh session.
        return 0 if end == 0 else end + 1 if start == 0 else None

    async def upload_status(self, upload: Upload) -> int | None:
        """Ask the peer how many bytes of the session it holds (``GET`` on the location, its
        ``Range``); None when it no longer knows the session."""
        response = await self._send("GET", upload.location, scopes=self._upload_scopes(upload))
        async with contextlib.aclosing(_Closing(response)):
            if response.status_code == 404:
                return None
            await self._raise_for_status(response, "upload status")
            self._take_location(upload, response)
            offset = self._acknowledged(response)
            if offset is None:
                raise PeerProtocolError("upload status without a usable Range header")
            upload.offset = offset
            return offset

    def _limited(self, body: AsyncIterable[bytes]) -> AsyncIterable[bytes]:
        limiter = self.limiter
        if limiter is None:
            return body

        async def gen() -> AsyncIterator[bytes]:
            async for chunk in body:
                await limiter.acquire(len(chunk))
                yield chunk

        return gen()

    async def upload_chunk(self, upload: Upload, body: AsyncIterable[bytes], length: int) -> None:
        """PATCH *length* bytes at the session's offset (``Content-Range``); on success the
        session's location and acknowledged offset advance. Not retried (the body is a stream):
        on failure ask :meth:`upload_status` where to go on from."""
        start = upload.offset
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{start}-{start + length - 1}",
        }
        response = await self._send(
            "PATCH",
            upload.location,
            scopes=self._upload_scopes(upload),
            headers=headers,
            content=self._limited(body),
        )
        async with contextlib.aclosing(_Closing(response)):
            if response.status_code == 404:
                raise NotFound(404, "upload session is gone")
            await self._raise_for_status(response, "upload chunk")
            self._take_location(upload, response)
            acknowledged = self._acknowledged(response)
            upload.offset = start + length if acknowledged is None else acknowledged

    async def finish_upload(
        self,
        upload: Upload,
        digest: str,
        body: AsyncIterable[bytes] | bytes | None = None,
        length: int = 0,
    ) -> None:
        """The closing ``PUT ?digest=``, optionally carrying the last *length* bytes."""
        d = Digest.parse(digest)
        url = upload.location.copy_merge_params({"digest": str(d)})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        content: AsyncIterable[bytes] | bytes = b""
        if isinstance(body, bytes):
            content = body
        elif body is not None:
            content = self._limited(body)
        response = await self._send(
            "PUT", url, scopes=self._upload_scopes(upload), headers=headers, content=content
        )
        async with contextlib.aclosing(_Closing(response)):
            if response.status_code == 404:
                raise NotFound(404, "upload session is gone")
            await self._raise_for_status(response, f"finish upload of {d}")
            announced = header(response, "docker-content-digest", self.limits)
            if announced and announced.strip() != str(d):
                raise DigestMismatch(f"the peer stored {announced.strip()} for {d}")
            upload.offset += length

    async def cancel_upload(self, upload: Upload) -> None:
        """Best effort: the peer's purge reclaims the session anyway."""
        with contextlib.suppress(Exception):
            response = await self._send(
                "DELETE", upload.location, scopes=self._upload_scopes(upload)
            )
            await _discard(response)

    async def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a small blob in one request pair (POST, PUT with the body); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        upload = await self.start_upload(repo)
        assert upload is not None
        await self.finish_upload(upload, digest, data, len(data))
        return digest

    # --- listings -------------------------------------------------------------------------------

    async def _paginate(
        self, path: str, key: str, scopes: tuple[str, ...], page_size: int | None, what: str
    ) -> list[str]:
        out: list[str] = []
        next_path: str | None = path + (f"?n={page_size}" if page_size else "")
        pages = 0
        while next_path is not None:
            pages += 1
            if pages > self.limits.max_pages:
                raise PeerProtocolError(f"{what}: more than {self.limits.max_pages} pages")
            result = await self._request("GET", next_path, scopes=scopes, what=what)
            assert result is not None
            response, body = result
            doc = load_json(body, self.limits, what)
            items = doc.get(key) if isinstance(doc, dict) else None
            if items is None:
                items = []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise PeerProtocolError(f"{what}: '{key}' is not a list of strings")
            out.extend(items)
            if len(out) > self.limits.max_entries:
                raise PeerProtocolError(f"{what}: more than {self.limits.max_entries} entries")
            next_path = self._next_page(response, path)
        return out

    def _next_page(self, response: httpx.Response, path: str) -> str | None:
        link = header(response, "link", self.limits)
        m = _LINK_NEXT.search(link) if link else None
        if m is None:
            return None
        url = self._resolve(response.request.url, m.group(1))
        # Follow only to the same endpoint on the same registry.
        base_path = self.base_url.path.rstrip("/")
        if not self._same_origin(url) or url.path != base_path + path:
            raise PeerProtocolError(f"pagination link {m.group(1)[:100]!r} leaves the endpoint")
        return url.raw_path.decode("ascii")[len(base_path) :]

    async def tags(self, repo: str, page_size: int | None = None) -> list[str]:
        """Every tag of the repository (all pages). Raises :class:`NotFound`."""
        name = self._repo(repo)
        return await self._paginate(
            f"/v2/{name}/tags/list",
            "tags",
            (repository_scope(name, "pull"),),
            page_size,
            f"tags of {name}",
        )

    async def catalog(self, page_size: int | None = None) -> list[str]:
        """Every repository name the peer lists (``/v2/_catalog``, all pages)."""
        return await self._paginate(
            "/v2/_catalog", "repositories", (CATALOG_SCOPE,), page_size, "catalog"
        )

    async def referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> Referrers:
        """Referrers of *digest*: the OCI 1.1 referrers API when the peer has it, else the
        referrers tag schema (``sha256-<hex>`` tag holding an index)."""
        name, d = self._repo(repo), Digest.parse(digest)
        if self._referrers_api is not False:
            url = self._url(f"/v2/{name}/referrers/{d}")
            response = await self._send(
                "GET",
                url,
                scopes=(repository_scope(name, "pull"),),
                headers={"Accept": mt.OCI_INDEX},
            )
            async with contextlib.aclosing(_Closing(response)):
                if response.status_code == 200:
                    self._referrers_api = True
                    body = await read_bounded(response, self.limits.max_manifest_bytes, "referrers")
                    found = self._descriptors(body, f"referrers of {d}")
                    filtered = [
                        x for x in found if not artifact_type or x.artifact_type == artifact_type
                    ]
                    return Referrers(filtered, "api")
                if response.status_code not in (404, 400, 405, 501):
                    await self._raise_for_status(response, f"referrers of {d}")
                # A router's 404 (not an OCI error body) means: no referrers API at all.
                if not _media_type(response).endswith("json"):
                    self._referrers_api = False
        try:
            index = await self.get_manifest(repo, referrers_tag(str(d)))
        except NotFound:
            return Referrers([], "none")
        found = self._descriptors(index.data, f"referrers tag of {d}")
        filtered = [x for x in found if not artifact_type or x.artifact_type == artifact_type]
        return Referrers(filtered, "tag", index)

    def _descriptors(self, body: bytes, what: str) -> list[Descriptor]:
        doc = load_json(body, self.limits, what)
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if manifests is None:
            return []
        if not isinstance(manifests, list) or len(manifests) > self.limits.max_index_children:
            raise PeerProtocolError(
                f"{what}: 'manifests' is not a list of at most "
                f"{self.limits.max_index_children} descriptors"
            )
        try:
            return [parse_descriptor(m, f"{what}[{i}]") for i, m in enumerate(manifests)]
        except ManifestError as exc:
            raise PeerProtocolError(str(exc)) from None


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


async def _discard(response: httpx.Response) -> None:
    """Close a response we are done with. A short unread body (an empty 201, an error page) is
    read first: httpcore reuses a connection only after the whole response went through, and a
    new connection per request costs more than the read."""
    if not response.is_closed and not response.is_stream_consumed:
        length: str = response.headers.get("content-length", "")
        if response.request.method == "HEAD" or (length.isdigit() and int(length) <= 65536):
            with contextlib.suppress(httpx.HTTPError):
                async for _ in response.aiter_raw():
                    pass
    await response.aclose()


class _Closing:
    """Adapter so that ``contextlib.aclosing`` closes an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def aclose(self) -> None:
        await _discard(self.response)


def _show(url: httpx.URL) -> str:
    """A URL for messages: no query (upload state, tokens) and no user info."""
    return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"


def descriptor_json(desc: Descriptor) -> dict[str, Any]:
    """A descriptor as JSON, for building referrers indexes."""
    return desc.to_json()
