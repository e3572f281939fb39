"""Cache organizations: their settings (read by every node, refreshed every few seconds), their
upstream clients, and the small bookkeeping of revalidation and pull times.

Upstream credentials are sealed exactly as replication seals a remote's
(moorage/auth/keycrypt.py with ``auth.token.key_encryption_secret``, bound to the cache's
namespace): without that secret a cache with a password is refused rather than stored in clear.

Two clients per cache, both the replication capability's :class:`RegistryClient`:

* ``probe``: the tag revalidation HEAD — one attempt, short timeouts; a failure, a timeout or a
  429 is an answer (serve the cached copy), never something to wait out;
* ``fetch``: content — retries with backoff, timeouts per socket operation sized for large
  layers (a transfer may take as long as bytes keep moving).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth import keycrypt
from ..db.engine import writer
from ..db.inline import NotInline, running_inline
from ..db.queries import _aware, insert_ignore, now
from ..db.schema import blobs, manifest_references, manifests, repositories, repository_blobs
from ..oci.names import namespace_of
from ..replication.auth import Credentials
from ..replication.client import RegistryClient
from ..replication.models import RetryPolicy, Timeouts, TLSOptions, docker_hub_name
from ..services.context import ServiceContext
from ..services.errors import Conflict, Invalid, NotFound
from .tables import mirror_caches as mc
from .tables import mirror_pulls as mp
from .tables import mirror_tags as mtg

log = logging.getLogger("moorage.mirror")

_KID = "mirror-cache:"
REFRESH_SECONDS = 3.0  # how stale a node's view of the cache organizations may be
PULL_RECORD_SECONDS = 3600.0  # pull times are eviction's clock: an hour's precision is plenty
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PLATFORM = re.compile(r"^[a-z0-9_.-]{1,32}/[a-z0-9_.-]{1,32}(/[a-z0-9_.-]{1,32})?\Z")
PROBE_TIMEOUTS = Timeouts(connect=5.0, read=10.0, write=10.0, pool=10.0)
FETCH_TIMEOUTS = Timeouts(connect=15.0, read=120.0, write=120.0, pool=600.0)


@dataclass(frozen=True, slots=True)
class Cache:
    id: int
    namespace: str
    url: str
    username: str | None
    secret: str | None
    insecure: bool
    platforms: tuple[str, ...] | None
    staleness_seconds: int
    evict_after_days: int | None
    max_bytes: int | None
    updated_at: datetime

    @property
    def docker_hub(self) -> bool:
        import httpx

        return (httpx.URL(self.url).host or "") in _DOCKER_HUB_HOSTS

    @property
    def host(self) -> str:
        """``host[:port]`` of the upstream, the port only when not the scheme's default."""
        import httpx

        url = httpx.URL(self.url)
        return f"{url.host}:{url.port}" if url.port else (url.host or "")

    def upstream_name(self, repo: str) -> str:
        """``NAME/<path>`` → ``<path>`` (``library/<path>`` on Docker Hub for one segment)."""
        path = repo[len(self.namespace) + 1 :]
        return docker_hub_name(path) if self.docker_hub else path


def _cache(r: Any) -> Cache:
    platforms = r.platforms if isinstance(r.platforms, list) and r.platforms else None
    return Cache(
        id=int(r.id),
        namespace=r.namespace,
        url=r.url,
        username=r.username,
        secret=r.secret,
        insecure=bool(r.insecure),
        platforms=tuple(str(p) for p in platforms) if platforms else None,
        staleness_seconds=int(r.staleness_seconds),
        evict_after_days=r.evict_after_days,
        max_bytes=r.max_bytes,
        updated_at=_aware(r.updated_at) or now(),
    )


def normalize_url(url: str) -> str:
    """``http(s)://host[:port]``; Docker Hub's names all mean its registry API host."""
    import httpx

    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s?#@]+\Z", url) or len(url) > 500:
        raise Invalid("url", "the upstream URL is http(s)://host[:port] (no path)")
    host = httpx.URL(url).host or ""
    if host in _DOCKER_HUB_HOSTS:
        return "https://registry-1.docker.io"
    return url


def check_platforms(platforms: list[str] | None) -> list[str] | None:
    if not platforms:
        return None
    for p in platforms:
        if not _PLATFORM.match(p):
            raise Invalid("platform", f"platform {p[:80]!r} is not os/arch[/variant]")
    return sorted(set(platforms))


def check_settings(
    *,
    username: str | None = None,
    staleness_seconds: int | None = None,
    evict_after_days: int | None = None,
    max_bytes: int | None = None,
) -> None:
    if username is not None and (not username or len(username) > 255 or ":" in username):
        raise Invalid("username", "the username is 1-255 characters, without ':'")
    if staleness_seconds is not None and not 0 <= staleness_seconds <= 30 * 86400:
        raise Invalid("staleness", "the staleness window is 0 to 2592000 seconds")
    if evict_after_days is not None and not 1 <= evict_after_days <= 36500:
        raise Invalid("evict_after_days", "evict after 1 to 36500 days")
    if max_bytes is not None and max_bytes < 1:
        raise Invalid("max_bytes", "the size cap is a positive number of bytes")


class MirrorService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.secret = ctx.config.auth.token.key_encryption_secret
        self._caches: dict[str, Cache] = {}
        self._loaded_at = float("-inf")
        self._refreshing: asyncio.Future[None] | None = None
        self._clients: dict[tuple[int, str], tuple[datetime, RegistryClient]] = {}
        self._checked: dict[tuple[str, str], tuple[str, float]] = {}  # (repo, tag) → digest, t
        self._pulled: dict[tuple[str, str], float] = {}

    def _tx(self) -> Any:
        return writer(self.ctx.write_engine).begin()

    # --- cache organizations ------------------------------------------------------------------

    def _set_view(self, rows: Any) -> None:
        self._caches = {r.namespace: _cache(r) for r in rows}
        self._loaded_at = time.monotonic()

    async def _load(self) -> None:
        async with self.ctx.engine.connect() as own:
            self._set_view((await own.execute(sa.select(mc))).all())

    async def cache_of(self, repo: str, conn: AsyncConnection | None = None) -> Cache | None:
        """The cache organization *repo* belongs to (a view at most REFRESH_SECONDS old).

        Inside a transaction, pass its *conn*: a refresh then reads through it. Nothing here
        waits for another connection while holding something a transaction waits for: with
        a lock around the refresh, 200 concurrent pushes on PostgreSQL deadlocked the pool
        (the lock's holder waiting for a pooled connection, every pooled connection held by
        a push's transaction waiting for the lock; QueuePool timeouts after 30 s, 503)."""
        if time.monotonic() - self._loaded_at >= REFRESH_SECONDS:
            if conn is not None:
                # Never suspends inline on the SQLite writer thread (moorage/db/inline.py).
                self._set_view((await conn.execute(sa.select(mc))).all())
            elif running_inline():
                raise NotInline("the cache organizations need a refresh")
            else:
                await self._refresh()
        ns = namespace_of(repo)
        return self._caches.get(ns) if ns else None

    async def _refresh(self) -> None:
        """One refresh at a time outside transactions; callers that already have a view
        keep using it meanwhile, the others wait for the one in flight."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._load())
            # A failed refresh is seen by whoever waits for it; the others retry next time.
            self._refreshing.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._loaded_at == float("-inf"):
            await asyncio.shield(self._refreshing)

    def cache_for_host(self, ns: str) -> Cache | None:
        """The cache organization (first by name) of the registry *ns* (``host[:port]``, as
        containerd's ``?ns=`` names it; ``docker.io`` for Docker Hub)."""
        ns = ns.strip().lower()
        if ns in _DOCKER_HUB_HOSTS:
            ns = "registry-1.docker.io"
        for name in sorted(self._caches):
            cache = self._caches[name]
            if cache.host == ns:
                return cache
        return None

    def known_cache(self, namespace: str) -> Cache | None:
        """From this node's current view, no database read (the content rule's question)."""
        return self._caches.get(namespace)

    def invalidate(self) -> None:
        """Read the cache organizations again on the next question (after a change here)."""
        self._loaded_at = float("-inf")

    async def caches(self) -> list[Cache]:
        self._loaded_at = float("-inf")
        await self._load()
        return sorted(self._caches.values(), key=lambda c: c.namespace)

    def _seal(self, namespace: str, password: str) -> str:
        if not self.secret:
            raise Invalid(
                "password",
                "upstream credentials are stored encrypted: set "
                "auth.token.key_encryption_secret (MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET) on "
                "every node first",
            )
        return keycrypt.encrypt_pem(self.secret, _KID + namespace, password)

    def credentials(self, cache: Cache) -> Credentials | None:
        if cache.username is None:
            return None
        password = ""
        if cache.secret is not None:
            password = keycrypt.decrypt_pem(self.secret, _KID + cache.namespace, cache.secret)
        return Credentials(cache.username, password)

    async def create_cache(
        self,
        conn: AsyncConnection,
        namespace: str,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        platforms: list[str] | None = None,
        staleness_seconds: int = 300,
        evict_after_days: int | None = None,
        max_bytes: int | None = None,
    ) -> Cache:
        """Make organization *namespace* (created by the caller in the same transaction) a
        cache of *url*."""
        url = normalize_url(url)
        if password and username is None:
            raise Invalid("password", "a password needs --upstream-username")
        check_settings(
            username=username,
            staleness_seconds=staleness_seconds,
            evict_after_days=evict_after_days,
            max_bytes=max_bytes,
        )
        secret = self._seal(namespace, password) if password else None
        if (await conn.execute(sa.select(mc.c.id).where(mc.c.namespace == namespace))).first():
            raise Conflict(f"organization {namespace} is already a cache")
        ts = now()
        await conn.execute(
            sa.insert(mc).values(
                namespace=namespace,
                url=url,
                username=username,
                secret=secret,
                insecure=insecure,
                platforms=check_platforms(platforms),
                staleness_seconds=staleness_seconds,
                evict_after_days=evict_after_days,
                max_bytes=max_bytes,
                created_at=ts,
                updated_at=ts,
            )
        )
        row = (await conn.execute(sa.select(mc).where(mc.c.namespace == namespace))).one()
        return _cache(row)

    async def update_cache(
        self, namespace: str, changes: dict[str, Any], clear: frozenset[str] = frozenset()
    ) -> Cache:
        """Change the settings of cache *namespace*: *changes* holds the new values (``url``,
        ``username``, ``password``, ``insecure``, ``platforms``, ``staleness_seconds``,
        ``evict_after_days``, ``max_bytes``), *clear* the optional ones set back to none. A new
        username without a password drops the stored password."""
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(mc).where(mc.c.namespace == namespace))).first()
            if row is None:
                raise NotFound(f"organization {namespace} is not a cache")
            values: dict[str, Any] = {}
            if "url" in changes:
                values["url"] = normalize_url(str(changes["url"]))
            if "insecure" in changes:
                values["insecure"] = bool(changes["insecure"])
            if "platforms" in changes:
                values["platforms"] = check_platforms(changes["platforms"])
            elif "platforms" in clear:
                values["platforms"] = None
            if "staleness_seconds" in changes:
                check_settings(staleness_seconds=changes["staleness_seconds"])
                values["staleness_seconds"] = changes["staleness_seconds"]
            for key in ("evict_after_days", "max_bytes"):
                if key in changes:
                    check_settings(**{key: changes[key]})
                    values[key] = changes[key]
                elif key in clear:
                    values[key] = None
            if "username" in clear:
                values["username"] = values["secret"] = None
            elif "username" in changes:
                check_settings(username=changes["username"])
                values["username"] = changes["username"]
                if changes["username"] != row.username:
                    values["secret"] = None
            if changes.get("password"):
                if values.get("username", row.username) is None:
                    raise Invalid("password", "a password needs an upstream username")
                values["secret"] = self._seal(namespace, str(changes["password"]))
            elif "password" in clear:
                values["secret"] = None
            values["updated_at"] = now()
            await conn.execute(sa.update(mc).where(mc.c.namespace == namespace).values(**values))
            row = (await conn.execute(sa.select(mc).where(mc.c.namespace == namespace))).one()
        self._loaded_at = float("-inf")
        return _cache(row)

    async def delete_cache(self, namespace: str) -> None:
        """The organization stops being a cache (its content stays, as ordinary repositories
        that accept pushes again once every node has refreshed its view)."""
        async with self._tx() as conn:
            gone = await conn.execute(sa.delete(mc).where(mc.c.namespace == namespace))
            if not gone.rowcount:
                raise NotFound(f"organization {namespace} is not a cache")
            prefix = namespace + "/%"
            await conn.execute(sa.delete(mtg).where(mtg.c.repository.like(prefix)))
            await conn.execute(sa.delete(mp).where(mp.c.repository.like(prefix)))
        self._loaded_at = float("-inf")
        self._checked = {k: v for k, v in self._checked.items() if namespace_of(k[0]) != namespace}

    async def usage(self, namespace: str) -> dict[str, Any]:
        """What cache *namespace* holds: bytes (linked blobs and manifests), images (root
        manifests: tagged or not listed by an index of their repository), repositories, and
        when an image was last pulled (None: never recorded)."""
        m, r = manifests, repositories
        parent = manifests.alias("parent")
        listed = sa.exists().where(
            manifest_references.c.manifest_id == parent.c.id,
            manifest_references.c.kind == "manifest",
            manifest_references.c.digest == m.c.digest,
            parent.c.repository_id == m.c.repository_id,
        )
        in_ns = r.c.namespace == namespace
        blob_bytes = (
            sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
            .select_from(
                repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id).join(
                    r, r.c.id == repository_blobs.c.repository_id
                )
            )
            .where(in_ns)
        )
        manifest_bytes = (
            sa.select(sa.func.coalesce(sa.func.sum(m.c.size), 0))
            .select_from(m.join(r, r.c.id == m.c.repository_id))
            .where(in_ns)
        )
        images = (
            sa.select(sa.func.count())
            .select_from(m.join(r, r.c.id == m.c.repository_id))
            .where(in_ns, ~listed)
        )
        repos = sa.select(sa.func.count()).select_from(r).where(in_ns)
        last = sa.select(sa.func.max(mp.c.pulled_at)).where(mp.c.repository.like(namespace + "/%"))
        async with self.ctx.engine.connect() as conn:
            size = int((await conn.execute(blob_bytes)).scalar() or 0)
            size += int((await conn.execute(manifest_bytes)).scalar() or 0)
            count = int((await conn.execute(images)).scalar() or 0)
            repo_count = int((await conn.execute(repos)).scalar() or 0)
            last_pull = _aware((await conn.execute(last)).scalar())
        return {
            "bytes": size,
            "images": count,
            "repositories": repo_count,
            "last_pull": last_pull,
        }

    # --- upstream clients ---------------------------------------------------------------------

    def client(self, cache: Cache, kind: str = "fetch") -> RegistryClient:
        key = (cache.id, kind)
        held = self._clients.get(key)
        if held is not None and held[0] == cache.updated_at:
            return held[1]
        probe = kind == "probe"
        client = RegistryClient(
            cache.url,
            self.credentials(cache),
            TLSOptions(verify=not cache.insecure),
            PROBE_TIMEOUTS if probe else FETCH_TIMEOUTS,
            retry=RetryPolicy(attempts=1) if probe else RetryPolicy(attempts=3, max_retry_after=30),
            name_mapper=docker_hub_name if cache.docker_hub else None,
            user_agent="moorage-mirror",
        )
        if held is not None:
            asyncio.get_running_loop().create_task(held[1].aclose())
        self._clients[key] = (cache.updated_at, client)
        return client

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # --- revalidation and pull times ----------------------------------------------------------

    async def checked(self, cache: Cache, repo: str, tag: str) -> str | None:
        """The digest *tag* had when it was last revalidated, if that was within the cache's
        staleness window (this node's memory first, then the database)."""
        window = cache.staleness_seconds
        if window <= 0:
            return None
        seen = self._checked.get((repo, tag))
        if seen is not None and time.monotonic() - seen[1] < window:
            return seen[0]
        async with self.ctx.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(mtg.c.digest, mtg.c.checked_at).where(
                        mtg.c.repository == repo, mtg.c.tag == tag
                    )
                )
            ).first()
        if row is None:
            return None
        age = (now() - (_aware(row.checked_at) or now())).total_seconds()
        if age >= window:
            return None
        self._checked[(repo, tag)] = (row.digest, time.monotonic() - max(age, 0.0))
        return str(row.digest)

    async def mark_checked(self, repo: str, tag: str, digest: str) -> None:
        self._checked[(repo, tag)] = (digest, time.monotonic())
        async with self._tx() as conn:
            await conn.execute(
                sa.delete(mtg).where(mtg.c.repository == repo, mtg.c.tag == tag)
            )
            await conn.execute(
                sa.insert(mtg).values(repository=repo, tag=tag, digest=digest, checked_at=now())
            )

    async def record_pull(self, repo: str, digest: str) -> None:
        key = (repo, digest)
        t = time.monotonic()
        last = self._pulled.get(key)
        if last is not None and t - last < PULL_RECORD_SECONDS:
            return
        if len(self._pulled) > 100_000:
            self._pulled.clear()
        self._pulled[key] = t
        async with self._tx() as conn:
            await conn.execute(
                sa.delete(mp).where(mp.c.repository == repo, mp.c.digest == digest)
            )
            await insert_ignore(
                conn, mp, {"repository": repo, "digest": digest, "pulled_at": now()},
                ["repository", "digest"],
            )

    def forget(self, repo: str, digest: str) -> None:
        self._pulled.pop((repo, digest), None)


def days_ago(days: int) -> datetime:
    return now() - timedelta(days=days)
