"""This Moorage as one side of a copy: the :class:`~moorage.replication.peer.Registry` the copy
engine reads from in a push policy and writes into in a pull policy.

It goes through the registry's own services (no HTTP to itself, no credentials): manifests are
stored by :class:`~moorage.services.manifests.ManifestService` with a replication requester, so
content rules and domain events apply as to any push (and the requester's name, ``replication:
<policy>``, is the origin marker that keeps event triggers from sending a copy back); blobs go
through :class:`~moorage.services.uploads.UploadService` sessions (verified, resumable by any
node), mounts through :class:`~moorage.services.blobs.BlobService`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..db import queries as q
from ..oci.digest import Digest, InvalidDigest
from ..oci.manifest import ManifestError, parse_descriptor
from ..registry.errors import STATUS
from ..services.blobs import BlobService
from ..services.context import ServiceContext
from ..services.errors import (
    NameUnknown,
    ServiceError,
    Unavailable,
    UploadUnknown,
)
from ..services.manifests import ManifestService
from ..services.rules import Requester
from ..services.uploads import ContentRange, UploadService
from .errors import DigestMismatch, NotFound, PeerUnavailable, RegistryError, Unauthorized
from .models import Manifest, ManifestInfo, PutResult, Referrers, Upload

_SCHEME = "local:"
_PAGE = 1000


def _error(exc: ServiceError, what: str) -> Exception:
    """A service refusal as the copy engine knows peer errors (status, code, transient)."""
    status = STATUS.get(exc.code, 400)
    message = f"{what}: {exc.message}"
    if isinstance(exc, Unavailable):
        return PeerUnavailable(message)
    if status == 404:
        return NotFound(404, message, exc.code)
    if status in (401, 403):
        return Unauthorized(status, message, exc.code)
    return RegistryError(status, message, exc.code)


@dataclass
class _Stream:
    offset: int
    _chunks: AsyncIterator[bytes]
    _digest: Digest | None

    async def chunks(self) -> AsyncIterator[bytes]:
        hasher = hashlib.new(self._digest.algorithm) if self._digest is not None else None
        async for chunk in self._chunks:
            if hasher is not None:
                hasher.update(chunk)
            yield chunk
        if hasher is not None and self._digest is not None and hasher.hexdigest() != self._digest.hex:
            raise DigestMismatch(f"stored blob {self._digest} does not match its digest")


async def _iterate(body: AsyncIterable[bytes] | bytes | None) -> AsyncIterator[bytes]:
    if body is None:
        return
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        yield chunk


class LocalRegistry:
    """This registry's repositories, read and written by a replication execution."""

    def __init__(self, ctx: ServiceContext, requester: Requester) -> None:
        self.ctx = ctx
        self.requester = requester
        self.manifests = ManifestService(ctx)
        self.blobs = BlobService(ctx)
        self.uploads = UploadService(ctx)

    def __repr__(self) -> str:
        return f"LocalRegistry({self.requester.name!r})"

    # --- manifests ------------------------------------------------------------------------

    async def _row(self, repo: str, ref: str) -> Any:
        hot = self.ctx.hot
        if ":" in ref:
            return await hot.manifest_by_digest(repo, ref)
        return await hot.manifest_by_tag(repo, ref)

    async def head_manifest(self, repo: str, ref: str) -> ManifestInfo | None:
        row = await self._row(repo, ref)
        if row is None:
            return None
        return ManifestInfo(row.digest, row.media_type, len(row.payload))

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        row = await self._row(repo, ref)
        if row is None:
            raise NotFound(404, f"manifest {repo}:{ref} is not here", "MANIFEST_UNKNOWN")
        return Manifest(bytes(row.payload), row.media_type, row.digest)

    async def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> PutResult:
        try:
            put = await self.manifests.put(repo, ref, data, media_type, self.requester)
        except ServiceError as exc:
            raise _error(exc, f"store manifest {repo}:{ref}") from None
        # Moorage indexes referrers itself (OCI 1.1 referrers API): no referrers tag needed.
        return PutResult(put.digest, True)

    async def delete_manifest(self, repo: str, ref: str) -> None:
        try:
            await self.manifests.delete(repo, ref, self.requester)
        except ServiceError as exc:
            raise _error(exc, f"delete {repo}:{ref}") from None

    async def tags(self, repo: str, page_size: int | None = None) -> list[str]:
        out: list[str] = []
        last: str | None = None
        while True:
            try:
                page = await self.manifests.tags(repo, last, _PAGE)
            except NameUnknown:
                raise NotFound(404, f"repository {repo} is not here", "NAME_UNKNOWN") from None
            out += page
            if len(page) < _PAGE:
                return out
            last = page[-1]

    async def catalog(self) -> list[str]:
        out: list[str] = []
        last: str | None = None
        while True:
            async with self.ctx.engine.connect() as conn:
                page = await q.catalog(conn, last, _PAGE)
            out += page
            if len(page) < _PAGE:
                return out
            last = page[-1]

    async def referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> Referrers:
        try:
            found = await self.manifests.referrers(repo, Digest.parse(digest), artifact_type)
        except NameUnknown:
            return Referrers([], "api")
        try:
            return Referrers(
                [parse_descriptor(d, f"referrer {i}") for i, d in enumerate(found)], "api"
            )
        except ManifestError as exc:  # what we stored ourselves: should not happen
            raise RegistryError(500, f"referrers of {digest}: {exc}") from None

    # --- blobs ----------------------------------------------------------------------------

    async def head_blob(self, repo: str, digest: str) -> int | None:
        row = await self.ctx.hot.blob_in_repository(repo, digest)
        return None if row is None else int(row.size)

    @contextlib.asynccontextmanager
    async def open_blob(
        self,
        repo: str,
        digest: str,
        *,
        offset: int = 0,
        size: int | None = None,
        verify: bool = True,
    ) -> AsyncIterator[_Stream]:
        try:
            d = Digest.parse(digest)
            info = await self.blobs.stat(repo, d)
            chunks = await self.blobs.open(info, offset)
        except InvalidDigest as exc:
            raise RegistryError(400, f"blob {digest}: {exc}") from None
        except ServiceError as exc:
            raise _error(exc, f"read blob {repo}@{digest}") from None
        try:
            yield _Stream(offset, chunks, d if verify and offset == 0 else None)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    # --- uploads --------------------------------------------------------------------------

    @staticmethod
    def _id(upload: Upload) -> str:
        location = str(upload.location)
        if not location.startswith(_SCHEME):
            raise RegistryError(400, f"upload {location[:80]!r} is not a local session")
        return location[len(_SCHEME) :]

    async def start_upload(
        self, repo: str, mount: str | None = None, from_repo: str | None = None
    ) -> Upload | None:
        import httpx

        try:
            if mount is not None and from_repo is not None:
                if await self.blobs.mount(repo, Digest.parse(mount), from_repo):
                    return None
            status = await self.uploads.start(repo)
        except ServiceError as exc:
            raise _error(exc, f"start upload to {repo}") from None
        return Upload(repo, httpx.URL(_SCHEME + status.id), 0)

    async def upload_status(self, upload: Upload) -> int | None:
        try:
            status = await self.uploads.status(upload.repo, self._id(upload))
        except UploadUnknown:
            return None
        except ServiceError as exc:
            raise _error(exc, "upload status") from None
        upload.offset = status.size
        return status.size

    async def upload_chunk(self, upload: Upload, body: AsyncIterable[bytes], length: int) -> None:
        start = upload.offset
        try:
            status = await self.uploads.append(
                upload.repo,
                self._id(upload),
                _iterate(body),
                ContentRange(start, start + length - 1),
            )
        except ServiceError as exc:
            raise _error(exc, "upload chunk") from None
        upload.offset = status.size

    async def finish_upload(
        self,
        upload: Upload,
        digest: str,
        body: AsyncIterable[bytes] | bytes | None = None,
        length: int = 0,
    ) -> None:
        start = upload.offset
        try:
            await self.uploads.finish(
                upload.repo,
                self._id(upload),
                Digest.parse(digest),
                _iterate(body),
                ContentRange(start, start + length - 1) if length else None,
            )
        except ServiceError as exc:
            raise _error(exc, f"finish upload of {digest}") from None
        upload.offset += length

    async def cancel_upload(self, upload: Upload) -> None:
        with contextlib.suppress(ServiceError, RegistryError):
            await self.uploads.cancel(upload.repo, self._id(upload))
