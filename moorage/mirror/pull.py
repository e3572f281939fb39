"""The pull path of a cache organization (``ctx.pull_through``, services/pullthrough.py).

Manifests:

* by digest — the local copy when held; else fetched from the upstream (verified against the
  digest), served, and stored with everything it needs by a ``mirror.fill`` job;
* by tag — the local copy while its last revalidation is younger than the cache's staleness
  window; else one HEAD to the upstream (no rate-limit cost on Docker Hub). Same digest: the
  local copy. Another digest: the new manifest is fetched by digest, served and filled. The
  upstream failing, timing out or answering 429 is logged and the local copy served — never
  a 404 for a tag we hold; with nothing held, a clear 503 says the upstream is unreachable.

Blobs: the local copy when the repository holds it; a blob stored for another repository is
linked (no upstream traffic); else one upstream download is both the client's stream and the
cache fill. The bytes go to the client and to storage together, the digest is checked at the
end by both, and the last chunk is held back until it verified: a corrupt or cut download
reaches the client as a broken transfer and is never stored. Another request for a blob being
downloaded on this node waits for that download instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ..db import queries as q
from ..jobs.runner import JobRunner
from ..metrics.definitions import METRICS
from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.manifest import ManifestError, parse_manifest
from ..oci.names import namespace_of, valid_name
from ..replication.errors import NotFound, ReplicationError
from ..replication.models import Manifest as Fetched
from ..services.blobs import BlobService
from ..services.context import ServiceContext
from ..services.errors import BlobUnknown, ManifestUnknown, NameUnknown, Unavailable
from ..services.manifests import Manifest, ManifestService
from ..services.rules import ManifestRead, Requester
from ..services.uploads import UploadService
from .service import Cache, MirrorService

log = logging.getLogger("moorage.mirror")

FILL_JOB = "mirror.fill"
MIRROR_ACTOR = "mirror:"
_INLINE_LIMIT = 256 * 1024  # manifests up to this size travel in the fill job's payload
_WAIT_FOR_DOWNLOAD = 600.0
_RECENT_SECONDS = 60.0
_RECENT_MAX = 256


def _count(kind: str, outcome: str) -> None:
    METRICS.mirror_requests.labels(kind, outcome).inc()


def _unreachable(cache: Cache, what: str, exc: BaseException) -> Unavailable:
    _count("blob" if what.startswith("blob") else "manifest", "unavailable")
    return Unavailable(
        f"{what} is not cached in {cache.namespace}, and its upstream {cache.url} failed: {exc}"
    )


def _platform(entry: dict[str, Any]) -> str:
    p = entry.get("platform")
    if not isinstance(p, dict):
        return ""
    parts = [str(p.get("os", "")), str(p.get("architecture", ""))]
    if p.get("variant"):
        parts.append(str(p["variant"]))
    return "/".join(parts)


def _accepts(accept: list[str], media_type: str) -> bool:
    return not accept or media_type in accept or "*/*" in accept


def wanted(cache: Cache, entry: dict[str, Any]) -> bool:
    """Whether an index entry is kept under the cache's platform filter (``linux/arm64``
    also keeps ``linux/arm64/v8``)."""
    if cache.platforms is None:
        return True
    platform = _platform(entry)
    return any(platform == p or platform.startswith(p + "/") for p in cache.platforms)


class MirrorPull:
    def __init__(self, service: MirrorService, jobs: JobRunner | None) -> None:
        self.service = service
        self.ctx: ServiceContext = service.ctx
        self.jobs = jobs
        self.manifests = ManifestService(self.ctx)
        self.blobs = BlobService(self.ctx)
        self.uploads = UploadService(self.ctx)
        self._downloads: dict[str, asyncio.Event] = {}
        self._recent: dict[tuple[int, str, str], tuple[float, Fetched]] = {}

    # --- PullThrough ----------------------------------------------------------------------------

    async def covers(self, repo: str) -> bool:
        return await self.service.cache_of(repo) is not None

    async def route(self, repo: str, ns: str) -> str | None:
        if len(ns) > 300 or await self.service.cache_of(repo) is not None:
            return None  # already addressed to a cache (hosts.toml with a path of its own)
        cache = self.service.cache_for_host(ns)
        if cache is None:
            return None
        routed = f"{cache.namespace}/{repo}"
        return routed if valid_name(routed) else None

    def push_refusal(self, repo: str) -> str:
        ns = namespace_of(repo)
        return (
            f"{ns} is a pull-through cache of an upstream registry: pushes are refused; pull "
            f"from it, or push to an organization that is not a cache"
        )

    async def _cache(self, repo: str) -> Cache:
        cache = await self.service.cache_of(repo)
        if cache is None:  # the organization stopped being a cache between two calls
            raise NameUnknown(f"repository {repo} is not known")
        if len(repo) <= len(cache.namespace) + 1:
            raise NameUnknown(
                f"{repo} is the cache organization itself: pull {cache.namespace}/<path>:<tag>"
            )
        return cache

    async def manifest(
        self, repo: str, reference: str, accept: list[str], requester: Requester
    ) -> Manifest:
        cache = await self._cache(repo)
        if ":" in reference:
            return await self._by_digest(cache, repo, reference, accept, requester)
        return await self._by_tag(cache, repo, reference, accept, requester)

    async def _local(
        self, repo: str, reference: str, accept: list[str], requester: Requester
    ) -> Manifest | None:
        try:
            return await self.manifests.get(repo, reference, accept, requester)
        except ManifestUnknown as exc:
            if isinstance(exc.detail, dict) and exc.detail.get("sparse"):
                raise  # a child the platform filter left out: the clear 404 stands
            return None

    async def _by_digest(
        self, cache: Cache, repo: str, digest: str, accept: list[str], requester: Requester
    ) -> Manifest:
        local = await self._local(repo, digest, accept, requester)
        if local is not None:
            await self.service.record_pull(repo, local.digest)
            _count("manifest", "hit")
            return local
        upstream = cache.upstream_name(repo)
        try:
            fetched = await self._fetch(cache, repo, digest)
        except NotFound:
            raise ManifestUnknown(
                f"manifest {digest} is neither cached in {repo} nor in upstream "
                f"{cache.url} ({upstream})"
            ) from None
        except ReplicationError as exc:
            raise _unreachable(cache, f"manifest {digest}", exc) from exc
        await self._fill_later(cache, repo, None, fetched)
        _count("manifest", "fetched")
        served = Manifest(fetched.digest, fetched.media_type, fetched.data)
        return await self._check_read(repo, digest, served, requester)

    async def _by_tag(
        self, cache: Cache, repo: str, tag: str, accept: list[str], requester: Requester
    ) -> Manifest:
        row = await self.ctx.hot.manifest_by_tag(repo, tag)
        local = await self._local(repo, tag, accept, requester) if row is not None else None
        if row is not None and local is not None:
            fresh = await self.service.checked(cache, repo, tag)
            if fresh == row.digest:
                await self.service.record_pull(repo, row.digest)
                _count("manifest", "hit")
                return local
        upstream = cache.upstream_name(repo)
        try:
            info = await self.service.client(cache, "probe").head_manifest(upstream, tag)
        except ReplicationError as exc:
            if local is not None and row is not None:
                log.warning(
                    "mirror %s: revalidating %s:%s failed (%s); serving the cached %s",
                    cache.namespace, repo, tag, exc, row.digest,
                )
                await self.service.record_pull(repo, row.digest)
                _count("manifest", "stale")
                return local
            raise _unreachable(cache, f"{repo}:{tag}", exc) from exc
        if info is None:
            if local is not None and row is not None:
                log.warning(
                    "mirror %s: upstream %s has no tag %s:%s any more; serving the cached %s",
                    cache.namespace, cache.url, upstream, tag, row.digest,
                )
                _count("manifest", "stale")
                return local
            raise ManifestUnknown(
                f"manifest {tag} is neither cached in {repo} nor in upstream {cache.url} "
                f"({upstream}:{tag})"
            )
        if local is not None and row is not None and info.digest == row.digest:
            await self.service.mark_checked(repo, tag, row.digest)
            await self.service.record_pull(repo, row.digest)
            _count("manifest", "hit")
            return local
        # New to us, or moved upstream: fetch by digest (verified), serve, fill.
        try:
            fetched = await self._fetch(cache, repo, info.digest)
        except ReplicationError as exc:
            if local is not None:
                log.warning(
                    "mirror %s: fetching %s:%s failed (%s); serving the cached copy",
                    cache.namespace, repo, tag, exc,
                )
                _count("manifest", "stale")
                return local
            raise _unreachable(cache, f"{repo}:{tag}", exc) from exc
        await self._fill_later(cache, repo, tag, fetched)
        _count("manifest", "fetched")
        if not _accepts(accept, fetched.media_type) and fetched.media_type in mt.INDEXES:
            # A client that cannot read an index (old docker): what Distribution answers.
            child = await self._default_child(cache, repo, fetched)
            if child is not None:
                return await self._check_read(repo, tag, child, requester)
        served = Manifest(fetched.digest, fetched.media_type, fetched.data)
        return await self._check_read(repo, tag, served, requester)

    async def _default_child(self, cache: Cache, repo: str, index: Fetched) -> Manifest | None:
        try:
            doc = json.loads(index.data)
        except ValueError:
            return None
        for entry in doc.get("manifests") or []:
            if _platform(entry) == "linux/amd64" and isinstance(entry.get("digest"), str):
                try:
                    child = await self._fetch(cache, repo, entry["digest"])
                except ReplicationError:
                    return None
                return Manifest(child.digest, child.media_type, child.data)
        return None

    async def _fetch(self, cache: Cache, repo: str, digest: str) -> Fetched:
        """A manifest by digest from the upstream (verified), or from the few this node fetched
        in the last minute: a client's HEAD then GET, a child pulled by the client and then by
        the fill job, cost the upstream one request (Docker Hub counts manifest GETs)."""
        key = (cache.id, repo, digest)
        t = time.monotonic()
        held = self._recent.get(key)
        if held is not None and t - held[0] < _RECENT_SECONDS:
            return held[1]
        fetched = await self.service.client(cache).get_manifest(cache.upstream_name(repo), digest)
        if len(self._recent) >= _RECENT_MAX:
            self._recent = {k: v for k, v in self._recent.items() if t - v[0] < _RECENT_SECONDS}
            while len(self._recent) >= _RECENT_MAX:
                del self._recent[next(iter(self._recent))]
        self._recent[key] = (t, fetched)
        return fetched

    async def _check_read(
        self, repo: str, reference: str, m: Manifest, requester: Requester
    ) -> Manifest:
        """Content fetched for a client passes the same read rules as content held (e.g. a
        signed-only pull policy on the cache organization)."""
        if self.ctx.rules.checks_reads:
            await self.ctx.rules.manifest_read(
                ManifestRead(repo, reference, m.digest, m.media_type, ":" in reference, requester)
            )
        return m

    # --- filling the cache ----------------------------------------------------------------------

    async def _fill_later(self, cache: Cache, repo: str, tag: str | None, m: Fetched) -> None:
        payload: dict[str, Any] = {
            "repository": repo,
            "tag": tag,
            "digest": m.digest,
            "media_type": m.media_type,
        }
        if len(m.data) <= _INLINE_LIMIT:
            payload["data"] = base64.b64encode(m.data).decode("ascii")
        if self.jobs is None:
            await self.fill(payload)
            return
        await self.jobs.enqueue(
            FILL_JOB, payload, dedupe_key=f"fill:{repo}:{tag or ''}:{m.digest}"[:255]
        )

    async def fill(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The ``mirror.fill`` job: store a manifest fetched for a client, with its blobs (and,
        for an index, its platform manifests), then point the tag at it."""
        repo = str(payload["repository"])
        cache = await self._cache(repo)
        tag = payload.get("tag")
        digest = str(payload["digest"])
        if isinstance(payload.get("data"), str):
            data = base64.b64decode(payload["data"])
            m = Fetched(data, str(payload.get("media_type") or ""), digest)
            if not digest.startswith("sha256:") or str(Digest.from_bytes(data)) != digest:
                m = await self._fetch(cache, repo, digest)
        else:
            m = await self._fetch(cache, repo, digest)
        stored = await self._store(cache, repo, m, str(tag) if tag else None, depth=0)
        if tag:
            await self.service.mark_checked(repo, str(tag), m.digest)
        await self.service.record_pull(repo, m.digest)
        return {"repository": repo, "digest": m.digest, "stored": stored}

    async def _store(
        self, cache: Cache, repo: str, m: Fetched, tag: str | None, depth: int
    ) -> int:
        """Store *m* and what it needs; returns how many manifests were written."""
        held = await self.ctx.hot.manifest_by_digest(repo, m.digest)
        written = 0
        if held is None:
            try:
                parsed = parse_manifest(m.data, m.media_type)
            except ManifestError as exc:
                raise Unavailable(f"upstream manifest {m.digest} is not valid: {exc}") from None
            if parsed.media_type in mt.INDEXES:
                if depth > 1:
                    raise Unavailable(f"index {m.digest} nests indexes too deeply")
                doc = json.loads(m.data)
                for entry in doc.get("manifests") or []:
                    child = entry.get("digest")
                    if not isinstance(child, str) or not wanted(cache, entry):
                        continue
                    if await self.ctx.hot.manifest_by_digest(repo, child) is not None:
                        continue
                    fetched = await self._fetch(cache, repo, child)
                    written += await self._store(cache, repo, fetched, None, depth + 1)
            else:
                for d in parsed.required_blobs():
                    await self._ensure_blob(cache, repo, d)
        if held is None or tag is not None:
            await self.manifests.put(
                repo,
                tag or m.digest,
                m.data,
                m.media_type,
                Requester.system(MIRROR_ACTOR + cache.namespace),
            )
            written += 1
        return written

    # --- blobs ------------------------------------------------------------------------------------

    async def _link_existing(self, repo: str, digest: Digest) -> int | None:
        """Link a blob already stored (for another repository) into *repo*; its size, or None."""
        if not await self.ctx.hot.blob_exists(str(digest)):
            return None
        async with self.ctx.write_engine.begin() as conn:
            row = await q.blob_by_digest(conn, str(digest))
            if row is None:
                return None
            repo_id = await q.ensure_repository(conn, repo, namespace_of(repo))
            await q.link_blob(conn, repo_id, row.id)
            return int(row.size)

    async def _held(self, repo: str, digest: Digest) -> int | None:
        """The blob's size once it is stored (waiting for a download of it on this node), or
        None: then the caller downloads it, calling :meth:`_download` with no await between."""
        key = str(digest)
        while True:
            event = self._downloads.get(key)
            if event is not None:
                try:
                    async with asyncio.timeout(_WAIT_FOR_DOWNLOAD):
                        await event.wait()
                except TimeoutError:
                    return None  # stuck: download it ourselves
            size = await self._link_existing(repo, digest)
            if size is not None or self._downloads.get(key) is None:
                return size

    async def _ensure_blob(self, cache: Cache, repo: str, digest: Digest) -> None:
        if await self.ctx.hot.blob_in_repository(repo, str(digest)) is not None:
            return
        if await self._held(repo, digest) is not None:
            return
        size, stream = await self._download(cache, repo, digest)
        async for _ in stream:
            pass

    async def blob_size(self, repo: str, digest: Digest) -> int:
        cache = await self._cache(repo)
        size = await self._link_existing(repo, digest)
        if size is not None:
            return size
        upstream = cache.upstream_name(repo)
        try:
            found = await self.service.client(cache).head_blob(upstream, str(digest))
        except ReplicationError as exc:
            raise _unreachable(cache, f"blob {digest}", exc) from exc
        if found is None:
            raise BlobUnknown(f"blob {digest} is neither cached in {repo} nor in upstream {upstream}")
        return max(found, 0)

    async def blob(self, repo: str, digest: Digest) -> tuple[int | None, AsyncIterator[bytes]]:
        cache = await self._cache(repo)
        if await self._held(repo, digest) is not None:
            _count("blob", "hit")
            info = await self.blobs.stat(repo, digest)
            return info.size, await self.blobs.open(info)
        return await self._download(cache, repo, digest)

    async def _download(
        self, cache: Cache, repo: str, digest: Digest
    ) -> tuple[int | None, AsyncIterator[bytes]]:
        """Open the upstream download (errors surface here, before any byte is answered) and
        return the stream that feeds the client and the store at once."""
        upstream = cache.upstream_name(repo)
        key = str(digest)
        # Announced before the first await: a fill job or another client asking for this blob
        # from now on waits for this download instead of starting its own.
        event = self._downloads.get(key)
        mine = event is None
        if event is None:
            event = self._downloads[key] = asyncio.Event()

        def done() -> None:
            if mine and self._downloads.get(key) is event:
                del self._downloads[key]
                event.set()

        opened = self.service.client(cache).open_blob(upstream, str(digest))
        try:
            stream = await opened.__aenter__()
        except NotFound:
            done()
            raise BlobUnknown(
                f"blob {digest} is neither cached in {repo} nor in upstream {upstream}"
            ) from None
        except ReplicationError as exc:
            done()
            raise _unreachable(cache, f"blob {digest}", exc) from exc
        except BaseException:
            done()
            raise

        async def tee() -> AsyncIterator[bytes]:
            _count("blob", "fetched")
            queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

            async def body() -> AsyncIterator[bytes]:
                while (chunk := await queue.get()) is not None:
                    yield chunk

            store = asyncio.create_task(self.uploads.monolithic(repo, digest, body()))
            try:
                held: bytes | None = None
                async for chunk in stream.chunks():  # verified against the digest at the end
                    METRICS.mirror_upstream_bytes.inc(len(chunk))
                    await _put(queue, chunk, store)
                    if held is not None:
                        yield held
                    held = chunk
                await _put(queue, None, store)
                await store  # verified again and committed: only then the last bytes go out
                if held is not None:
                    yield held
            except BaseException as exc:
                if not store.done():
                    store.cancel()
                with contextlib.suppress(BaseException):
                    await store
                if isinstance(exc, ReplicationError):
                    log.warning("mirror %s: blob %s from %s failed: %s",
                                cache.namespace, digest, upstream, exc)
                raise
            finally:
                await opened.__aexit__(None, None, None)
                done()

        return stream.size, tee()


async def _put(queue: asyncio.Queue[bytes | None], item: bytes | None, store: asyncio.Task[None]) -> None:
    """Hand a chunk to the store, unless the store already ended (then its error is raised)."""
    if not queue.full():
        queue.put_nowait(item)
        return
    put = asyncio.ensure_future(queue.put(item))
    done, _ = await asyncio.wait({put, store}, return_when=asyncio.FIRST_COMPLETED)
    if put not in done:
        put.cancel()
        store.result()
        raise Unavailable("the cache store ended before the download")
