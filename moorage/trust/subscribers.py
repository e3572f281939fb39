"""Discovery: domain-event subscribers that record signature artifacts as they are pushed.

They run inside the transaction of the push (moorage/services/events.py), so they only write
rows — the artifact, a verification job, the generation bump that tells every node's verdict
cache — and never verify: the job queue does that on whichever node claims the job
(jobs.py), and a pull that comes first verifies in memory (service.py).

- A manifest pushed under a cosign ``sha256-<hex>.sig`` tag, or a referrer whose artifact type
  is a Notation signature or a Sigstore bundle, is recognised (moorage.trust.recognise) and
  recorded against its subject.
- A ``.sig`` tag that moves (cosign adds a signature by pushing a new manifest holding every
  signature) or is deleted no longer signs with its old manifest: that artifact is dropped.
  Deleting a signature manifest drops its artifact through the foreign key.
- A signature pushed before the manifest it signs: its job retries until the manifest is
  there (and a pull of the manifest verifies it in memory meanwhile).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import job_queries
from ..services.events import ManifestDeleted, ManifestPushed, TagDeleted
from . import queries as q
from .discover import recognise, subject_of_signature_tag
from .service import SIGNATURE_TYPES, TrustService

VERIFY_JOB = "trust.verify"
REVERIFY_JOB = "trust.reverify"


async def enqueue_verify(conn: AsyncConnection, artifact_id: int) -> None:
    await job_queries.enqueue(
        conn, VERIFY_JOB, {"artifact_id": artifact_id}, dedupe_key=f"artifact:{artifact_id}"
    )


class Discovery:
    def __init__(self, service: TrustService) -> None:
        self.service = service

    async def manifest_pushed(self, conn: AsyncConnection, event: ManifestPushed) -> None:
        # Most pushes are not signatures: decided from the event alone, without a query.
        sig_tag = next((t for t in event.tags if subject_of_signature_tag(t) is not None), None)
        moved = [(t, old) for t, old in event.replaced if subject_of_signature_tag(t) is not None]
        signature = sig_tag is not None or (
            event.subject is not None and event.artifact_type in SIGNATURE_TYPES
        )
        if not signature and not moved:
            return
        repo_id = await q.repository_id(conn, event.repository)
        if repo_id is None:
            return
        changed = False
        for tag, old in moved:
            changed |= await q.remove_tagged_artifacts(conn, repo_id, old, tag) > 0
        if signature:
            info = await q.manifest_info(conn, repo_id, event.digest)
            found = recognise(info.payload, sig_tag) if info is not None else None
            if info is not None and found is not None:
                artifact_id = await q.add_artifact(
                    conn, repo_id, info.id, event.digest, found.subject_digest, found.form, sig_tag
                )
                if artifact_id is not None:
                    await enqueue_verify(conn, artifact_id)
                    changed = True
        if changed:
            await q.bump_generation(conn)
            self.service.changed()

    async def tag_deleted(self, conn: AsyncConnection, event: TagDeleted) -> None:
        if subject_of_signature_tag(event.tag) is None:
            return
        repo_id = await q.repository_id(conn, event.repository)
        if repo_id is not None and await q.remove_tagged_artifacts(
            conn, repo_id, event.digest, event.tag
        ):
            await q.bump_generation(conn)
            self.service.changed()

    async def manifest_deleted(self, conn: AsyncConnection, event: ManifestDeleted) -> None:
        # The artifact row (if it was a signature) went with the manifest's row (foreign key);
        # whether it was one is unknown by now, so every node re-reads its verdicts.
        repo_id = await q.repository_id(conn, event.repository)
        if repo_id is not None:
            await q.remove_artifacts_of_manifest(conn, repo_id, event.digest)
        await q.bump_generation(conn)
        self.service.changed()
