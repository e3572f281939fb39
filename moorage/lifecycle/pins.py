"""Pull-by-digest pins: an untagged manifest a client pulled by digest within
``gc.pin_pulled_within_seconds`` is not collected (a deployment that runs ``image@sha256:…``
must keep working after the tag moved on).

Nothing is written on the pull's path. Manifest pulls are audit records already (queued in
memory, written in batches by the audit log's flusher, which in the same transaction bumps the
repositories' pull counters); :class:`PullPins` is an audit *sink*: it turns each batch's
successful pulls by digest (no tag) into one upsert of ``gc_manifest_pulls`` — (repository,
digest) → last pulled. A (repository, digest) already recorded by this process less than
``record_every`` ago is skipped, so a digest pulled a thousand times a minute costs one row write
per ``record_every``, not a thousand. GC reads the row inside the deciding transaction
(moorage/lifecycle/gc.py) and re-queues the review for when the pin ends; passes prune rows
older than the window.

What it sees is what the audit log records: with ``audit.pull_events = sample`` only sampled
pulls pin (a manifest pulled often is pinned all the same), with ``audit.enabled = false`` none
do. The pin's clock has the resolution of ``record_every`` (at most an hour) and of the audit
flush interval.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..audit.events import Action, AuditEvent
from ..db.queries import _insert
from ..db.schema import repositories
from .tables import gc_manifest_pulls

MAX_MEMO = 100_000  # (repository, digest) pairs remembered per process


class PullPins:
    """The audit sink (``rt.audit.add_sink(PullPins(window))``)."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        # A pin is refreshed at most this often per process: a small share of the window.
        self.record_every = min(3600.0, window_seconds / 8)
        self._written: dict[tuple[str, str], float] = {}  # → time.monotonic() of the write

    def pulls(self, events: Sequence[AuditEvent]) -> dict[tuple[str, str], datetime]:
        """Successful manifest pulls by digest of *events*, due for a write: (repo, digest) →
        latest time."""
        out: dict[tuple[str, str], datetime] = {}
        t = time.monotonic()
        for e in events:
            if (
                e.action != Action.MANIFEST_PULL
                or e.result != "success"
                or e.tag
                or not e.repository
                or not e.digest
                or ":" not in e.digest
            ):
                continue
            key = (e.repository, e.digest)
            last = self._written.get(key)
            if last is not None and t - last < self.record_every:
                continue
            out[key] = max(out.get(key, e.time), e.time)
        return out

    async def __call__(self, conn: AsyncConnection, events: Sequence[AuditEvent]) -> None:
        if self.window <= 0:
            return
        due = self.pulls(events)
        if not due:
            return
        names = sorted({repo for repo, _ in due})
        found = await conn.execute(
            sa.select(repositories.c.name, repositories.c.id).where(repositories.c.name.in_(names))
        )
        ids = {str(name): int(id_) for name, id_ in found}
        rows = [
            {"repository_id": ids[repo], "digest": digest, "pulled_at": at}
            for (repo, digest), at in sorted(due.items())
            if repo in ids
        ]
        if not rows:
            return
        stmt = _insert(conn, gc_manifest_pulls)
        stmt = stmt.on_conflict_do_update(
            index_elements=["repository_id", "digest"],
            set_={"pulled_at": stmt.excluded.pulled_at},
        )
        await conn.execute(stmt, rows)
        if len(self._written) > MAX_MEMO:
            self._written.clear()
        t = time.monotonic()
        for key in due:
            self._written[key] = t


async def pinned_until_many(
    conn: AsyncConnection, pairs: Sequence[tuple[int, str]], window_seconds: float
) -> dict[tuple[int, str], datetime]:
    """When the pins of manifests (repository id, digest) end; those never pulled by digest
    (or all, when pins are off) are absent. One primary-key lookup per pair, in one statement."""
    if window_seconds <= 0 or not pairs:
        return {}
    t = gc_manifest_pulls
    out: dict[tuple[int, str], datetime] = {}
    for row in await conn.execute(
        sa.select(t.c.repository_id, t.c.digest, t.c.pulled_at).where(
            sa.tuple_(t.c.repository_id, t.c.digest).in_(list(pairs))
        )
    ):
        at: datetime = row.pulled_at
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        out[(int(row.repository_id), str(row.digest))] = at + timedelta(seconds=window_seconds)
    return out


async def prune(conn: AsyncConnection, now: datetime, window_seconds: float) -> None:
    """Drop pins that ended (an index range scan on pulled_at)."""
    await conn.execute(
        sa.delete(gc_manifest_pulls).where(
            gc_manifest_pulls.c.pulled_at < now - timedelta(seconds=max(window_seconds, 0))
        )
    )
