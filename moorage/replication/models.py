"""Plain data the registry client takes and returns: options, manifests, upload sessions,
referrers; and the naming helpers (referrers tag, Docker Hub's ``library/``)."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.manifest import Descriptor

if TYPE_CHECKING:
    import httpx

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


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """``verify=False`` accepts any certificate (``--insecure``); ``ca_bundle`` is a PEM file of
    extra trusted CAs (``ca_pem`` the same as text); ``client_cert``/``client_key`` for registries
    that want mutual TLS."""

    verify: bool = True
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    ca_pem: str | None = None  # extra trusted CAs as PEM text (kept in the database)

    def context(self) -> ssl.SSLContext | bool:
        if not self.verify:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_bundle, cadata=self.ca_pem)
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
        import httpx

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
