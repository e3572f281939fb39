"""The blob store interface.

In the spirit of CNCF Distribution's storage driver (registry/storage/driver): a small set of
operations that a local filesystem and an object store can both honour. Callers never append to or
rename a stored object; an in-progress upload goes through an :class:`UploadWriter`, which hides
how bytes accumulate (a file on disk; a multipart upload on S3) and how they are moved into their
content-addressed key once verified. The store holds bytes only: every piece of metadata lives in
the database, and nothing answers a query by listing the store.
"""

from __future__ import annotations

import asyncio
import errno
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


class StorageError(Exception):
    """The store failed (I/O error, unreachable service). Callers answer with a retryable 503."""


class StorageFull(StorageError):
    """No space left in the store (ENOSPC, EDQUOT): pushes fail until space is freed; pulls
    still work."""


def is_full(exc: BaseException) -> bool:
    """Whether *exc* says the store (or a quota on it) is full."""
    return isinstance(exc, StorageFull) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    )


class PathNotFound(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"not found: {path}")
        self.path = path


@dataclass(frozen=True, slots=True)
class StatInfo:
    path: str
    size: int


class UploadWriter(ABC):
    """Bytes of one upload session, written in order and committed once verified."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes durably accepted so far."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Append *data* (the writer's own business how)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serializable state that lets :meth:`StorageDriver.resume_writer` continue from
        what the last :meth:`flush` made durable (call it after flush)."""

    @abstractmethod
    async def flush(self) -> None:
        """End of a request: what was written must survive this process (a crash or a restart)
        so that any node can resume; the session stays open. Power-loss durability is only
        promised by :meth:`commit`."""

    @abstractmethod
    def read_back(self, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The bytes written so far (to rebuild a hash state that could not travel)."""

    @abstractmethod
    async def commit(self, final_path: str) -> None:
        """Place the content at *final_path* atomically; nothing partial is ever visible there."""

    @abstractmethod
    async def cancel(self) -> None:
        """Drop the upload's bytes."""

    async def rewind(self, size: int) -> None:  # noqa: B027 - a no-op where nothing is kept
        """Drop what was written after the durable offset *size* (a failed request's bytes),
        so that they do not hold space until the session is resumed or purged."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release local resources (file handles) without ending the session."""


class StorageDriver(ABC):
    name: str = "abstract"

    @abstractmethod
    def reader(
        self, path: str, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Stream bytes ``[offset, offset+length)``; raises :class:`PathNotFound`."""

    @abstractmethod
    async def get_bytes(self, path: str) -> bytes: ...

    @abstractmethod
    async def put_bytes(self, path: str, data: bytes) -> None:
        """Store a small object atomically."""

    @abstractmethod
    async def stat(self, path: str) -> StatInfo | None: ...

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Delete an object or everything under a prefix; missing paths are not an error."""

    async def delete_many(self, paths: Sequence[str], concurrency: int = 16) -> None:
        """Delete objects (never prefixes), *concurrency* at a time; missing ones are not an
        error. Drivers with a batch delete (S3 DeleteObjects) override this."""
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(path: str) -> None:
            async with sem:
                await self.delete_object(path)

        await asyncio.gather(*(one(p) for p in paths))

    async def delete_object(self, path: str) -> None:
        """Delete one object (not a prefix); missing is not an error."""
        await self.delete(path)

    @abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """Object paths under *prefix* (maintenance only, never on a request path)."""

    async def presigned_url(self, path: str, expires_in: int = 1200) -> str | None:
        """A URL a client may fetch directly, or None where the driver serves bytes itself."""
        return None

    @abstractmethod
    async def new_writer(self, upload_id: str) -> UploadWriter: ...

    @abstractmethod
    async def resume_writer(self, upload_id: str, state: dict[str, Any]) -> UploadWriter:
        """Reopen an upload session from the state its last request saved."""

    async def upload_exists(self, upload_id: str, state: dict[str, Any]) -> bool:
        """Whether the session's bytes up to *state* are still in the store (a session whose
        data is gone is unknown, whatever its row says). Reads only; safe while another
        request writes the session."""
        try:
            writer = await self.resume_writer(upload_id, state)
        except PathNotFound:
            return False
        await writer.close()
        return True

    async def delete_upload(self, upload_id: str) -> None:
        """Remove a session's bytes whatever state they are in (cancel: frees the space even
        when the session cannot be resumed, e.g. on a full disk)."""
        await self.delete(upload_prefix(upload_id))

    @abstractmethod
    async def cleanup_abandoned(self, older_than: timedelta) -> int:
        """Remove what upload sessions untouched for *older_than* left in the store (staging
        data; on S3 also unfinished multipart uploads); returns how many items went. The database
        rows of such sessions are the caller's business."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StorageError` when the store is not usable (readiness probe)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


def blob_path(algorithm: str, hex_: str) -> str:
    """Content-addressed key of a blob; *hex_* must come from a validated Digest."""
    return f"blobs/{algorithm}/{hex_[:2]}/{hex_}"


def upload_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}"
