"""Repository list, repository and image pages, and repository changes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from starlette.responses import Response
from starlette.routing import Route

from ..auth.scopes import ADMIN, DELETE
from ..services.errors import Invalid
from ..services.models import Page, RepositorySummary, TagInfo
from .pages import (
    PageGroup,
    Visit,
    done_key,
    path_op,
    permission_subject,
    quote_path,
)
from .web import (
    see_other,
)


class RepositoryPages(PageGroup):
    """Repositories, their tags and images."""

    nav = (("repositories", "/ui/repositories", "Repositories"),)
    done = {
        "tag-deleted": "Tag deleted.",
        "repo-saved": "Repository settings saved.",
        "repo-deleted": "Repository deleted.",
        "granted": "Permission granted.",
        "revoked": "Permission revoked.",
    }

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/ui/repositories", self.page(self.repositories, public=True), methods=get),
            Route(
                "/ui/repositories/{name:path}/tags/{tag}/delete",
                self.page(self.delete_tag),
                methods=post,
            ),
            Route(
                "/ui/repositories/{name:path}/settings", self.page(self.repo_settings), methods=post
            ),
            Route(
                "/ui/repositories/{name:path}/permissions/{op}",
                self.page(self.repo_permission),
                methods=post,
            ),
            Route("/ui/repositories/{name:path}/delete", self.page(self.delete_repo), methods=post),
            Route(
                "/ui/repositories/{name:path}/manifests/{digest}",
                self.page(self.image, public=True),
                methods=get,
            ),
            Route(
                "/ui/repositories/{name:path}", self.page(self.repository, public=True), methods=get
            ),
        ]

    async def repositories(self, visit: Visit) -> Response:
        qp = visit.request.query_params
        filters = {
            "q": qp.get("q", "").strip()[:255],
            "namespace": qp.get("namespace", "").strip()[:255],
            "visibility": qp.get("visibility", ""),
        }
        if filters["visibility"] not in ("public", "private"):
            filters["visibility"] = ""
        cursor = qp.get("after") or None
        try:
            page = await self.catalog.list_repositories(
                visit.principal,
                query=filters["q"] or None,
                namespace=filters["namespace"] or None,
                visibility=filters["visibility"] or None,
                cursor=cursor,
                limit=50,
            )
            error = ""
        except Invalid as exc:
            page, error = Page[RepositorySummary](items=[], next_cursor=None), str(exc)
        return self.render(
            visit,
            "repositories.html",
            section="repositories",
            repositories=page.items,
            next_after=page.next_cursor,
            first_page=cursor is None,
            filters=filters,
            error=error,
            host=self.host(visit.request),
        )

    async def repository(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        p = visit.principal
        repo = await self._service(self.catalog.repository(p, name))
        cursor = visit.request.query_params.get("after") or None
        tags = await self._service(self.catalog.tags(p, name, cursor=cursor, limit=100))
        can_admin = ADMIN in repo.permissions
        permissions = (
            await self.management.repository_permissions(visit.caller, name) if can_admin else []
        )
        names = [t.name for t in tags.items]
        digests = [t.digest for t in tags.items]
        columns = [c for g in self.ui.groups for c in await g.tag_columns(visit, name, digests)]
        return self.render(
            visit,
            "repository.html",
            section="repositories",
            repo=repo,
            size=repo.size,
            tags=[_tag_view(t) for t in tags.items],
            next_tag=tags.next_cursor,
            pull_tag="latest" if "latest" in names or not names else names[0],
            can_admin=can_admin,
            can_delete=DELETE in repo.permissions,
            grants=permissions,
            host=self.host(visit.request),
            columns=columns,
        )

    async def image(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        digest = visit.request.path_params["digest"]
        img = await self._service(self.catalog.image(visit.principal, name, digest))
        parent = visit.request.query_params.get("index", "")
        artifact = img.artifact_kind not in ("image", "index")  # oci/artifacts.py classify
        kind = img.artifact_label
        if img.config and img.config.os and not artifact:
            kind += " for " + "/".join(
                x for x in (img.config.os, img.config.architecture, img.config.variant) if x
            )
        return self.render(
            visit,
            "image.html",
            section="repositories",
            repo=name,
            m=img,
            artifact_type=img.artifact_type if artifact else None,
            helm=img.helm,
            kind_label=kind,
            total_size=img.size,
            children=img.manifests,
            layers=img.layers,
            config=img.config,
            history=img.config.history if img.config else [],
            referrers=img.referrers,
            parent=parent if _DIGEST.match(parent) else "",
            host=self.host(visit.request),
            panels=[p for g in self.ui.groups for p in await g.image_panels(visit, name, img.digest)],
        )

    # --- repository changes -----------------------------------------------------------------

    async def delete_tag(self, visit: Visit) -> Response:
        name, tag = visit.request.path_params["name"], visit.request.path_params["tag"]
        await self._change(self.management.delete_tag(visit.caller, name, tag))
        return see_other(f"/ui/repositories/{quote_path(name)}?done=tag-deleted")

    async def repo_settings(self, visit: Visit) -> Response:
        name, f = visit.request.path_params["name"], visit.form
        await self._change(
            self.management.update_repository(
                visit.caller,
                name,
                description=f.get("description", "").replace("\r\n", "\n"),
                visibility=f.get("visibility") or None,
            )
        )
        return see_other(f"/ui/repositories/{quote_path(name)}?done=repo-saved")

    async def repo_permission(self, visit: Visit) -> Response:
        name, op = visit.request.path_params["name"], path_op(visit, "grant", "revoke")
        user, team = permission_subject(visit.form)
        role = visit.form.get("role", "") if op == "grant" else None
        await self._change(
            self.management.set_repository_permission(
                visit.caller, name, role, user=user, team=team
            )
        )
        return see_other(f"/ui/repositories/{quote_path(name)}?done={done_key(op)}")

    async def delete_repo(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        await self._change(self.management.delete_repository(visit.caller, name))
        return see_other("/ui/repositories?done=repo-deleted")


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def _namespace_link(namespace: str) -> str | None:
    if namespace.startswith("("):  # "(top level)": repositories without a namespace
        return None
    return "/ui/repositories?" + urlencode({"namespace": namespace})


@dataclass(frozen=True)
class TagView:
    name: str
    digest: str
    kind: str
    platforms: list[str]
    size: int
    pushed_at: datetime
    detail: str = ""  # a Helm chart's name, version and appVersion


def _tag_view(t: TagInfo) -> TagView:
    kind = t.artifact_kind if t.artifact_kind in ("image", "index") else t.artifact_label
    detail = ""
    if t.helm is not None:
        detail = f"{t.helm.name} {t.helm.version}"
        if t.helm.app_version:
            detail += f" (app {t.helm.app_version})"
    return TagView(t.name, t.digest, kind, t.platforms, t.size, t.pushed_at, detail)
