"""Repository settings, deletion and repository permissions."""

from __future__ import annotations

from typing import Any

from ...auth import admin
from ...auth.scopes import ADMIN, DELETE
from ...db import access_queries as aq
from ...db import catalog_queries as cq
from ...oci.names import valid_tag
from ..catalog import valid_digest
from ..errors import Invalid, ManifestUnknown, Missing
from ..events import RepositoryDeleted
from ..models import (
    Grant,
)
from .base import ALL_REGISTRY_SCOPES, AdminService, Caller, _text


class RepositoryAdmin(AdminService):
    # --- repositories -----------------------------------------------------------------------

    async def update_repository(
        self, c: Caller, repo: str, *, description: str | None, visibility: str | None
    ) -> None:
        await self._repo_action(c, repo, ADMIN)
        if visibility is not None:
            self._registry_scopes(c, "change visibility", *ALL_REGISTRY_SCOPES)
        changes: dict[str, Any] = {}
        async with self._tx() as conn:
            if await cq.repository(conn, repo) is None:
                raise Missing(f"no repository {repo}")
            if description is not None:
                changes["description"] = _text(description, "description")
                await cq.set_description(conn, repo, changes["description"])
            if visibility is not None:
                await admin.set_visibility_in(conn, repo, visibility)
                changes["visibility"] = visibility
        if changes:
            await self._audit(c, "repository.update", repository=repo, details=changes)

    async def delete_tag(self, c: Caller, repo: str, tag: str) -> None:
        if not valid_tag(tag):
            raise Invalid("tag", "invalid tag")
        await self._repo_action(c, repo, DELETE)
        await self._delete_reference(c, repo, tag)
        await self._audit(c, "tag.delete", repository=repo, tag=tag)

    async def delete_manifest(self, c: Caller, repo: str, digest: str) -> None:
        if not valid_digest(digest):
            raise Invalid("digest", "digest is <algorithm>:<hex>")
        await self._repo_action(c, repo, DELETE)
        await self._delete_reference(c, repo, digest)
        await self._audit(c, "manifest.delete", repository=repo, digest=digest)

    async def _delete_reference(self, c: Caller, repo: str, reference: str) -> None:
        try:
            await self.manifests.delete(repo, reference, self.requester(c, repo))
        except ManifestUnknown:
            raise Missing(f"no {reference} in {repo}") from None
        except Exception as exc:  # NameUnknown
            if getattr(exc, "code", "") == "NAME_UNKNOWN":
                raise Missing(f"no repository {repo}") from None
            raise

    async def delete_repository(self, c: Caller, repo: str) -> None:
        """The repository, its tags, manifests, links, uploads and direct permissions; its
        blobs become garbage for GC once no other repository links them."""
        await self._repo_action(c, repo, ADMIN)
        self._registry_scopes(c, "delete a repository", "registry:delete")
        async with self._tx() as conn:
            row = await cq.repository(conn, repo)
            if row is None:
                raise Missing(f"no repository {repo}")
            if self.ctx.events.wants(RepositoryDeleted):
                # Before the rows go: subscribers still see what the repository held.
                await self.ctx.events.publish(conn, RepositoryDeleted(repo, c.principal.name))
            await cq.delete_repository(conn, row.id)
        await self._audit(c, "repository.delete", repository=repo)

    async def repository_permissions(self, c: Caller, repo: str) -> list[Grant]:
        await self._repo_action(c, repo, ADMIN)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.repository_permissions(conn, repo)
        return [Grant(**r) for r in rows]

    async def set_repository_permission(
        self, c: Caller, repo: str, role: str | None, *, user: str | None, team: str | None
    ) -> None:
        """Grant (or with role None revoke) a role on a repository to a user or org/team."""
        await self._repo_action(c, repo, ADMIN)
        await self._set_grant(c, repo, role, user=user, team=team, repository=repo)
