"""Background verification, on the shared job queue (one node runs each job).

- ``trust.verify`` ``{"artifact_id": N}``: verify one signature artifact with the current
  configuration of its namespace and store the results (queued on push, see subscribers.py).
- ``trust.reverify`` ``{"namespace": NS}``: after a change of NS's keys, stores, identities,
  trust root or Notation policy (``*``: every namespace), verify again every artifact in its
  repositories that has no result for the current configuration version. It reports progress
  and a checkpoint (the last artifact id), so a run that a dead node left is resumed where it
  stopped by whichever node takes it over. One job per (namespace, version): a change while
  a run is going queues another, which skips what is already current.
"""

from __future__ import annotations

from typing import Any

from ..jobs.runner import checkpoint, report_progress
from . import queries as q
from .service import TrustService, repository_namespace
from .settings import SYSTEM, config_version

BATCH = 50


def make_verify(service: TrustService) -> Any:
    async def verify(payload: dict[str, Any]) -> dict[str, Any]:
        artifact_id = payload.get("artifact_id")
        if not isinstance(artifact_id, int) or isinstance(artifact_id, bool):
            raise ValueError("payload needs an integer artifact_id")
        return await service.verify_and_store(artifact_id)

    return verify


def make_reverify(service: TrustService) -> Any:
    async def reverify(payload: dict[str, Any]) -> dict[str, Any]:
        namespace = payload.get("namespace", SYSTEM)
        if not isinstance(namespace, str):
            raise ValueError("payload namespace must be a string")
        resumed = checkpoint() or {}
        after = int(resumed.get("after", 0))
        done = int(resumed.get("done", 0))
        verified = 0
        engine = service.ctx.engine
        async with engine.connect() as conn:
            total = await q.count_artifacts(conn, namespace)
        while True:
            async with engine.connect() as conn:
                batch = await q.artifacts_after(conn, namespace, after, BATCH)
                versions = await q.namespace_versions(conn)
                current = {
                    a.id: config_version(versions, repository_namespace(a.repository))
                    for a in batch
                }
                stored = await q.results(conn, list(current), sorted(set(current.values())))
            if not batch:
                break
            for a in batch:
                if (a.id, current[a.id]) not in stored:
                    await service.verify_and_store(a.id)
                    verified += 1
                after, done = a.id, done + 1
                await report_progress(
                    done,
                    max(total, done),
                    f"re-verifying signatures of {namespace}",
                    checkpoint={"after": after, "done": done},
                )
        return {"namespace": namespace, "checked": done, "verified_again": verified}

    return reverify
