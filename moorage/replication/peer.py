"""What the copy engine needs of a registry: :class:`Registry`, a structural type.

:class:`~moorage.replication.client.RegistryClient` (any registry, over HTTP) and
:class:`~moorage.replication.local.LocalRegistry` (this Moorage, through its own services, for
the local side of a push or pull policy) both provide it, so one engine copies between any two.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .models import Manifest, ManifestInfo, PutResult, Referrers, Upload


class BlobReader(Protocol):
    """An open blob download: ``offset`` is where its bytes start."""

    offset: int

    def chunks(self) -> AsyncIterator[bytes]: ...


class Registry(Protocol):
    async def head_manifest(self, repo: str, ref: str) -> ManifestInfo | None: ...

    async def get_manifest(self, repo: str, ref: str) -> Manifest: ...

    async def put_manifest(
        self, repo: str, ref: str, data: bytes, media_type: str
    ) -> PutResult: ...

    async def delete_manifest(self, repo: str, ref: str) -> None: ...

    async def head_blob(self, repo: str, digest: str) -> int | None: ...

    def open_blob(
        self,
        repo: str,
        digest: str,
        *,
        offset: int = 0,
        size: int | None = None,
        verify: bool = True,
    ) -> AbstractAsyncContextManager[BlobReader]: ...

    async def start_upload(
        self, repo: str, mount: str | None = None, from_repo: str | None = None
    ) -> Upload | None: ...

    async def upload_status(self, upload: Upload) -> int | None: ...

    async def upload_chunk(
        self, upload: Upload, body: AsyncIterable[bytes], length: int
    ) -> None: ...

    async def finish_upload(
        self,
        upload: Upload,
        digest: str,
        body: AsyncIterable[bytes] | bytes | None = None,
        length: int = 0,
    ) -> None: ...

    async def cancel_upload(self, upload: Upload) -> None: ...

    async def tags(self, repo: str, page_size: int | None = None) -> list[str]: ...

    async def referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> Referrers: ...
