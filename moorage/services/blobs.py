"""Blob reads, links and cross-repository mounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..db import queries as q
from ..oci.digest import Digest
from ..oci.names import namespace_of
from ..storage.base import PathNotFound, StorageError, blob_path
from .context import ServiceContext
from .errors import BlobUnknown, Unavailable
from .events import BlobCommitted

# Read size of a blob response. Each stream holds about two of these (one in the socket's send
# queue, one being read): 1 MiB made a hundred parallel pulls of one worker peak at ~550 MiB;
# 128 KiB keeps them near 200 MiB at the same throughput (docs/benchmarks.md).
STREAM_CHUNK = 128 << 10


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int
    # Manifests are also readable through the blobs endpoint (Distribution stores them as blobs).
    inline: bytes | None = None


class BlobService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def stat(self, repo: str, digest: Digest) -> BlobInfo:
        row = await self.ctx.hot.blob_in_repository(repo, str(digest))
        if row is not None:
            return BlobInfo(digest, row.size)
        manifest = await self.ctx.hot.manifest_by_digest(repo, str(digest))
        if manifest is not None:
            return BlobInfo(digest, len(manifest.payload), manifest.payload)
        raise BlobUnknown(f"blob {digest} is not in repository {repo}")

    async def open(
        self, info: BlobInfo, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the bytes; the first chunk is read before returning, so a missing or
        unreadable object fails here (with a proper error), not halfway through a response."""
        if info.inline is not None:
            end = len(info.inline) if length is None else offset + length

            async def inline() -> AsyncIterator[bytes]:
                yield info.inline[offset:end]  # type: ignore[index]

            return inline()
        stream = self.ctx.storage.reader(
            blob_path(info.digest.algorithm, info.digest.hex), offset, length, STREAM_CHUNK
        )
        try:
            first = await anext(stream, b"")
        except PathNotFound:
            raise BlobUnknown(f"blob {info.digest} is missing from storage") from None
        except StorageError as exc:
            raise Unavailable(f"storage error: {exc}") from exc

        async def chained() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                async for chunk in stream:
                    yield chunk
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        return chained()

    async def presigned_url(self, digest: Digest) -> str | None:
        return await self.ctx.storage.presigned_url(blob_path(digest.algorithm, digest.hex))

    async def delete(self, repo: str, digest: Digest) -> None:
        """Unlink the blob from *repo*; the bytes stay until garbage collection."""
        async with self.ctx.write_engine.begin() as conn:
            repo_id = await q.repository_id(conn, repo)
            row = await q.blob_in_repository(conn, repo, str(digest))
            if repo_id is None or row is None:
                raise BlobUnknown(f"blob {digest} is not in repository {repo}")
            await q.unlink_blob(conn, repo_id, row.id)

    async def mount(self, repo: str, digest: Digest, source: str) -> bool:
        """Link a blob of *source* into *repo*; False when *source* does not hold it.

        The caller has already checked that the requester may read *source*.
        """
        async with self.ctx.write_engine.begin() as conn:
            row = await q.blob_in_repository(conn, source, str(digest))
            if row is None:
                return False
            repo_id = await q.ensure_repository(conn, repo, namespace_of(repo))
            await q.link_blob(conn, repo_id, row.id)
            if self.ctx.events.wants(BlobCommitted):
                await self.ctx.events.publish(conn, BlobCommitted(repo, str(digest), row.size))
        return True
