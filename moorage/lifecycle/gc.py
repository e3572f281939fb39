"""Online garbage collection: review due rows, re-check under row locks, delete, then bytes.

A pass has three phases, each in batches of ``gc.batch_size`` rows, one transaction a batch:

1. **Manifests** due for review (a tag moved off them or was deleted, they were pushed untagged,
   their index or subject went). Each is locked (``FOR UPDATE``) and re-checked: tagged, listed
   by an index of its repository, a referrer of a manifest still there, inside the untagged delay
   or inside the time-machine window → kept (re-queued for when the window ends). Otherwise it
   goes, and its blobs, children and referrers are queued for review.
2. **Blobs** due for review. Each blob row is locked and re-checked: links of a repository whose
   manifests do not reference the blob are dropped once older than the grace window; a blob no
   manifest references, with no link and no row younger than the grace window, goes — its row
   deleted and a tombstone written in the same transaction.
3. **Bytes**: tombstones whose bytes are still stored are claimed, and — unless the blob came back
   meanwhile — their objects deleted in parallel (batched ``DeleteObjects`` on S3).

A dry run is the same code in one transaction that is rolled back: it reports exactly what the
real pass would remove at that moment (phase 3 is skipped; it deletes bytes only).

Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so passes on several nodes share the work;
on SQLite every writer's BEGIN IMMEDIATE serializes. docs/gc.md has the race analysis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db.queries import _insert
from ..db.schema import (
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tag_history,
    tags,
)
from ..metrics.definitions import METRICS, MoorageMetrics
from ..storage.base import StorageDriver, blob_path
from . import gc_indexes as _gc_indexes  # noqa: F401 - the indexes join the metadata
from . import pins
from .config import GCConfig
from .gc_queue import queue_blobs, utcnow
from .tables import (
    gc_blob_review,
    gc_blob_tombstones,
    gc_manifest_pulls,
    gc_manifest_review,
    gc_runs,
)

log = logging.getLogger("moorage.gc")

GC_PASS = "lifecycle.gc"
# Tombstones whose bytes are gone are kept this long (an upload that wrote its bytes before the
# delete and commits after it must still find one).
TOMBSTONE_KEEP = timedelta(days=1)


def aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def digest_path(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return blob_path(algorithm, hex_)


def _retryable(exc: DBAPIError) -> bool:
    """A deadlock or serialization failure (PostgreSQL), or a busy database (SQLite)."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001") or "deadlock" in str(exc.orig) or "locked" in str(exc.orig)


def _pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


# --- the pass ---------------------------------------------------------------------------------


@dataclass
class PassReport:
    dry_run: bool
    manifests: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size)
    links: int = 0  # repository links dropped (blob still referenced elsewhere)
    deferred: int = 0  # reviews re-queued for later (something still too recent)
    bytes_deleted: int = 0  # storage objects deleted (this pass, maybe earlier passes' rows)
    seconds: dict[str, float] = field(default_factory=dict)  # phase → wall time (manifests, ...)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.blobs)

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "manifests": len(self.manifests),
            "blobs": len(self.blobs),
            "bytes": self.bytes,
            "links": self.links,
            "deferred": self.deferred,
            "objects_deleted": self.bytes_deleted,
        }


# Asked, inside the deciding transaction, whether an untagged manifest of a repository (by
# name) stays anyway: another capability's content with its own lifecycle (a pull-through
# cache's manifests go by its eviction, not by the untagged delay). Registered by capabilities
# in ``rt.services["gc.keep_untagged"]`` (a list) before or after this one's setup.
Keeper = Callable[[AsyncConnection, str], Awaitable[bool]]


class Collector:
    def __init__(
        self,
        engine: AsyncEngine,
        storage: StorageDriver,
        config: GCConfig,
        keepers: Sequence[Keeper] = (),
        metrics: MoorageMetrics = METRICS,
    ) -> None:
        self.engine = engine  # a writer engine (SQLite: BEGIN IMMEDIATE)
        self.storage = storage
        self.config = config
        self.keepers = keepers  # the shared list: capabilities set up later still count
        self.metrics = metrics

    async def run_pass(
        self,
        *,
        dry_run: bool = False,
        grace: float | None = None,
        trigger: str = "job",
        actor: str | None = None,
    ) -> PassReport:
        """One pass over every review due now. *grace* (seconds) replaces ``gc.grace_seconds``
        for this pass: a review queued at T is due at T + grace, and links and blobs younger
        than *grace* are spared."""
        cfg = self.config
        g = timedelta(seconds=cfg.grace_seconds if grace is None else grace)
        now = utcnow()
        # Rows were queued with review_after = event + configured grace.
        due_before = now + timedelta(seconds=cfg.grace_seconds) - g
        report = PassReport(dry_run)
        started = utcnow()
        clock = time.perf_counter()
        try:
            if dry_run:
                async with self.engine.connect() as conn:
                    trans = await conn.begin()
                    try:
                        while await self._manifest_batch(conn, now, due_before, g, report):
                            pass
                        while await self._blob_batch(conn, now, due_before, g, report):
                            pass
                    finally:
                        await trans.rollback()
            else:
                t = time.perf_counter()
                while await self._in_tx(self._manifest_batch, now, due_before, g, report):
                    pass
                report.seconds["manifests"] = time.perf_counter() - t
                t = time.perf_counter()
                while await self._in_tx(self._blob_batch, now, due_before, g, report):
                    pass
                report.seconds["blobs"] = time.perf_counter() - t
                t = time.perf_counter()
                await self.delete_bytes(report)
                report.seconds["bytes"] = time.perf_counter() - t
                async with self.engine.begin() as conn:
                    await pins.prune(conn, now, cfg.pin_pulled_within_seconds)
        except Exception as exc:
            if not dry_run:
                self._measure(report, "failure", clock)
                await self._record_failure(report, trigger, actor, started, exc)
            raise
        if not dry_run:
            self._measure(report, "success", clock)
        if dry_run or trigger != "job" or report.manifests or report.blobs or report.links:
            await self._record(report, trigger, actor, started)
        await self.queue_depth()
        return report

    def _measure(self, report: PassReport, outcome: str, clock: float) -> None:
        """A real pass's figures (dry runs remove nothing and are not counted). What a failed
        pass committed before it failed counts as removed."""
        m = self.metrics
        m.gc_runs.labels(outcome).inc()
        m.gc_run_duration.observe(time.perf_counter() - clock)
        m.gc_deleted.labels("manifest").inc(len(report.manifests))
        m.gc_deleted.labels("blob").inc(len(report.blobs))
        m.gc_bytes_freed.inc(report.bytes)

    async def queue_depth(self) -> dict[str, int]:
        """Rows in the review queues (due or not), published as
        ``moorage_gc_review_queue_depth``: two counts, once per pass."""
        try:
            async with self.engine.connect() as conn:
                depth = {
                    "blob": int(
                        await conn.scalar(sa.select(sa.func.count()).select_from(gc_blob_review))
                        or 0
                    ),
                    "manifest": int(
                        await conn.scalar(
                            sa.select(sa.func.count()).select_from(gc_manifest_review)
                        )
                        or 0
                    ),
                }
        except DBAPIError as exc:  # a figure, never the pass's failure
            log.warning("gc: cannot count the review queues: %s", exc.orig)
            return {}
        for queue, n in depth.items():
            self.metrics.gc_review_queue_depth.labels(queue).set(n)
        return depth

    async def _in_tx(
        self,
        step: Callable[
            [AsyncConnection, datetime, datetime, timedelta, PassReport], Awaitable[int]
        ],
        now: datetime,
        due_before: datetime,
        grace: timedelta,
        report: PassReport,
    ) -> int:
        """One batch in its own transaction; the report learns of it only after the commit. A
        batch a deadlock (or a busy SQLite file) aborted is tried again."""
        for attempt in range(5):
            part = PassReport(report.dry_run)
            try:
                async with self.engine.begin() as conn:
                    n = await step(conn, now, due_before, grace, part)
            except DBAPIError as exc:
                if attempt == 4 or not _retryable(exc):
                    raise
                log.info("gc batch retried after %s", exc.orig)
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            report.manifests += part.manifests
            report.blobs += part.blobs
            report.links += part.links
            report.deferred += part.deferred
            return n
        return 0

    async def _record_failure(
        self,
        report: PassReport,
        trigger: str,
        actor: str | None,
        started: datetime,
        exc: BaseException,
    ) -> None:
        """A ``gc_runs`` row with the error (what the pass committed before it failed)."""
        try:
            await self._record(report, trigger, actor, started, f"{type(exc).__name__}: {exc}")
        except Exception as again:  # noqa: BLE001 - the database is likely what failed
            log.warning("gc: cannot record the failed pass: %s", again)

    async def _record(
        self,
        report: PassReport,
        trigger: str,
        actor: str | None,
        started: datetime,
        error: str | None = None,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.insert(gc_runs).values(
                    trigger=trigger,
                    actor=actor,
                    dry_run=report.dry_run,
                    started_at=started,
                    finished_at=utcnow(),
                    manifests=len(report.manifests),
                    blobs=len(report.blobs),
                    bytes=report.bytes,
                    error=error[:2000] if error else None,
                )
            )

    # --- phase 1: manifests --------------------------------------------------------------------

    async def _manifest_batch(
        self,
        conn: AsyncConnection,
        now: datetime,
        due_before: datetime,
        grace: timedelta,
        report: PassReport,
    ) -> int:
        """Claim up to ``batch_size`` due manifest reviews and decide them together: a fixed
        number of statements per batch, not per manifest (each reason to keep is one query over
        the batch). Every manifest of the batch is decided on the rows as they were before any
        of the batch's deletions, so an index and its child (or a subject and its referrer)
        reviewed together keep the child — which the index's removal queues again."""
        r = gc_manifest_review
        due = (
            sa.select(r.c.id, r.c.repository_id, r.c.digest)
            .where(r.c.review_after <= due_before)
            .order_by(r.c.review_after)
            .limit(self.config.batch_size)
        )
        if _pg(conn):
            due = due.with_for_update(skip_locked=True)
        rows = (await conn.execute(due)).all()
        if not rows:
            return 0
        claimed: dict[tuple[int, str], list[int]] = {}
        for row in rows:
            claimed.setdefault((int(row.repository_id), str(row.digest)), []).append(row.id)
        await self._review_manifests(conn, claimed, now, report)
        return len(rows)

    async def _review_manifests(
        self,
        conn: AsyncConnection,
        claimed: dict[tuple[int, str], list[int]],
        now: datetime,
        report: PassReport,
    ) -> None:
        r = gc_manifest_review
        cfg = self.config
        pairs = sorted(claimed)
        # Lock the manifests in (repository, digest) order, the order a push locks them in.
        found = {
            (int(m.repository_id), str(m.digest)): m
            for m in await conn.execute(
                sa.select(
                    manifests.c.id,
                    manifests.c.repository_id,
                    manifests.c.digest,
                    manifests.c.created_at,
                    manifests.c.subject_digest,
                )
                .where(sa.tuple_(manifests.c.repository_id, manifests.c.digest).in_(pairs))
                .order_by(manifests.c.repository_id, manifests.c.digest)
                .with_for_update()
            )
        }
        kept = await self._kept(conn, found)
        live = [p for p in pairs if p in found and p not in kept]
        untagged_at: dict[tuple[int, str], datetime] = {}
        pulled: dict[tuple[int, str], datetime] = {}
        if live:
            th = tag_history
            for h in await conn.execute(
                sa.select(th.c.repository_id, th.c.manifest_digest, sa.func.max(th.c.replaced_at))
                .where(sa.tuple_(th.c.repository_id, th.c.manifest_digest).in_(live))
                .group_by(th.c.repository_id, th.c.manifest_digest)
            ):
                at = aware(h[2])
                if at is not None:
                    untagged_at[(int(h[0]), str(h[1]))] = at
            pulled = await pins.pinned_until_many(conn, live, cfg.pin_pulled_within_seconds)
        done: list[int] = []
        deferred: list[dict[str, Any]] = []
        going: list[tuple[int, str]] = []
        for p in pairs:
            if p not in live:
                done.extend(claimed[p])  # gone already, or kept (its next change queues it)
                continue
            m = found[p]
            protect = (aware(m.created_at) or now) + timedelta(seconds=cfg.untagged_seconds)
            if p in untagged_at:
                t = untagged_at[p]
                protect = max(
                    protect,
                    t + timedelta(seconds=cfg.untagged_seconds),
                    t + timedelta(days=cfg.history_days),
                )
            if p in pulled:
                protect = max(protect, pulled[p])  # pulled by digest lately: the pin's end
            if protect > now:
                deferred.extend({"rid": i, "after": protect} for i in claimed[p])
                report.deferred += 1
                continue
            going.append(p)
            done.extend(claimed[p])
        if deferred:
            await conn.execute(
                sa.update(r)
                .where(r.c.id == sa.bindparam("rid"))
                .values(review_after=sa.bindparam("after")),
                deferred,
            )
        if going:
            await self._delete_manifests(conn, [found[p] for p in going], now, report)
        if done:
            await conn.execute(sa.delete(r).where(r.c.id.in_(done)))

    async def _kept(
        self, conn: AsyncConnection, found: dict[tuple[int, str], Any]
    ) -> set[tuple[int, str]]:
        """Of the locked manifests: tagged, listed by an index of their repository, referrers of
        a manifest there, or kept by another capability's keeper — kept, and no longer queued
        (the change that ends this queues them again)."""
        if not found:
            return set()
        kept: set[tuple[int, str]] = set()
        by_id = {int(m.id): p for p, m in found.items()}
        for mid in (
            await conn.execute(
                sa.select(tags.c.manifest_id).where(tags.c.manifest_id.in_(list(by_id))).distinct()
            )
        ).scalars():
            kept.add(by_id[int(mid)])
        parent = manifests.alias("parent")
        mr = manifest_references
        for row in await conn.execute(
            sa.select(parent.c.repository_id, mr.c.digest)
            .select_from(mr.join(parent, parent.c.id == mr.c.manifest_id))
            .where(mr.c.digest.in_(sorted({d for _, d in found})), mr.c.kind == "manifest")
            .distinct()
        ):
            kept.add((int(row.repository_id), str(row.digest)))
        subjects = {(p[0], str(m.subject_digest)): p for p, m in found.items() if m.subject_digest}
        if subjects:
            for row in await conn.execute(
                sa.select(manifests.c.repository_id, manifests.c.digest).where(
                    sa.tuple_(manifests.c.repository_id, manifests.c.digest).in_(sorted(subjects))
                )
            ):
                kept.add(subjects[(int(row.repository_id), str(row.digest))])
        rest = [p for p in found if p not in kept]
        if self.keepers and rest:
            names = await self._names(conn, {repo for repo, _ in rest})
            verdict: dict[int, bool] = {}
            for repo_id in sorted({repo for repo, _ in rest}):
                name = names.get(repo_id)
                keep = False
                if name is not None:
                    for keeper in self.keepers:
                        if await keeper(conn, name):
                            keep = True
                            break
                verdict[repo_id] = keep
            kept.update(p for p in rest if verdict[p[0]])
        return kept & set(found)

    async def _names(self, conn: AsyncConnection, repo_ids: set[int]) -> dict[int, str]:
        return {
            int(row.id): str(row.name)
            for row in await conn.execute(
                sa.select(repositories.c.id, repositories.c.name).where(
                    repositories.c.id.in_(sorted(repo_ids))
                )
            )
        }

    async def _delete_manifests(
        self, conn: AsyncConnection, going: list[Any], now: datetime, report: PassReport
    ) -> None:
        """Delete the (locked) manifests *going*; queue their blobs, children and referrers."""
        ids = [int(m.id) for m in going]
        pairs = [(int(m.repository_id), str(m.digest)) for m in going]
        repo_of = {int(m.id): int(m.repository_id) for m in going}
        mr = manifest_references
        blob_refs: set[str] = set()
        children: set[tuple[int, str]] = set()
        for ref in await conn.execute(
            sa.select(mr.c.manifest_id, mr.c.digest, mr.c.kind).where(mr.c.manifest_id.in_(ids))
        ):
            if ref.kind == "blob":
                blob_refs.add(str(ref.digest))
            elif ref.kind == "manifest":
                children.add((repo_of[int(ref.manifest_id)], str(ref.digest)))
        for row in await conn.execute(
            sa.select(manifests.c.repository_id, manifests.c.digest).where(
                sa.tuple_(manifests.c.repository_id, manifests.c.subject_digest).in_(pairs)
            )
        ):
            children.add((int(row.repository_id), str(row.digest)))  # referrers
        await conn.execute(sa.delete(mr).where(mr.c.manifest_id.in_(ids)))
        await conn.execute(sa.delete(manifests).where(manifests.c.id.in_(ids)))
        pulls = gc_manifest_pulls
        await conn.execute(
            sa.delete(pulls).where(sa.tuple_(pulls.c.repository_id, pulls.c.digest).in_(pairs))
        )
        after = now + timedelta(seconds=self.config.grace_seconds)
        await queue_blobs(conn, sorted(blob_refs), after, "manifest_deleted")
        gone = set(pairs)
        children -= gone  # removed in this batch already
        if children:
            ts = utcnow()
            await conn.execute(
                sa.insert(gc_manifest_review),
                [
                    {
                        "repository_id": repo,
                        "digest": d,
                        "review_after": after,
                        "reason": "parent_deleted",
                        "created_at": ts,
                    }
                    for repo, d in sorted(children)
                ],
            )
        names = await self._names(conn, {repo for repo, _ in pairs})
        report.manifests.extend((names.get(repo, str(repo)), d) for repo, d in pairs)

    # --- phase 2: blobs -----------------------------------------------------------------------

    async def _blob_batch(
        self,
        conn: AsyncConnection,
        now: datetime,
        due_before: datetime,
        grace: timedelta,
        report: PassReport,
    ) -> int:
        r = gc_blob_review
        due = (
            sa.select(r.c.id, r.c.digest)
            .where(r.c.review_after <= due_before)
            .order_by(r.c.review_after)
            .limit(self.config.batch_size)
        )
        if _pg(conn):
            due = due.with_for_update(skip_locked=True)
        claimed: dict[str, list[int]] = {}
        for row in await conn.execute(due):
            claimed.setdefault(str(row.digest), []).append(int(row.id))
        if not claimed:
            return 0
        digests = sorted(claimed)
        cutoff = now - grace
        # Lock the blob rows (digest order: a manifest push takes its share locks in that order).
        rows = {
            b.digest: b
            for b in await conn.execute(
                sa.select(blobs.c.id, blobs.c.digest, blobs.c.size, blobs.c.created_at)
                .where(blobs.c.digest.in_(digests))
                .order_by(blobs.c.digest)
                .with_for_update()
            )
        }
        ids = [b.id for b in rows.values()]
        referenced: set[str] = set()
        if ids:
            referenced = set(
                (
                    await conn.execute(
                        sa.select(manifest_references.c.digest)
                        .where(
                            manifest_references.c.digest.in_(list(rows)),
                            manifest_references.c.kind == "blob",
                        )
                        .distinct()
                    )
                ).scalars()
            )
        # Links a repository holds without any of its manifests referencing the blob.
        mr, m = manifest_references, manifests
        used_here = (
            sa.select(sa.literal(1))
            .select_from(mr.join(m, m.c.id == mr.c.manifest_id))
            .where(
                m.c.repository_id == repository_blobs.c.repository_id,
                mr.c.digest == blobs.c.digest,
                mr.c.kind == "blob",
            )
            .exists()
        )
        dangling = (
            (
                await conn.execute(
                    sa.select(
                        repository_blobs.c.repository_id,
                        repository_blobs.c.blob_id,
                        repository_blobs.c.created_at,
                        blobs.c.digest,
                    )
                    .select_from(
                        repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id)
                    )
                    .where(repository_blobs.c.blob_id.in_(ids), ~used_here)
                )
            ).all()
            if ids
            else []
        )
        fresh: dict[str, datetime] = {}
        stale: list[dict[str, int]] = []
        for link in dangling:
            linked_at = aware(link.created_at) or now
            if linked_at > cutoff:
                fresh[link.digest] = max(fresh.get(link.digest, linked_at), linked_at)
                continue
            stale.append({"rid": int(link.repository_id), "bid": int(link.blob_id)})
            if link.digest in referenced:
                report.links += 1
        gone: list[Any] = []
        done: list[str] = []
        later: list[dict[str, Any]] = []
        for digest in digests:
            b = rows.get(digest)
            if b is None:
                done.append(digest)
                continue
            created = aware(b.created_at) or now
            young = max([created, *([fresh[digest]] if digest in fresh else [])])
            if digest in referenced and digest not in fresh:
                done.append(digest)
            elif digest in referenced or young > cutoff:
                later.extend({"rid": i, "after": young + grace} for i in claimed[digest])
                report.deferred += 1
            else:
                gone.append(b)
                done.append(digest)
        if later:
            await conn.execute(
                sa.update(r)
                .where(r.c.id == sa.bindparam("rid"))
                .values(review_after=sa.bindparam("after")),
                later,
            )
        # Stale links of blobs that stay (the links of those that go, go with them below).
        gone_ids = {int(b.id) for b in gone}
        stale = [link for link in stale if link["bid"] not in gone_ids]
        if stale:  # one executemany, not a statement per link
            await conn.execute(
                sa.delete(repository_blobs).where(
                    repository_blobs.c.repository_id == sa.bindparam("rid"),
                    repository_blobs.c.blob_id == sa.bindparam("bid"),
                ),
                stale,
            )
        if gone:
            await conn.execute(
                sa.delete(repository_blobs).where(repository_blobs.c.blob_id.in_(sorted(gone_ids)))
            )
            await conn.execute(sa.delete(blobs).where(blobs.c.id.in_(sorted(gone_ids))))
            stmt = _insert(conn, gc_blob_tombstones)
            stmt = stmt.on_conflict_do_update(
                index_elements=["digest"],
                set_={"deleted_at": stmt.excluded.deleted_at, "bytes_deleted_at": None},
            )
            await conn.execute(
                stmt,
                [{"digest": b.digest, "size": int(b.size), "deleted_at": now} for b in gone],
            )
            report.blobs.extend((b.digest, int(b.size)) for b in gone)
        if done:
            await conn.execute(
                sa.delete(r).where(r.c.id.in_([i for d in done for i in claimed[d]]))
            )
        return sum(len(ids) for ids in claimed.values())

    # --- phase 3: bytes -----------------------------------------------------------------------

    async def delete_bytes(self, report: PassReport | None = None) -> int:
        """Delete the stored bytes of tombstoned blobs, a batch per transaction; the claim on a
        tombstone is held while its objects are deleted, so an upload of the same digest that
        commits meanwhile waits, then sees that its bytes may be gone (and checks)."""
        t = gc_blob_tombstones
        total = 0
        while True:
            async with self.engine.begin() as conn:
                sel = (
                    sa.select(t.c.digest)
                    .where(t.c.bytes_deleted_at.is_(None))
                    .order_by(t.c.deleted_at)
                    .limit(self.config.batch_size)
                )
                if _pg(conn):
                    sel = sel.with_for_update(skip_locked=True)
                digests = list((await conn.execute(sel)).scalars())
                if not digests:
                    break
                back = set(
                    (
                        await conn.execute(
                            sa.select(blobs.c.digest).where(blobs.c.digest.in_(digests))
                        )
                    ).scalars()
                )
                if back:  # uploaded again since: its bytes are the new blob's
                    await conn.execute(sa.delete(t).where(t.c.digest.in_(back)))
                paths = [digest_path(d) for d in digests if d not in back]
                await self.storage.delete_many(paths, self.config.delete_concurrency)
                await conn.execute(
                    sa.update(t)
                    .where(t.c.digest.in_([d for d in digests if d not in back]))
                    .values(bytes_deleted_at=utcnow())
                )
                total += len(paths)
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.delete(t).where(
                    t.c.bytes_deleted_at.is_not(None),
                    t.c.bytes_deleted_at < utcnow() - TOMBSTONE_KEEP,
                )
            )
        if report is not None:
            report.bytes_deleted += total
        return total
