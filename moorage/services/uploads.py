"""Blob upload sessions: chunked, streamed and monolithic; resumable on any node.

Invariants (see docs/architecture.md):
1. Bytes stream into the storage writer while a running hash advances; after each request the
   hash state and the writer's state are saved with the session, so that another node, or this
   one after a restart, continues where the last complete request left off.
2. One request at a time owns a session (a lease in the database, renewed while it works; a
   stale lease of a dead node may be taken over).
3. On the final PUT the digest is verified before anything becomes visible; the writer commits
   the bytes to their content-addressed path; only then, in one transaction, the blob row and the
   repository link are written. A crash between steps leaves garbage, never a visible partial blob.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from ..db import queries as q
from ..oci.digest import Digest
from ..oci.hashing import Hasher, new_hasher, restore_hasher
from ..oci.names import namespace_of
from ..storage.base import PathNotFound, StorageError, UploadWriter, blob_path
from .context import ServiceContext
from .errors import DigestInvalid, RangeInvalid, TooLarge, Unavailable, UploadUnknown
from .events import BlobCommitted

# Bytes handed to the hash/write pipeline at a time: big enough to amortize thread hand-offs,
# small enough that memory stays flat whatever the blob size.
PIPELINE_CHUNK = 1 << 20
_DIGITS = re.compile(r"[0-9]{1,40}")


@dataclass(frozen=True, slots=True)
class UploadStatus:
    id: str
    size: int


@dataclass(frozen=True, slots=True)
class ContentRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class _Session:
    """One request's hold on an upload: lease, writer and hasher."""

    def __init__(
        self,
        ctx: ServiceContext,
        row: q.UploadRow,
        token: str,
        writer: UploadWriter,
        hasher: Hasher,
    ) -> None:
        self.ctx = ctx
        self.row = row
        self.token = token
        self.writer = writer
        self.hasher = hasher
        self._renewed = time.monotonic()

    async def renew_if_due(self) -> None:
        lease = self.ctx.config.registry.upload_lease_seconds
        if time.monotonic() - self._renewed < lease / 3:
            return
        self._renewed = time.monotonic()
        async with self.ctx.write_engine.begin() as conn:
            ok = await q.renew_upload_lease(
                conn, self.row.id, self.token, q.now() + timedelta(seconds=lease)
            )
        if not ok:
            raise RangeInvalid("the upload was taken over by another request", self.row.size)


class _Consistency:
    """Whether the writer and the hasher have seen exactly the same bytes."""

    ok = True


async def _pump(
    stream: AsyncIterator[bytes],
    writer: UploadWriter,
    hasher: Hasher,
    limit: int | None,
    tick: Callable[[], Awaitable[None]] | None = None,
    consistency: _Consistency | None = None,
) -> int:
    """Copy the request body into the writer and hasher; returns the byte count.

    Hashing (in a thread: OpenSSL releases the GIL) and writing run while the next megabyte is
    received. When a write fails the writer and hasher may disagree; *consistency* then says so
    and the caller keeps the session's previously saved state.
    """
    total = 0
    buf = bytearray()
    pending: asyncio.Future[None] | None = None
    state = consistency or _Consistency()

    async def process(data: bytes) -> None:
        hashed = asyncio.ensure_future(asyncio.to_thread(hasher.update, data))
        try:
            await writer.write(data)
        except BaseException:
            state.ok = False
            raise
        finally:
            await asyncio.gather(hashed, return_exceptions=True)

    try:
        async for chunk in stream:
            if not chunk:
                continue
            total += len(chunk)
            if limit is not None and total > limit:
                raise TooLarge(f"body exceeds the allowed {limit} bytes")
            buf += chunk
            if len(buf) >= PIPELINE_CHUNK:
                data = bytes(buf)
                buf.clear()
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(process(data))
                if tick is not None:
                    await tick()
        if pending is not None:
            await pending
            pending = None
        if buf:
            await process(bytes(buf))
    finally:
        if pending is not None:
            # Let the in-flight write finish (or fail) before the caller decides what to save.
            await asyncio.gather(pending, return_exceptions=True)
    return total


def parse_content_range(value: str) -> ContentRange:
    """``start-end`` (inclusive), also accepting a leading ``bytes=``/``bytes `` unit."""
    raw = value.strip()
    for prefix in ("bytes=", "bytes "):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
    start_s, sep, end_s = raw.partition("-")
    if not sep or len(raw) > 40 or not (_DIGITS.fullmatch(start_s) and _DIGITS.fullmatch(end_s)):
        raise ValueError("malformed Content-Range: expected <start>-<end> in decimal")
    start, end = int(start_s), int(end_s)
    if end < start:
        raise ValueError("Content-Range end is before its start")
    return ContentRange(start, end)


class UploadService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @property
    def _blob_limit(self) -> int | None:
        return self.ctx.config.registry.max_blob_size or None

    # --- sessions ---------------------------------------------------------------------------

    async def start(self, repo: str) -> UploadStatus:
        upload_id = str(uuid.uuid4())
        hasher = new_hasher("sha256")
        try:
            writer = await self.ctx.storage.new_writer(upload_id)
            state = writer.state()
            await writer.close()
        except StorageError as exc:
            raise Unavailable(f"storage error: {exc}") from exc
        async with self.ctx.write_engine.begin() as conn:
            repo_id = await q.ensure_repository(conn, repo, namespace_of(repo))
            await q.create_upload(conn, upload_id, repo_id, "sha256", state, hasher.state())
        return UploadStatus(upload_id, 0)

    async def status(self, repo: str, upload_id: str) -> UploadStatus:
        row = await self._row(repo, upload_id)
        return UploadStatus(row.id, row.size)

    async def _row(self, repo: str, upload_id: str) -> q.UploadRow:
        if len(upload_id) > 64:
            raise UploadUnknown("upload unknown")
        async with self.ctx.engine.connect() as conn:
            row = await q.get_upload(conn, repo, upload_id)
        if row is None:
            raise UploadUnknown(f"upload {upload_id[:64]} is unknown in repository {repo}")
        return row

    async def _open(self, repo: str, upload_id: str) -> _Session:
        token = uuid.uuid4().hex
        lease = self.ctx.config.registry.upload_lease_seconds
        async with self.ctx.write_engine.begin() as conn:
            claimed = await q.claim_upload(
                conn, repo, upload_id, token, q.now() + timedelta(seconds=lease)
            )
        if claimed is None:
            row = await self._row(repo, upload_id)  # unknown (404) or busy (416)?
            raise RangeInvalid("another request is writing to this upload", row.size)
        row = claimed
        try:
            writer = await self.ctx.storage.resume_writer(row.id, row.storage_state)
        except PathNotFound:
            await self._release(row.id, token)
            raise UploadUnknown("upload data is gone (expired or cancelled)") from None
        except StorageError as exc:
            await self._release(row.id, token)
            raise Unavailable(f"storage error: {exc}") from exc
        if writer.size != row.size:
            await writer.close()
            await self._release(row.id, token)
            raise Unavailable("upload storage disagrees with its recorded size; retry")
        hasher = restore_hasher(row.hash_algorithm, row.hash_state)
        if hasher is None:
            # The state could not travel (other architecture, no libcrypto): re-hash the bytes.
            hasher = new_hasher(row.hash_algorithm)
            async for chunk in writer.read_back():
                await asyncio.to_thread(hasher.update, chunk)
        return _Session(self.ctx, row, token, writer, hasher)

    async def _release(self, upload_id: str, token: str) -> None:
        async with self.ctx.write_engine.begin() as conn:
            await q.release_upload_lease(conn, upload_id, token)

    async def _append(
        self,
        s: _Session,
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
        keep_lease: bool = False,
    ) -> None:
        """Stream *body* into the session and save progress (also after a client abort).

        With *keep_lease* the request goes on holding the session (the final PUT, which must
        own it until the commit) and nothing is saved when the body was empty."""
        limit = self._blob_limit
        if limit is not None:
            limit = max(0, limit - s.row.size)
        saved = False
        consistency = _Consistency()
        try:
            if content_range is not None:
                if content_range.start != s.row.size:
                    raise RangeInvalid(
                        f"chunk starts at {content_range.start} but the upload has {s.row.size} bytes",
                        s.row.size,
                    )
                limit = content_range.length if limit is None else min(limit, content_range.length)
            written = await _pump(body, s.writer, s.hasher, limit, s.renew_if_due, consistency)
            if content_range is not None and written != content_range.length:
                # The declared range and the body disagree: keep the previous state.
                raise RangeInvalid(
                    f"Content-Range declares {content_range.length} bytes, body had {written}",
                    s.row.size,
                )
            if not (keep_lease and written == 0):
                await self._save(s, release=not keep_lease)
            saved = True
        except (OSError, StorageError) as exc:
            raise Unavailable(f"storage error: {exc}") from exc
        except (RangeInvalid, TooLarge):
            raise
        except BaseException:
            # Client went away mid-body: keep what was fully written and hashed, so that a
            # status request tells the client where to resume.
            if not saved and consistency.ok:
                await asyncio.shield(self._save_quietly(s))
                saved = True
            raise
        finally:
            if not saved:
                await asyncio.shield(self._release_quietly(s))

    async def _save(self, s: _Session, release: bool = True) -> None:
        await s.writer.flush()
        async with self.ctx.write_engine.begin() as conn:
            ok = await q.save_upload_progress(
                conn,
                s.row.id,
                s.token,
                s.writer.size,
                s.hasher.state(),
                s.writer.state(),
                release=release,
            )
        if not ok:
            raise RangeInvalid("the upload was taken over by another request", s.row.size)
        s.row.size = s.writer.size

    async def _save_quietly(self, s: _Session) -> None:
        try:
            await self._save(s)
        except Exception:  # noqa: BLE001 - best effort; the old state stays valid
            await self._release_quietly(s)

    async def _release_quietly(self, s: _Session) -> None:
        try:
            await s.writer.close()
            await self._release(s.row.id, s.token)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass

    async def append(
        self,
        repo: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
    ) -> UploadStatus:
        s = await self._open(repo, upload_id)
        try:
            await self._append(s, body, content_range)
        finally:
            await s.writer.close()
        return UploadStatus(s.row.id, s.row.size)

    async def finish(
        self,
        repo: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
    ) -> None:
        s = await self._open(repo, upload_id)
        try:
            # The session stays ours until the commit: no other request may touch the bytes
            # between their verification and their move into place.
            await self._append(s, body, content_range, keep_lease=True)
            await self._commit(s.writer, s.hasher, digest, repo, s.row)
        except DigestInvalid:
            await self._discard(s)
            raise
        except BaseException:
            await asyncio.shield(self._release_quietly(s))
            raise

    async def _discard(self, s: _Session) -> None:
        """Cancel a session whose content failed verification (as Distribution does)."""
        try:
            await s.writer.cancel()
        finally:
            async with self.ctx.write_engine.begin() as conn:
                await q.delete_upload(conn, s.row.id)

    async def cancel(self, repo: str, upload_id: str) -> None:
        s = await self._open(repo, upload_id)
        await self._discard(s)

    async def purge_abandoned(self, older_than: timedelta) -> tuple[int, int]:
        """Forget sessions without progress for *older_than*, then remove what such sessions
        left in the store (on S3: staging objects and unfinished multipart uploads). For a
        periodic job; returns (sessions dropped, storage items removed)."""
        async with self.ctx.write_engine.begin() as conn:
            sessions = await q.delete_stale_uploads(conn, q.now() - older_than)
        try:
            items = await self.ctx.storage.cleanup_abandoned(older_than)
        except StorageError as exc:
            raise Unavailable(f"storage error: {exc}") from exc
        return sessions, items

    async def monolithic(self, repo: str, digest: Digest, body: AsyncIterator[bytes]) -> None:
        """POST ?digest=: the whole blob in one request, no session row."""
        upload_id = str(uuid.uuid4())
        hasher = new_hasher(digest.algorithm)
        try:
            writer = await self.ctx.storage.new_writer(upload_id)
        except StorageError as exc:
            raise Unavailable(f"storage error: {exc}") from exc
        try:
            try:
                await _pump(body, writer, hasher, self._blob_limit)
            except (OSError, StorageError) as exc:
                raise Unavailable(f"storage error: {exc}") from exc
            await self._commit(writer, hasher, digest, repo)
        except BaseException:
            await asyncio.shield(writer.cancel())
            raise

    async def _commit(
        self,
        writer: UploadWriter,
        hasher: Hasher,
        digest: Digest,
        repo: str,
        session: q.UploadRow | None = None,
    ) -> None:
        """Verify, place the bytes, then record blob and link (the visibility point) — and end
        the *session*, in the same transaction."""
        if hasher.algorithm != digest.algorithm:
            hasher = new_hasher(digest.algorithm)
            async for chunk in writer.read_back():
                await asyncio.to_thread(hasher.update, chunk)
        actual = hasher.hexdigest()
        if actual != digest.hex:
            raise DigestInvalid(
                f"content digest is {digest.algorithm}:{actual}, not {digest}",
                detail={"expected": str(digest), "actual": f"{digest.algorithm}:{actual}"},
            )
        size = writer.size
        path = blob_path(digest.algorithm, digest.hex)
        try:
            existing = await self.ctx.hot.blob_exists(str(digest))
            stored = await self.ctx.storage.stat(path) if existing else None
            if stored is not None and stored.size == size:
                await writer.cancel()  # deduplicated: the bytes are already stored
            else:
                await writer.commit(path)
        except (OSError, StorageError) as exc:
            raise Unavailable(f"storage error: {exc}") from exc
        async with self.ctx.write_engine.begin() as conn:
            blob_id = await q.add_blob(conn, str(digest), size)
            if session is not None:
                repo_id = session.repository_id
                await q.delete_upload(conn, session.id)
            else:
                repo_id = await q.ensure_repository(conn, repo, namespace_of(repo))
            await q.link_blob(conn, repo_id, blob_id)
            if self.ctx.events.wants(BlobCommitted):
                await self.ctx.events.publish(conn, BlobCommitted(repo, str(digest), size))
