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
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from .. import node
from ..db import queries as q
from ..db import writepath as wp
from ..db.conflicts import retry_conflicts
from ..db.writers import connection_tx
from ..oci.digest import Digest
from ..oci.hashing import Hasher, new_hasher, restore_hasher
from ..oci.names import namespace_of
from ..storage.base import PathNotFound, StorageError, UploadWriter, blob_path, is_full
from .context import ServiceContext
from .errors import (
    DigestInvalid,
    RangeInvalid,
    TooLarge,
    TooManyRequests,
    Unavailable,
    UploadUnknown,
)
from .events import BlobCommitted

log = logging.getLogger("moorage.uploads")

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
        expires = wp.now() + timedelta(seconds=lease)
        ok = await self.ctx.writes.run(
            lambda tx: wp.renew_lease(tx, self.row.id, self.token, expires)
        )
        if not ok:
            raise _lost(self.row.id)


def _lost(upload_id: str) -> TooManyRequests:
    return TooManyRequests(
        "another request took this upload session over (this one was too slow); ask the "
        "upload's status and resume from its offset",
        detail={"upload": upload_id},
    )


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


# A request that finds its session leased by another live request waits this long for it to
# finish (a client retrying after a timeout often overlaps its own previous request) before
# answering 429 with Retry-After.
BUSY_WAIT_SECONDS = 2.0


def _storage_error(exc: BaseException) -> Unavailable:
    if is_full(exc):
        return Unavailable(
            "storage is full (no space left on device): the upload keeps its last complete "
            "offset; retry once space is freed"
        )
    return Unavailable(f"storage error: {exc}")


class UploadService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.node = node.node_name(ctx.config.http.port)

    @property
    def _blob_limit(self) -> int | None:
        return self.ctx.config.registry.max_blob_size or None

    # --- sessions ---------------------------------------------------------------------------

    async def start(self, repo: str, owner: str | None = None) -> UploadStatus:
        """Open a session for *owner* (the account; None when access control is off), within
        the caps on open sessions per account and per repository."""
        upload_id = str(uuid.uuid4())
        hasher = new_hasher("sha256")
        try:
            writer = await self.ctx.storage.new_writer(upload_id)
            state = writer.state()
            await writer.close()
        except (OSError, StorageError) as exc:
            raise _storage_error(exc) from exc
        cfg = self.ctx.config.registry
        namespace = namespace_of(repo)
        hash_state = hasher.state()
        try:
            await self.ctx.writes.run(
                lambda tx: wp.start_upload(
                    tx,
                    repo,
                    namespace,
                    upload_id,
                    "sha256",
                    state,
                    hash_state,
                    owner,
                    cfg.max_upload_sessions_per_user,
                    cfg.max_upload_sessions_per_repository,
                )
            )
        except wp.SessionCapReached as exc:
            await self._forget_bytes(upload_id)
            raise TooManyRequests(
                f"too many open upload sessions for {exc.scope} {exc.who} ({exc.count}; the "
                f"limit is {exc.limit}): finish or cancel some (DELETE the upload), or wait for "
                "idle ones to expire",
                retry_after=30,
                detail={"scope": exc.scope, "open": exc.count, "limit": exc.limit},
            ) from None
        except BaseException:
            await self._forget_bytes(upload_id)
            raise
        return UploadStatus(upload_id, 0)

    async def _forget_bytes(self, upload_id: str) -> None:
        try:
            await asyncio.shield(self.ctx.storage.delete_upload(upload_id))
        except Exception:  # noqa: BLE001 - garbage for the purge job
            pass

    async def status(self, repo: str, upload_id: str) -> UploadStatus:
        """Where the session stands. One truth with PATCH and PUT: a session whose bytes are
        gone (a crash between a commit's move and its row, a purge) is unknown here too, and
        its row is dropped. A session a live request is writing to is waited for briefly
        (:meth:`_settled`), so that the offset answered is the one to go on from."""
        found = await self._settled(repo, upload_id)
        row = found.row
        try:
            exists = await self.ctx.storage.upload_exists(row.id, row.storage_state)
        except (OSError, StorageError) as exc:
            raise _storage_error(exc) from exc
        if not exists:
            await self._drop_gone(row.id)
        return UploadStatus(row.id, row.size)

    async def _settled(self, repo: str, upload_id: str) -> wp.LeasedUpload:
        """The session once no live request holds its lease, or after BUSY_WAIT_SECONDS.

        A client whose PATCH broke mid-body asks for the status at once, while the server may
        still be writing what arrived, saving its offset and releasing the lease (a loaded
        node takes a while to see the disconnect). Answered the old offset, the client's next
        PATCH would wait for that lease and then be refused 416 for a range that moved under
        it: a second resume for one cut. A lease of a dead process is not waited for."""
        found = await self._find(repo, upload_id)
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        delay = 0.02
        while (
            found.row.lease_token
            and (found.row.lease_expires_at is None or found.row.lease_expires_at > wp.now())
            and not node.holder_is_dead(found.holder, self.node)
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
            found = await self._find(repo, upload_id)
        return found

    async def _find(self, repo: str, upload_id: str) -> wp.LeasedUpload:
        if len(upload_id) > 64:
            raise UploadUnknown("upload unknown")
        found = await self.ctx.writes.run(lambda tx: wp.upload(tx, repo, upload_id))
        if found is None:
            raise UploadUnknown(f"upload {upload_id[:64]} is unknown in repository {repo}")
        return found

    async def _drop_gone(self, upload_id: str) -> None:
        await self.ctx.writes.run(lambda tx: wp.delete_upload(tx, upload_id))
        raise UploadUnknown("upload data is gone (expired, cancelled or lost in a crash)")

    async def _claim(self, repo: str, upload_id: str) -> q.UploadRow:
        """The lease for this request. A lease of a dead process of this node is taken over at
        once; one of a live request is waited for briefly, then answered with 429."""
        lease = self.ctx.config.registry.upload_lease_seconds
        token = uuid.uuid4().hex
        holder = node.holder(self.node)
        deadline = time.monotonic() + min(BUSY_WAIT_SECONDS, lease)
        dead: str | None = None
        delay = 0.02
        while True:
            expires = wp.now() + timedelta(seconds=lease)
            claimed = await self.ctx.writes.run(
                partial(
                    wp.claim_upload,
                    repo=repo,
                    upload_id=upload_id,
                    token=token,
                    holder=holder,
                    expires_at=expires,
                    dead_token=dead,
                )
            )
            if claimed is not None:
                claimed.row.lease_token = token
                return claimed.row
            found = await self._find(repo, upload_id)  # unknown: 404
            if node.holder_is_dead(found.holder, self.node) and found.row.lease_token:
                if dead != found.row.lease_token:
                    dead = found.row.lease_token
                    continue
            if time.monotonic() >= deadline:
                expires_at = found.row.lease_expires_at
                left = (expires_at - wp.now()).total_seconds() if expires_at else lease
                raise TooManyRequests(
                    "another request is writing to this upload; retry after it ends",
                    retry_after=math.ceil(min(max(left, 1.0), lease)),
                    detail={"upload": upload_id},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _open(self, repo: str, upload_id: str) -> _Session:
        if len(upload_id) > 64:
            raise UploadUnknown("upload unknown")
        row = await self._claim(repo, upload_id)
        token = row.lease_token or ""
        try:
            writer = await self.ctx.storage.resume_writer(row.id, row.storage_state)
        except PathNotFound:
            await self._drop_gone(row.id)
            raise  # unreachable: _drop_gone raises
        except (OSError, StorageError) as exc:
            await self._release(row.id, token)
            raise _storage_error(exc) from exc
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
        await self.ctx.writes.run(lambda tx: wp.release_lease(tx, upload_id, token))

    async def diagnostics(self) -> dict[str, object]:
        """For /readyz: open sessions against their caps, and how the writes batch."""
        cfg = self.ctx.config.registry
        counts = await self.ctx.writes.run(wp.session_counts)
        counts["max_per_user"] = cfg.max_upload_sessions_per_user
        counts["max_per_repository"] = cfg.max_upload_sessions_per_repository
        return {
            "upload_sessions": counts,
            "writes": {
                "transactions": self.ctx.writes.batches,
                "operations": self.ctx.writes.units,
            },
        }

    async def free_previous_incarnations(self) -> int:
        """At start: release the leases of this node's earlier incarnations (a crash or a
        kill left them; their requests are gone), so clients resume at once."""
        mine = node.incarnation()
        freed = await self.ctx.writes.run(lambda tx: wp.free_leases(tx, self.node, mine))
        if freed:
            log.info("released %d upload lease(s) left by an earlier run of this node", freed)
        return freed

    async def _append(
        self,
        s: _Session,
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
        keep_lease: bool = False,
    ) -> None:
        """Stream *body* into the session and save progress (also after a client abort).

        With *keep_lease* the request goes on holding the session (the final PUT, which must
        own it until the commit) and nothing is saved when the body was empty. A write that
        fails (a full disk) drops what this request wrote, back to the last saved offset."""
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
            await asyncio.shield(self._rewind_quietly(s, exc))
            raise _storage_error(exc) from exc
        except (RangeInvalid, TooLarge):
            await asyncio.shield(self._rewind_quietly(s))
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

    async def _rewind_quietly(self, s: _Session, exc: BaseException | None = None) -> None:
        """Drop this request's unsaved bytes (they would hold space until a purge)."""
        written = s.writer.size - s.row.size
        try:
            await s.writer.rewind(s.row.size)
        except Exception:  # noqa: BLE001 - a resume truncates them anyway
            return
        if exc is not None and is_full(exc):
            log.warning(
                "storage full: no space left writing upload %s; dropped this request's %d "
                "bytes, the session stays at %d bytes (free space: cancel stale uploads, "
                "delete images, run garbage collection)",
                s.row.id,
                max(written, 0),
                s.row.size,
            )

    async def _save(self, s: _Session, release: bool = True) -> None:
        await s.writer.flush()
        size, hash_state, state = s.writer.size, s.hasher.state(), s.writer.state()
        ok = await self.ctx.writes.run(
            lambda tx: wp.save_progress(tx, s.row.id, s.token, size, hash_state, state, release)
        )
        if not ok:
            if not await self.ctx.writes.run(lambda tx: wp.upload_row_exists(tx, s.row.id)):
                raise UploadUnknown("the upload was cancelled while this request wrote to it")
            raise _lost(s.row.id)
        s.row.size = size

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
            await self._discard(s.row.id)
            raise
        except BaseException:
            await asyncio.shield(self._release_quietly(s))
            raise

    async def _discard(self, upload_id: str) -> None:
        """End a session: its bytes first (that frees the space even when the database cannot
        be written, e.g. on a full disk), then its row. A crash in between leaves a row whose
        data is gone, which every request then answers as unknown (and drops)."""
        try:
            await self.ctx.storage.delete_upload(upload_id)
        except (OSError, StorageError) as exc:
            raise _storage_error(exc) from exc
        await self.ctx.writes.run(lambda tx: wp.delete_upload(tx, upload_id))

    async def cancel(self, repo: str, upload_id: str) -> None:
        """DELETE: always frees the bytes, also while another request holds the lease (its
        next save then fails) and on a full disk."""
        found = await self._find(repo, upload_id)
        await self._discard(found.row.id)

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
        except (OSError, StorageError) as exc:
            raise _storage_error(exc) from exc
        try:
            try:
                await _pump(body, writer, hasher, self._blob_limit)
            except (OSError, StorageError) as exc:
                raise _storage_error(exc) from exc
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
            raise _storage_error(exc) from exc
        # The bytes are durable at their path: now the rows (a group commit on SQLite).
        namespace = namespace_of(repo)
        repo_id = session.repository_id if session is not None else None
        session_id = session.id if session is not None else None
        review = datetime.now(UTC) + timedelta(seconds=self.ctx.config.gc.grace_seconds)

        def unit(checked: bool) -> wp.Unit[None]:
            return lambda tx: wp.commit_blob(
                tx, str(digest), size, repo, namespace, repo_id, session_id, review, checked
            )

        subscribed = self.ctx.events.wants(BlobCommitted)

        async def record(checked: bool) -> None:
            if not subscribed:
                await self.ctx.writes.run(unit(checked))
                return

            # BlobCommitted subscribers get the transaction's AsyncConnection: the same
            # statements (GC's tombstone and review queue included) on the async engine.
            async def once() -> None:
                async with self.ctx.write_engine.begin() as conn:
                    await unit(checked)(connection_tx(conn))
                    await self.ctx.events.publish(conn, BlobCommitted(repo, str(digest), size))

            await retry_conflicts(once, f"blob commit {digest}")

        try:
            await record(False)
        except wp.BytesMaybeCollected:
            # GC deleted this digest's bytes (its delete has committed): ours survived it only
            # if they were stored after. Once deleted, tombstoned bytes are never deleted again.
            stored = await self.ctx.storage.stat(path)
            if stored is None or stored.size != size:
                raise Unavailable(
                    f"blob {digest} was garbage-collected while it was uploaded; upload it again"
                ) from None
            await record(True)
