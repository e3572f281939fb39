"""Read models for the REST API and the web UI: repositories, tags, images, statistics.

Every read is filtered by what the caller may pull (AccessService: the registry's rules). As on
/v2, a refusal (Denied) comes before the existence check, so it does not reveal private names.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from .. import __version__
from ..auth.scopes import PULL
from ..auth.service import AccessService, Principal
from ..db import catalog_queries as cq
from ..db import queries as q
from ..oci import mediatypes as mt
from ..oci.artifacts import (
    HELM_CONFIG,
    ArtifactError,
    ArtifactKind,
    classify_types,
    helm_chart_from,
)
from ..oci.digest import Digest
from ..oci.names import valid_name, valid_tag
from ..storage.base import blob_path
from .context import ServiceContext
from .errors import Denied, Invalid, Missing
from .models import (
    Dashboard,
    DayActivity,
    HelmChartInfo,
    HistoryEntry,
    ImageConfig,
    ImageDetail,
    Layer,
    NamespaceStorage,
    Page,
    PlatformManifest,
    Referrer,
    RepositoryDetail,
    RepositorySize,
    RepositorySummary,
    SystemInfo,
    TagInfo,
)

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_CONFIG_SIZE = 1 << 20  # image configs read for details (larger ones are not parsed)


# --- pagination: opaque cursors over a sort key -------------------------------------------------


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None or cursor == "":
        return None
    try:
        if len(cursor) > 1024:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        # A forged cursor is only a sort key to start after: harmless once made storable.
        return raw.decode("utf-8", "replace").replace("\x00", "")
    except (binascii.Error, ValueError):
        raise Invalid("cursor", "cursor is not one this server issued") from None


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("limit", f"limit is 1 to {MAX_LIMIT}")
    return limit


def page_of(items: list[Any], keys: list[str], limit: int) -> tuple[list[Any], str | None]:
    """Given up to limit+1 items and their sort keys: the page and the next cursor."""
    if len(items) > limit:
        return items[:limit], encode_cursor(keys[limit - 1])
    return items, None


# --- manifest helpers (pure) ------------------------------------------------------------------


def _json(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _str_map(value: Any) -> dict[str, str] | None:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}
    return None


def platform_name(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    os_, arch = _str(value.get("os")), _str(value.get("architecture"))
    if not os_ or not arch:
        return None
    variant = _str(value.get("variant"))
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def descriptors(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc.get(key)
    return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []


def image_size(payload: bytes) -> int:
    """Manifest + config + layers of an image manifest."""
    doc = _json(payload)
    config = doc.get("config")
    total = len(payload) + (_int(config.get("size")) if isinstance(config, dict) else 0)
    return total + sum(_int(d.get("size")) for d in descriptors(doc, "layers"))


class CatalogService:
    def __init__(self, ctx: ServiceContext, access: AccessService) -> None:
        self.ctx = ctx
        self.access = access
        self._configs: OrderedDict[str, dict[str, Any]] = OrderedDict()  # immutable by digest

    # --- authorization ----------------------------------------------------------------------

    async def readable(self, p: Principal, name: str) -> frozenset[str]:
        """The caller's actions on a repository they may pull; Denied otherwise."""
        if not valid_name(name):
            raise Invalid("repository", f"invalid repository name {name[:300]!r}")
        actions = await self.access.allowed_actions(p, name)
        if PULL not in actions:
            # As on /v2: refused before existence is checked, so a refusal reveals nothing.
            raise Denied(f"pulling from {name} is not allowed")
        return actions

    async def _repo(self, p: Principal, name: str) -> tuple[cq.RepositoryRow, frozenset[str]]:
        actions = await self.readable(p, name)
        async with self.ctx.engine.connect() as conn:
            row = await cq.repository(conn, name)
        if row is None:
            raise Missing(f"no repository {name}")
        return row, actions

    # --- repositories -----------------------------------------------------------------------

    async def list_repositories(
        self,
        p: Principal,
        *,
        query: str | None = None,
        namespace: str | None = None,
        visibility: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[RepositorySummary]:
        n = check_limit(limit)
        if query is not None and len(query) > 255:
            raise Invalid("q", "q is at most 255 characters")
        if visibility not in (None, "public", "private"):
            raise Invalid("visibility", "visibility is public or private")
        if namespace is not None and (len(namespace) > 255 or "/" in namespace):
            raise Invalid("namespace", "namespace is one name component")
        scope = await self.access.read_scope(p)
        async with self.ctx.engine.connect() as conn:
            rows = await cq.list_repositories(
                conn,
                scope,
                query=query or None,
                namespace=namespace,
                visibility=visibility,
                after=decode_cursor(cursor),
                limit=n + 1,
            )
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[RepositorySummary](items=[_summary(r) for r in items], next_cursor=nxt)

    async def repository(self, p: Principal, name: str) -> RepositoryDetail:
        row, actions = await self._repo(p, name)
        async with self.ctx.engine.connect() as conn:
            size = await cq.repository_size(conn, row.id)
        return RepositoryDetail(
            **_summary(row).model_dump(),
            size=size,
            permissions=sorted(actions),
        )

    async def tags(
        self, p: Principal, name: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[TagInfo]:
        n = check_limit(limit)
        row, _ = await self._repo(p, name)
        async with self.ctx.engine.connect() as conn:
            rows = await cq.list_tags(conn, row.id, decode_cursor(cursor), n + 1)
            page, nxt = page_of(rows, [t.name for t in rows], n)
            children = await self._children(
                conn, row.id, [t.payload for t in page if _is_index(t.media_type)]
            )
        items = []
        for t in page:
            platforms, size = await self._platforms_and_size(t.media_type, t.payload, children)
            kind, helm = await self._kind(t.media_type, _json(t.payload))
            items.append(
                TagInfo(
                    name=t.name,
                    digest=t.digest,
                    media_type=t.media_type,
                    artifact_type=t.artifact_type,
                    artifact_kind=kind.kind,
                    artifact_label=kind.label,
                    helm=helm,
                    platforms=platforms,
                    size=size,
                    created_at=t.created_at,
                    pushed_at=t.updated_at,
                )
            )
        return Page[TagInfo](items=items, next_cursor=nxt)

    @staticmethod
    async def _children(
        conn: Any, repository_id: int, index_payloads: list[bytes]
    ) -> dict[str, cq.ManifestDetailRow]:
        digests = {
            str(d.get("digest"))
            for payload in index_payloads
            for d in descriptors(_json(payload), "manifests")
        }
        return await cq.manifests_by_digests(conn, repository_id, sorted(digests))

    async def _platforms_and_size(
        self, media_type: str, payload: bytes, children: dict[str, cq.ManifestDetailRow]
    ) -> tuple[list[str], int]:
        doc = _json(payload)
        if _is_index(media_type):
            platforms: list[str] = []
            size = len(payload)
            for d in descriptors(doc, "manifests"):
                name = platform_name(d.get("platform"))
                if name and name not in platforms:
                    platforms.append(name)
                child = children.get(str(d.get("digest")))
                size += image_size(child.payload) if child else _int(d.get("size"))
            return platforms, size
        config = doc.get("config")
        platforms = []
        if isinstance(config, dict):
            parsed = await self._config(str(config.get("digest")), _int(config.get("size")))
            name = platform_name(parsed)
            platforms = [name] if name else []
        return platforms, image_size(payload)

    async def _config(self, digest: str, size: int) -> dict[str, Any]:
        """An image config blob, parsed (cached: content-addressed, so immutable)."""
        hit = self._configs.get(digest)
        if hit is not None:
            return hit
        try:
            d = Digest.parse(digest)
        except ValueError:
            return {}
        if size > MAX_CONFIG_SIZE:
            return {}
        try:
            raw = await self.ctx.storage.get_bytes(blob_path(d.algorithm, d.hex))
        except (OSError, Exception):  # noqa: BLE001 - a missing config shows as unknown
            return {}
        doc = _json(raw)
        self._configs[digest] = doc
        if len(self._configs) > 1000:
            self._configs.popitem(last=False)
        return doc

    # --- images -----------------------------------------------------------------------------

    async def image(self, p: Principal, name: str, reference: str) -> ImageDetail:
        """A manifest by tag or digest: layers, config, platforms, referrers."""
        if not (valid_tag(reference) or valid_digest(reference)):
            raise Invalid("reference", "reference is a tag or a digest (sha256:<64 hex>)")
        row, _ = await self._repo(p, name)
        async with self.ctx.engine.connect() as conn:
            found = (
                await q.manifest_by_digest(conn, name, reference)
                if ":" in reference
                else await q.manifest_by_tag(conn, name, reference)
            )
            if found is None:
                raise Missing(f"no manifest {reference} in {name}")
            detail = (await cq.manifests_by_digests(conn, row.id, [found.digest]))[found.digest]
            tag_names = await cq.tags_of_manifest(conn, row.id, found.digest)
            children = (
                await self._children(conn, row.id, [detail.payload])
                if _is_index(detail.media_type)
                else {}
            )
            refs = await q.referrers(conn, row.id, found.digest, None)
        doc = _json(detail.payload)
        platforms, size = await self._platforms_and_size(
            detail.media_type, detail.payload, children
        )
        config_model = None
        cfg = doc.get("config")
        if isinstance(cfg, dict) and not _is_index(detail.media_type):
            config_model = await self._config_model(cfg)
        subject = doc.get("subject")
        kind, helm = await self._kind(detail.media_type, doc)
        return ImageDetail(
            repository=name,
            digest=detail.digest,
            media_type=detail.media_type,
            artifact_type=detail.artifact_type,
            artifact_kind=kind.kind,
            artifact_label=kind.label,
            helm=helm,
            manifest_size=detail.size,
            size=size,
            pushed_at=detail.created_at,
            tags=tag_names,
            subject=_str(subject.get("digest")) if isinstance(subject, dict) else None,
            annotations=_str_map(doc.get("annotations")),
            config=config_model,
            layers=[
                Layer(
                    digest=str(d.get("digest")),
                    media_type=str(d.get("mediaType", "")),
                    size=_int(d.get("size")),
                    annotations=_str_map(d.get("annotations")),
                )
                for d in descriptors(doc, "layers")
            ],
            manifests=[
                PlatformManifest(
                    digest=str(d.get("digest")),
                    media_type=str(d.get("mediaType", "")),
                    size=_int(d.get("size")),
                    platform=platform_name(d.get("platform")),
                    artifact_type=_str(d.get("artifactType")),
                )
                for d in descriptors(doc, "manifests")
            ],
            platforms=platforms,
            referrers=[_referrer(r) for r in refs],
        )

    async def _kind(
        self, media_type: str, doc: dict[str, Any]
    ) -> tuple[ArtifactKind, HelmChartInfo | None]:
        """What a manifest holds (image, index, Helm chart, SBOM, …: oci/artifacts.py), and a
        Helm chart's name, version and appVersion from its (cached) config blob."""
        cfg = doc.get("config") if isinstance(doc.get("config"), dict) else None
        kind = classify_types(
            media_type,
            _str(doc.get("artifactType")),
            _str(cfg.get("mediaType")) if cfg else None,
            [str(d.get("mediaType", "")) for d in descriptors(doc, "layers")],
        )
        if kind.kind != "helm-chart" or cfg is None or cfg.get("mediaType") != HELM_CONFIG:
            return kind, None
        try:
            chart = helm_chart_from(
                await self._config(str(cfg.get("digest")), _int(cfg.get("size")))
            )
        except ArtifactError:
            return kind, None  # a chart whose config cannot be read: still labelled a chart
        return kind, HelmChartInfo(
            name=chart.name,
            version=chart.version,
            app_version=chart.app_version,
            description=chart.description,
        )

    async def _config_model(self, cfg: dict[str, Any]) -> ImageConfig:
        digest, size = str(cfg.get("digest")), _int(cfg.get("size"))
        media_type = str(cfg.get("mediaType", ""))
        base = {"digest": digest, "media_type": media_type, "size": size}
        if media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            return ImageConfig(**base)  # an artifact's config: not an image's
        doc = await self._config(digest, size)
        c = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        assert isinstance(c, dict)
        ports = c.get("ExposedPorts")
        history = []
        for h in descriptors(doc, "history"):
            history.append(
                HistoryEntry(
                    created=_str(h.get("created")),
                    created_by=_str(h.get("created_by")),
                    comment=_str(h.get("comment")),
                    empty_layer=h.get("empty_layer") is True,
                )
            )
        return ImageConfig(
            **base,
            os=_str(doc.get("os")),
            architecture=_str(doc.get("architecture")),
            variant=_str(doc.get("variant")),
            created=_str(doc.get("created")),
            author=_str(doc.get("author")),
            entrypoint=_str_list(c.get("Entrypoint")),
            cmd=_str_list(c.get("Cmd")),
            env=_str_list(c.get("Env")),
            working_dir=_str(c.get("WorkingDir")),
            user=_str(c.get("User")),
            labels=_str_map(c.get("Labels")),
            exposed_ports=sorted(str(k) for k in ports) if isinstance(ports, dict) else None,
            history=history,
        )

    async def referrers(
        self, p: Principal, name: str, digest: str, artifact_type: str | None = None
    ) -> list[Referrer]:
        if not valid_digest(digest):
            raise Invalid("digest", "digest is <algorithm>:<hex>")
        if artifact_type is not None and len(artifact_type) > 255:
            raise Invalid("artifact_type", "artifact_type is at most 255 characters")
        row, _ = await self._repo(p, name)
        async with self.ctx.engine.connect() as conn:
            refs = await q.referrers(conn, row.id, digest, artifact_type)
        return [_referrer(r) for r in refs]

    # --- system -----------------------------------------------------------------------------

    async def system_info(self) -> SystemInfo:
        async with self.ctx.engine.connect() as conn:
            return SystemInfo(
                version=__version__,
                storage_used=await cq.storage_used(conn),
                counts=await cq.counts(conn),
            )

    async def dashboard(self, p: Principal, days: int = 30) -> Dashboard:
        scope = await self.access.read_scope(p)
        today = q.now().date()
        since = q.now() - timedelta(days=days - 1)
        since = since.replace(hour=0, minute=0, second=0, microsecond=0)
        async with self.ctx.engine.connect() as conn:
            per_ns = await cq.storage_per_namespace(conn, scope)
            largest = await cq.largest_repositories(conn, scope, 10)
            rows = await cq.activity_per_day(conn, since, ("manifest.push", "manifest.pull"), scope)
        by_day: dict[Any, dict[str, int]] = {}
        for day, action, count in rows:
            by_day.setdefault(day, {})[action] = count
        activity = []
        for i in range(days - 1, -1, -1):
            day = today - timedelta(days=i)
            got = by_day.get(day, {})
            activity.append(
                DayActivity(
                    day=day, pushes=got.get("manifest.push", 0), pulls=got.get("manifest.pull", 0)
                )
            )
        return Dashboard(
            storage_per_namespace=[
                NamespaceStorage(namespace=ns or "(top level)", size=size)
                for ns, size in sorted(per_ns.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            activity=activity,
            largest_repositories=[RepositorySize(name=n, size=s) for n, s in largest],
        )


def _is_index(media_type: str) -> bool:
    return media_type in mt.INDEXES


def valid_digest(value: str) -> bool:
    try:
        Digest.parse(value)
    except ValueError:
        return False
    return True


def _referrer(r: q.ReferrerRow) -> Referrer:
    return Referrer(
        digest=r.digest,
        media_type=r.media_type,
        artifact_type=r.artifact_type,
        size=r.size,
        annotations=r.annotations,
    )


def _summary(r: cq.RepositoryRow) -> RepositorySummary:
    return RepositorySummary(
        name=r.name,
        namespace=r.namespace,
        visibility="public" if r.visibility == "public" else "private",
        description=r.description,
        created_at=r.created_at,
        tag_count=r.tag_count,
        pull_count=r.pull_count,
        push_count=r.push_count,
        last_push_at=r.last_push_at,
        last_pull_at=r.last_pull_at,
    )
