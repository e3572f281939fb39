"""Time machine: what a tag pointed to before it moved or was deleted (``tag_history``, written
by the core in the change's own transaction), and restoring one of those manifests.

GC keeps a manifest a tag left for ``gc.history_days`` (moorage/lifecycle/gc.py), so every entry
younger than that can be restored while its manifest is still there. A restore is an ordinary
manifest push of the stored bytes by the tag (through the content rules and the domain events:
an immutable tag stays, the manifest the tag leaves is recorded and queued for review)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.schema import manifests, repositories, tag_history, tags
from ..oci.names import valid_name, valid_tag
from ..services.errors import Invalid, ManifestUnknown, NameUnknown
from ..services.manifests import ManifestService
from ..services.rules import Requester
from .gc import aware


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    digest: str
    replaced_at: datetime | None  # None: the current value
    restorable: bool  # the manifest is still in the repository


def parse_reference(raw: str) -> tuple[str, str]:
    """REPOSITORY:TAG → (repository, tag)."""
    repo, sep, tag = raw.rpartition(":")
    if not sep or not valid_name(repo) or not valid_tag(tag):
        raise Invalid("reference", f"not REPOSITORY:TAG: {raw[:120]!r}")
    return repo, tag


async def history(
    conn: AsyncConnection, repository: str, tag: str, window_days: float
) -> list[HistoryEntry]:
    """The tag's current manifest first, then what it pointed to before, newest first, within
    the time-machine window."""
    repo_id = await conn.scalar(sa.select(repositories.c.id).where(repositories.c.name == repository))
    if repo_id is None:
        raise NameUnknown(f"repository {repository} is not known")
    present = set(
        (
            await conn.execute(
                sa.select(manifests.c.digest).where(manifests.c.repository_id == repo_id)
            )
        ).scalars()
    )
    out: list[HistoryEntry] = []
    current = await conn.scalar(
        sa.select(manifests.c.digest)
        .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
        .where(tags.c.repository_id == repo_id, tags.c.name == tag)
    )
    if current is not None:
        out.append(HistoryEntry(str(current), None, True))
    since = datetime.now(UTC) - timedelta(days=window_days)
    rows = await conn.execute(
        sa.select(tag_history.c.manifest_digest, tag_history.c.replaced_at)
        .where(
            tag_history.c.repository_id == repo_id,
            tag_history.c.name == tag,
            tag_history.c.replaced_at >= since,
        )
        .order_by(tag_history.c.replaced_at.desc(), tag_history.c.id.desc())
        .limit(1000)
    )
    for r in rows:
        out.append(HistoryEntry(r.manifest_digest, aware(r.replaced_at), r.manifest_digest in present))
    return out


async def restore(
    service: ManifestService,
    repository: str,
    tag: str,
    digest: str,
    requester: Requester | None = None,
) -> None:
    """Point *tag* at *digest* again: a manifest still in the repository."""
    engine = service.ctx.engine
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(manifests.c.payload, manifests.c.media_type)
                .select_from(
                    repositories.join(manifests, manifests.c.repository_id == repositories.c.id)
                )
                .where(repositories.c.name == repository, manifests.c.digest == digest)
            )
        ).first()
    if row is None:
        raise ManifestUnknown(
            f"manifest {digest} is no longer in {repository} (past the time-machine window, or "
            "garbage-collected)"
        )
    await service.put(repository, tag, bytes(row.payload), row.media_type, requester)
