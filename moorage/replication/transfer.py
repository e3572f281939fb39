"""Copy one blob from a source registry to a destination registry, streamed and resumable.

The order of operations is the one that moves the fewest bytes:

1. ``HEAD`` the blob on the destination: present → nothing to do.
2. Cross-repository mount from a repository of the destination that the caller knows holds the
   blob (``POST ?mount=&from=``): accepted → nothing to move; refused → the answer is an upload
   session, which we use.
3. Upload, streaming the source's ``GET`` straight into the destination: blobs up to
   ``monolithic_max`` in the closing ``PUT``; bigger ones in ``PATCH`` chunks with
   ``Content-Range``, the rest in the closing ``PUT``.

The digest is computed while the bytes flow and checked *before the last byte is sent*: content
that does not match never completes an upload. When a request breaks (connection cut, 5xx, a
timeout), we ask the destination where the session stands (``GET`` on the upload location, its
``Range``) and go on from there; the hash state at that offset comes from a checkpoint taken every
``checkpoint_every`` bytes (the source is re-read with a ``Range`` request from the checkpoint,
hashing without sending, up to the destination's offset). A destination that dropped the session
(CNCF Distribution cancels a session whose ``PATCH`` broke mid-body) gets a new one from offset 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

from ..oci.digest import Digest
from .bounds import MiB
from .errors import (
    DigestMismatch,
    PeerProtocolError,
    PeerUnavailable,
    RegistryError,
    ReplicationError,
    Unauthorized,
)
from .models import Upload
from .peer import BlobReader, Registry


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """``chunk_size``: bytes per ``PATCH`` for blobs over ``monolithic_max``; ``attempts``: how
    often one blob is tried (each retry resumes where the destination stands), with backoff."""

    chunk_size: int = 64 * MiB
    monolithic_max: int = 32 * MiB
    checkpoint_every: int = 8 * MiB
    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        base: float = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)


@dataclass(slots=True)
class BlobOutcome:
    """How a blob reached the destination. ``bytes_sent`` counts every byte sent, resends too;
    ``resumes``: recoveries that continued the session at the destination's offset;
    ``restarts``: recoveries that needed a new session from offset 0."""

    digest: str
    size: int
    how: Literal["exists", "mounted", "uploaded"]
    bytes_sent: int = 0
    resumes: int = 0
    restarts: int = 0


OnBytes = Callable[[int], None]
OnUpload = Callable[[Upload], None]
_SEND_PIECE = 1024 * 1024


class _Source:
    """The source blob as a positioned, hashed byte stream that can be reopened at an offset."""

    def __init__(
        self,
        client: Registry,
        repo: str,
        digest: Digest,
        size: int,
        checkpoint_every: int,
        on_bytes: OnBytes | None,
    ) -> None:
        self.client, self.repo, self.digest, self.size = client, repo, digest, size
        self.every = max(checkpoint_every, 1)
        self.on_bytes = on_bytes
        self.pos = 0
        self.hasher: Any = hashlib.new(digest.algorithm)
        self.checkpoints: list[tuple[int, Any]] = []  # (offset, hasher copy), ascending
        self.sent = 0
        self._stack: AsyncExitStack | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._pending = b""

    async def close(self) -> None:
        import httpx

        if self._chunks is not None and self.pos == self.size and not self._pending:
            # Read to the end of the response (nothing is left but its end), so that the
            # connection goes back to the pool instead of being closed.
            with contextlib.suppress(ReplicationError, httpx.HTTPError):
                async for _ in self._chunks:
                    break
        self._chunks = None
        self._pending = b""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def _checkpoint(self) -> None:
        if (
            self.pos // self.every
            > (self.checkpoints[-1][0] if self.checkpoints else 0) // self.every
        ):
            self.checkpoints.append((self.pos, self.hasher.copy()))

    def prune(self, acknowledged: int) -> None:
        """Drop checkpoints the destination can no longer ask for (all but the last one at or
        below its acknowledged offset)."""
        keep = [i for i, (off, _) in enumerate(self.checkpoints) if off <= acknowledged]
        if len(keep) > 1:
            del self.checkpoints[: keep[-1]]

    async def seek(self, offset: int) -> None:
        """Position the stream at *offset* with the hash state of the bytes before it."""
        if self._chunks is not None and self.pos == offset:
            return
        await self.close()
        if offset == 0 or offset > self.size:
            start, hasher = 0, hashlib.new(self.digest.algorithm)
        else:
            start, hasher = 0, None
            for off, saved in self.checkpoints:
                if off <= offset:
                    start, hasher = off, saved
            hasher = hasher.copy() if hasher is not None else hashlib.new(self.digest.algorithm)
        self.checkpoints = [(o, h) for o, h in self.checkpoints if o <= start]
        stack = AsyncExitStack()
        try:
            stream: BlobReader = await stack.enter_async_context(
                self.client.open_blob(
                    self.repo, str(self.digest), offset=start, size=self.size, verify=False
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        if stream.offset != start:  # the peer ignored the range: hash from the beginning
            start, hasher = 0, hashlib.new(self.digest.algorithm)
            self.checkpoints = []
        self._chunks = stream.chunks()
        self.pos, self.hasher = start, hasher
        skip = offset - start
        while skip > 0:
            chunk = await self._next(skip)
            skip -= len(chunk)

    async def _next(self, limit: int) -> bytes:
        """The next piece of at most *limit* bytes, hashed and counted into ``pos``."""
        if not self._pending:
            assert self._chunks is not None
            try:
                self._pending = await self._chunks.__anext__()
            except StopAsyncIteration:
                raise PeerUnavailable(
                    f"source blob {self.digest} ended at {self.pos} of {self.size} bytes"
                ) from None
        piece, self._pending = self._pending[:limit], self._pending[limit:]
        self.hasher.update(piece)
        self.pos += len(piece)
        self._checkpoint()
        return piece

    async def read(self, n: int) -> AsyncIterator[bytes]:
        """Yield exactly the next *n* bytes. Before the blob's last byte leaves, the digest is
        checked: a mismatch raises instead, so the upload it feeds can never complete."""
        end = self.pos + n
        if end > self.size:
            raise ValueError("read past the end of the blob")
        if n == 0 and end == self.size:
            self._verify()
        while self.pos < end:
            # Network reads arrive in pieces of up to 64 KiB; send in pieces of ~1 MiB: fewer
            # system calls and fewer trips through the HTTP stack for the same bytes.
            pieces = [await self._next(end - self.pos)]
            size = len(pieces[0])
            while size < _SEND_PIECE and self.pos < end:
                pieces.append(await self._next(min(end - self.pos, _SEND_PIECE - size)))
                size += len(pieces[-1])
            if self.pos == self.size:
                self._verify()
            self.sent += size
            if self.on_bytes is not None:
                self.on_bytes(size)
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _verify(self) -> None:
        actual = self.hasher.hexdigest()
        if actual != self.digest.hex:
            raise DigestMismatch(
                f"source blob {self.digest} has digest {self.digest.algorithm}:{actual}"
            )


def _retryable(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, Unauthorized):
        # A 401 in the middle of an upload is a token that expired while the bytes flowed: the
        # next request fetches a fresh one. A 403 is a refusal.
        return exc.status == 401
    if isinstance(exc, DigestMismatch | PeerProtocolError):
        return False
    if isinstance(exc, RegistryError):
        # 4xx answers to chunk requests (416 RANGE_INVALID, 400 BLOB_UPLOAD_INVALID, 404) mean
        # "the session is not where you think": ask for its state and go on.
        return exc.status in (400, 404, 408, 416, 429) or exc.status >= 500
    return isinstance(exc, ReplicationError | httpx.HTTPError | OSError)


async def copy_blob(
    src: Registry,
    src_repo: str,
    dst: Registry,
    dst_repo: str,
    digest: str,
    size: int,
    *,
    mount_from: Sequence[str] = (),
    check_exists: bool = True,
    options: TransferOptions | None = None,
    on_bytes: OnBytes | None = None,
    resume_location: str | None = None,
    on_upload: OnUpload | None = None,
) -> BlobOutcome:
    """Make the destination repository hold the blob *digest* (of *size* bytes, from its
    descriptor). ``mount_from``: destination repositories known to hold it (the first one that
    is not *dst_repo* is tried). ``resume_location``: an upload session a previous attempt
    (maybe on another node) left open: asked where it stands and continued. ``on_upload`` is
    told of the session and of each acknowledged offset (what a checkpoint records). Raises a
    :class:`ReplicationError` when every attempt failed."""
    import httpx

    opts = options or TransferOptions()
    d = Digest.parse(digest)
    if size < 0:
        raise PeerProtocolError(f"blob {d} has a negative size")
    if check_exists:
        have = await dst.head_blob(dst_repo, str(d))
        if have is not None:
            return BlobOutcome(str(d), size, "exists")
    upload: Upload | None = None
    if resume_location is not None:
        upload = Upload(dst_repo, httpx.URL(resume_location), 0)
        return await _upload(
            src, src_repo, dst, dst_repo, d, size, upload, opts, on_bytes, on_upload, True
        )
    candidate = next((r for r in mount_from if r != dst_repo), None)
    if candidate is not None:
        upload = await dst.start_upload(dst_repo, mount=str(d), from_repo=candidate)
        if upload is None:
            return BlobOutcome(str(d), size, "mounted")
    return await _upload(src, src_repo, dst, dst_repo, d, size, upload, opts, on_bytes, on_upload)


async def _upload(
    src: Registry,
    src_repo: str,
    dst: Registry,
    dst_repo: str,
    d: Digest,
    size: int,
    upload: Upload | None,
    opts: TransferOptions,
    on_bytes: OnBytes | None,
    on_upload: OnUpload | None = None,
    resumed: bool = False,
) -> BlobOutcome:
    import httpx

    outcome = BlobOutcome(str(d), size, "uploaded")
    source = _Source(src, src_repo, d, size, opts.checkpoint_every, on_bytes)
    attempt = 0
    # The last attempt failed (or a previous run left the session): ask the destination where
    # the session stands.
    broken = resumed
    try:
        while True:
            try:
                if upload is not None and broken:
                    offset = await dst.upload_status(upload)
                    if offset is None or offset > size:
                        # The session is gone; maybe because the closing PUT did succeed.
                        if await dst.head_blob(dst_repo, str(d)) == size:
                            return outcome
                        upload = None
                        outcome.restarts += 1
                    else:
                        outcome.resumes += 1
                broken = False
                if upload is None:
                    upload = await dst.start_upload(dst_repo)
                    assert upload is not None
                if on_upload is not None:
                    on_upload(upload)
                await _send(dst, upload, source, str(d), size, opts, on_upload)
                outcome.bytes_sent = source.sent
                return outcome
            except (ReplicationError, httpx.HTTPError, OSError) as exc:
                attempt += 1
                if not _retryable(exc) or attempt >= opts.attempts:
                    outcome.bytes_sent = source.sent
                    if upload is not None:
                        await dst.cancel_upload(upload)
                    if isinstance(exc, ReplicationError):
                        raise
                    raise PeerUnavailable(f"blob {d}: {exc!r}") from exc
                await source.close()
                broken = True
                await asyncio.sleep(opts.delay(attempt - 1))
    finally:
        await source.close()


async def _send(
    dst: Registry,
    upload: Upload,
    source: _Source,
    digest: str,
    size: int,
    opts: TransferOptions,
    on_upload: OnUpload | None = None,
) -> None:
    """Send the bytes from the session's acknowledged offset to the end, then close it."""
    while True:
        await source.seek(upload.offset)
        remaining = size - upload.offset
        if remaining <= opts.monolithic_max:
            await dst.finish_upload(upload, digest, source.read(remaining), remaining)
            return
        n = min(opts.chunk_size, remaining)
        start = upload.offset
        await dst.upload_chunk(upload, source.read(n), n)
        if upload.offset != start + n:
            # The destination kept a different amount than we sent: re-read from its offset.
            await source.close()
        source.prune(upload.offset)
        if on_upload is not None:
            on_upload(upload)
