"""Pull-through: reads of repositories that a capability serves from another registry.

A capability (moorage/mirror: cache organizations) sets ``ctx.pull_through`` to an object of
this shape. The /v2 handlers ask :meth:`PullThrough.covers` for each repository they read or
write; for a covered repository, manifest reads go through :meth:`manifest` (which serves local
content first and decides when to ask the upstream), a blob the repository does not hold goes
through :meth:`blob_size` / :meth:`blob`, and pushes are refused with :meth:`push_refusal`.

``covers`` is asked on the registry's hot paths: it must cost a dictionary lookup in the
common case.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from ..oci.digest import Digest
from .rules import Requester

if TYPE_CHECKING:
    from .manifests import Manifest


class PullThrough(Protocol):
    async def covers(self, repo: str) -> bool: ...

    async def route(self, repo: str, ns: str) -> str | None:
        """The repository that answers *repo* asked with ``?ns=<registry host>`` (containerd's
        mirror requests), or None to answer *repo* itself."""
        ...

    def push_refusal(self, repo: str) -> str:
        """The message a refused push into a covered repository carries (403 DENIED)."""
        ...

    async def manifest(
        self, repo: str, reference: str, accept: list[str], requester: Requester
    ) -> Manifest: ...

    async def blob_size(self, repo: str, digest: Digest) -> int:
        """The size of a blob the repository does not hold yet (a HEAD; nothing stored)."""
        ...

    async def blob(self, repo: str, digest: Digest) -> tuple[int | None, AsyncIterator[bytes]]:
        """(size if known, the bytes) of a blob the repository does not hold yet; the stream
        ends with an error instead of its last bytes when the content does not verify."""
        ...
