"""Attach an image's SBOMs to it as OCI referrers (``scanning.attach_sbom``): for each format an
OCI image manifest with ``artifactType`` (``application/spdx+json``,
``application/vnd.cyclonedx+json``), the empty config, one layer holding the document, and
``subject`` the image — so ``oras discover`` and the referrers API list them.

Pushed by the registry itself (``Requester.system``) once per image and format: a rescan does
not add another when one is attached already. Bytes first, then the rows (a crash in between
leaves an unreferenced blob for garbage collection, never a row without bytes)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ..db import queries as core_q
from ..oci import mediatypes as mt
from ..services.context import ServiceContext
from ..services.manifests import ManifestService
from ..services.rules import Requester
from ..storage.base import blob_path
from .sbom import CYCLONEDX_MEDIA_TYPE, SPDX_MEDIA_TYPE, cyclonedx, spdx

EMPTY = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()


async def _store_blob(ctx: ServiceContext, repo_id: int, data: bytes) -> str:
    hex_ = hashlib.sha256(data).hexdigest()
    async with ctx.engine.connect() as conn:
        known = await core_q.blob_by_digest(conn, f"sha256:{hex_}")
    if known is None:
        await ctx.storage.put_bytes(blob_path("sha256", hex_), data)
    async with ctx.write_engine.begin() as conn:
        blob_id = await core_q.add_blob(conn, f"sha256:{hex_}", len(data))
        await core_q.link_blob(conn, repo_id, blob_id)
    return f"sha256:{hex_}"


async def attach_sboms(
    ctx: ServiceContext,
    repository: str,
    digest: str,
    media_type: str,
    size: int,
    inventory: dict[str, Any],
    when: datetime | None,
) -> list[str]:
    """The digests of the SBOM manifests pushed (none when both were attached before)."""
    async with ctx.engine.connect() as conn:
        repo_id = await core_q.repository_id(conn, repository)
        if repo_id is None:
            return []
        existing = {r.artifact_type for r in await core_q.referrers(conn, repo_id, digest, None)}
    base = ctx.config.http.base_url or ""
    pushed = []
    for artifact_type in (SPDX_MEDIA_TYPE, CYCLONEDX_MEDIA_TYPE):
        if artifact_type in existing:
            continue
        document = (
            spdx(inventory, repository, digest, when, base)
            if artifact_type == SPDX_MEDIA_TYPE
            else cyclonedx(inventory, repository, digest, when)
        )
        body = json.dumps(document, indent=1).encode()
        layer = await _store_blob(ctx, repo_id, body)
        await _store_blob(ctx, repo_id, EMPTY)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": mt.OCI_EMPTY, "digest": EMPTY_DIGEST, "size": len(EMPTY)},
            "layers": [{"mediaType": artifact_type, "digest": layer, "size": len(body)}],
            "subject": {"mediaType": media_type, "digest": digest, "size": size},
            "annotations": {"org.opencontainers.image.created": (when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""), "dev.moorage.sbom": "generated"},
        }  # fmt: skip
        payload = json.dumps(manifest, separators=(",", ":")).encode()
        ref = "sha256:" + hashlib.sha256(payload).hexdigest()
        await ManifestService(ctx).put(
            repository, ref, payload, mt.OCI_MANIFEST, Requester.system("scan")
        )
        pushed.append(ref)
    return pushed
