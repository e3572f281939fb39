"""Scanning: queue a manifest's scan (on push, on demand), run it as a job, keep its result.

- On push (``scanning.on_push``, overridable per organization in ``scan_settings``), the
  ManifestPushed subscriber writes a ``pending`` result row and a ``scan.manifest`` job in the
  push's own transaction: nothing slow happens there, and a push never waits for a scan.
- The job (any node) reads the manifest; an image manifest's layers are taken from the
  per-layer cache (``scan_layers``) or streamed from storage once and cached; the merged
  inventory is handed to the matcher that the vulnerability database capability registers as
  ``rt.services["scan.matcher"]`` (``async match(inventory) -> list[Finding]``); without one
  the inventory is stored with no findings and ``database_updated_at`` null.
- An index's result is its children's (scans are queued for them); artifacts that are not
  images (signatures, SBOMs, Helm charts) are ``unsupported``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..config import Config
from ..db import job_queries
from ..db import queries as core_q
from ..db.confcache import ConfigCache
from ..db.queries import _aware, _insert, now
from ..oci import mediatypes as mt
from ..services.context import ServiceContext
from ..services.events import ManifestPushed, ScanCompleted
from ..storage.base import PathNotFound, StorageError, blob_path
from .external import ExternalScanners, ScannerSetting
from .inventory import RECORD_VERSION, LayerRecord, analyze_layer, inventory_json, merge
from .model import Inventory
from .tables import scan_layers, scan_results, scan_settings
from .walker import Limits

log = logging.getLogger("moorage.scan")

SCAN_JOB = "scan.manifest"
STATUSES = ("pending", "running", "done", "failed", "unsupported")
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
)
IMAGE_CONFIGS = (mt.OCI_CONFIG, mt.DOCKER_CONFIG)


@dataclasses.dataclass(frozen=True)
class Result:
    digest: str
    status: str
    repository: str
    queued_at: datetime
    scanned_at: datetime | None
    database_updated_at: datetime | None
    inventory: dict[str, Any] | None
    findings: list[dict[str, Any]]
    summary: dict[str, int]
    error: str | None
    scanner: str | None = None  # the external adapter that produced it; None: built in


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _row_result(r: Any) -> Result:
    return Result(
        digest=r.digest,
        status=r.status,
        repository=r.repository,
        queued_at=_aware(r.queued_at) or now(),
        scanned_at=_aware(r.scanned_at),
        database_updated_at=_aware(r.database_updated_at),
        inventory=_loads(r.inventory, None),
        findings=_loads(r.findings, []),
        summary=_loads(r.summary, {}),
        error=r.error,
        scanner=r.scanner,
    )


def finding_json(f: Any) -> dict[str, Any]:
    """A matcher's Finding (a dataclass, a pydantic model or a dict) as JSON-ready data."""
    if dataclasses.is_dataclass(f) and not isinstance(f, type):
        data = dataclasses.asdict(f)
    elif hasattr(f, "model_dump"):
        data = f.model_dump(mode="json")
    elif isinstance(f, Mapping):
        data = dict(f)
    else:
        raise TypeError(f"a finding of type {type(f).__name__}")
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))  # tuples → lists, dates → text
    return out


def summarize(findings: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        sev = str(f.get("severity") or "unknown").lower()
        counts[sev if sev in counts else "unknown"] += 1
    return counts


async def get_result(conn: AsyncConnection, digest: str) -> Result | None:
    row = (
        await conn.execute(sa.select(scan_results).where(scan_results.c.digest == digest))
    ).first()
    return _row_result(row) if row is not None else None


async def get_results(conn: AsyncConnection, digests: list[str]) -> dict[str, Result]:
    if not digests:
        return {}
    rows = await conn.execute(sa.select(scan_results).where(scan_results.c.digest.in_(digests)))
    return {r.digest: _row_result(r) for r in rows}


async def on_push_setting(conn: AsyncConnection, namespace: str) -> bool | None:
    return (
        await conn.execute(
            sa.select(scan_settings.c.on_push).where(scan_settings.c.namespace == namespace)
        )
    ).scalar()


_on_push_settings = ConfigCache("scan_settings", on_push_setting)


async def set_on_push(conn: AsyncConnection, namespace: str, on_push: bool | None) -> None:
    await conn.execute(sa.delete(scan_settings).where(scan_settings.c.namespace == namespace))
    if on_push is not None:
        await conn.execute(
            sa.insert(scan_settings).values(namespace=namespace, on_push=on_push, updated_at=now())
        )


_SCAN_STATUS = sa.select(scan_results.c.status).where(
    scan_results.c.digest == sa.bindparam("digest")
)


async def queue_scan(conn: AsyncConnection, repository: str, digest: str, *, force: bool) -> bool:
    """Mark *digest* pending and queue its job (unless a job for it is already queued or
    running). Without *force*, a digest that has a result already is left alone (content is
    immutable: the same image pushed under another tag needs no new inventory). Returns whether
    a scan was queued."""
    existing = (await conn.execute(_SCAN_STATUS, {"digest": digest})).scalar()
    if existing is not None and not force and existing != "failed":
        return False
    values = {"status": "pending", "repository": repository, "queued_at": now(), "error": None}
    if existing is None:
        stmt = core_q.insert_ignore_stmt(conn, scan_results, ["digest"])
        await conn.execute(stmt, {"digest": digest, **values})
    elif existing not in ("pending", "running"):
        await conn.execute(
            sa.update(scan_results).where(scan_results.c.digest == digest).values(**values)
        )
    await job_queries.enqueue(
        conn, SCAN_JOB, {"repository": repository, "digest": digest}, dedupe_key=digest
    )
    return True


def namespace_of(repository: str) -> str:
    return repository.split("/", 1)[0]


def scannable(media_type: str, artifact_type: str | None, subject: str | None) -> bool:
    """Decided from the push event alone: images and indexes, not referrers or artifacts (the
    event's artifact type falls back to the config media type, an image config for images)."""
    if subject is not None or (artifact_type is not None and artifact_type not in IMAGE_CONFIGS):
        return False
    return media_type in mt.IMAGE_MANIFESTS or media_type in mt.INDEXES


class ScanService:
    def __init__(self, ctx: ServiceContext, config: Config, services: dict[str, Any]) -> None:
        self.ctx = ctx
        self.config = config
        self.services = services  # the runtime's: the matcher may be registered after us
        self.catalog: Any = None  # with access control on: the API's authorization
        self.access: Any = None
        sc = config.scanning
        self.limits = Limits(
            max_member=sc.max_file_mib << 20, max_layer_bytes=sc.max_layer_gib << 30
        )
        self.layers_analyzed = 0  # layers read from storage by this process (cache misses)
        # Analyses under way, by layer digest: scans that need the same uncached layer at once
        # (four images on one new base, pushed together) wait for one reading of it.
        self._analyzing: dict[str, asyncio.Task[tuple[LayerRecord, bool]]] = {}
        # digests whose result row the claim hook (mark_running) set running, for their jobs
        self._marked_running: set[str] = set()
        # organizations scanned by an external adapter (the wiring gives it the token service)
        self.external = ExternalScanners(ctx, config, None)

    # --- queueing ---------------------------------------------------------------------------

    async def on_push(self, conn: AsyncConnection, event: ManifestPushed) -> None:
        if not scannable(event.media_type, event.artifact_type, event.subject):
            return
        override = await _on_push_settings.get(conn, namespace_of(event.repository))
        enabled = self.config.scanning.on_push if override is None else override
        if enabled:
            await queue_scan(conn, event.repository, event.digest, force=False)

    async def request(self, repository: str, digest: str) -> None:
        async with self.ctx.write_engine.begin() as conn:
            await queue_scan(conn, repository, digest, force=True)

    # --- the job ----------------------------------------------------------------------------

    async def run_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        repository, digest = payload.get("repository"), payload.get("digest")
        if not isinstance(repository, str) or not isinstance(digest, str):
            raise ValueError("payload needs repository and digest strings")
        marked = digest in self._marked_running
        self._marked_running.discard(digest)
        status, analyzed = await self._scan(repository, digest, marked=marked)
        return {"status": status, "layers_analyzed": analyzed}

    async def mark_running(self, conn: AsyncConnection, claimed: list[job_queries.JobRow]) -> None:
        """The job runner's claim hook: the claimed scans' result rows say ``running`` in the
        claim's own transaction (one write transaction less per scan). A digest without a
        result row (a job queued by hand) is left to the job, which writes the row itself."""
        digests = [d for d in (j.payload.get("digest") for j in claimed) if isinstance(d, str)]
        if not digests:
            return
        res = await conn.execute(
            sa.update(scan_results)
            .where(scan_results.c.digest.in_(digests))
            .values(status="running", error=None)
            .returning(scan_results.c.digest)
        )
        self._marked_running.update(res.scalars())

    async def _set(
        self,
        digest: str,
        repository: str,
        event: ScanCompleted | None = None,
        *,
        defer: bool = False,
        **values: Any,
    ) -> None:
        """Write the result row; *event* (a final state) is published in the same transaction,
        so its subscribers' rows (webhook deliveries) commit with the result or not at all.
        With *defer*, inside a job, the row is written in the transaction that records the
        job's success (jobs/runner.py ``on_success``): result and job state commit together."""

        async def write(conn: AsyncConnection) -> None:
            res = await conn.execute(
                sa.update(scan_results).where(scan_results.c.digest == digest).values(**values)
            )
            if res.rowcount == 0:
                defaults = {"status": "pending", "repository": repository, "queued_at": now()}
                stmt = _insert(conn, scan_results).values(digest=digest, **{**defaults, **values})
                await conn.execute(stmt.on_conflict_do_nothing(index_elements=["digest"]))
            if event is not None:
                await self.ctx.events.publish(conn, event)

        if defer:
            from ..jobs.runner import on_success

            if on_success(write):
                return
        async with self.ctx.write_engine.begin() as conn:
            await write(conn)

    async def scan(self, repository: str, digest: str) -> str:
        """Scan one manifest now and store its result; returns the status stored."""
        return (await self._scan(repository, digest))[0]

    async def _scan(self, repository: str, digest: str, *, marked: bool = False) -> tuple[str, int]:
        """(status, layers read from storage rather than the cache). *marked*: the result row
        says ``running`` already (the job's claim wrote it)."""
        async with self.ctx.engine.connect() as conn:
            row = await core_q.manifest_by_digest(conn, repository, digest)
        if row is None:
            await self._set(digest, repository, status="failed", error="manifest not found")
            return "failed", 0
        if not marked:
            await self._set(digest, repository, status="running", error=None)
        try:
            doc = json.loads(row.payload)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            await self._finish(digest, repository, "failed", error="manifest is not JSON")
            return "failed", 0
        media_type = row.media_type
        if media_type in mt.INDEXES:
            children = [
                d["digest"]
                for d in doc.get("manifests", [])
                if isinstance(d, dict) and isinstance(d.get("digest"), str)
            ]
            async with self.ctx.write_engine.begin() as conn:
                for child in children:
                    await queue_scan(conn, repository, child, force=False)
            await self._finish(digest, repository, "done", inventory={"children": children})
            return "done", 0
        cfg = doc.get("config")
        config: dict[str, Any] = cfg if isinstance(cfg, dict) else {}
        layers = [d for d in doc.get("layers", []) if isinstance(d, dict)]
        if (
            media_type not in mt.IMAGE_MANIFESTS
            or config.get("mediaType") not in IMAGE_CONFIGS
            or doc.get("artifactType")
            or any(d.get("mediaType") not in LAYER_TYPES for d in layers)
        ):
            await self._finish(digest, repository, "unsupported")
            return "unsupported", 0
        setting = await self.external.setting(namespace_of(repository))
        if setting is not None:
            return await self._external(setting, repository, digest, media_type), 0
        try:
            inventory, analyzed = await self.counted_inventory(
                [str(d.get("digest", "")) for d in layers]
            )
        except StorageError as e:
            await self._finish(
                digest,
                repository,
                "failed",
                error=f"storage: {e}"[:1000],
                announce=False,
                immediate=True,  # visible while the job waits for its retry
            )
            raise  # transient: the job queue retries
        except Exception as e:  # noqa: BLE001 - a bad image fails its scan, not the node
            log.exception("scan of %s failed", digest)
            await self._finish(
                digest, repository, "failed", error=f"{type(e).__name__}: {e}"[:1000]
            )
            return "failed", 0
        findings: list[dict[str, Any]] = []
        db_updated: datetime | None = None
        matcher = self.services.get("scan.matcher")
        if matcher is not None:
            findings = [finding_json(f) for f in await matcher.match(inventory)]
            stamp = getattr(matcher, "database_updated_at", None)
            if callable(stamp):
                stamp = await stamp()
            db_updated = stamp if isinstance(stamp, datetime) else None
        await self._finish(
            digest,
            repository,
            "done",
            inventory=inventory_json(inventory),
            findings=findings,
            database_updated_at=db_updated,
        )
        if self.config.scanning.attach_sbom:
            from .attach import attach_sboms

            try:
                result = await self.result(digest)
                when = result.scanned_at if result is not None else None
                await attach_sboms(
                    self.ctx, repository, digest, media_type, len(row.payload),
                    inventory_json(inventory), when,
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - the scan itself succeeded
                log.exception("attaching the SBOMs of %s to %s failed", digest, repository)
        return "done", analyzed

    async def _external(
        self, setting: ScannerSetting, repository: str, digest: str, media_type: str
    ) -> str:
        """Scan through the organization's external adapter (moorage/scan/external.py); the
        adapter's request id is the job's checkpoint, so a resumed job polls it again."""
        from ..jobs.runner import checkpoint, report_progress
        from .adapter import AdapterError

        async def progress(point: dict[str, Any]) -> None:
            await report_progress(0, 1, "submitted to the scanner adapter", checkpoint=point)

        try:
            found, label, db_updated = await self.external.scan(
                setting, repository, digest, media_type, resume=checkpoint(), progress=progress
            )
        except AdapterError as exc:
            await self._finish(
                digest, repository, "failed", error=exc.message, immediate=exc.transient
            )
            if exc.transient:
                raise  # the job queue retries (the checkpoint keeps the adapter's request)
            return "failed"
        except Exception as e:  # noqa: BLE001 - an adapter's answer fails its scan, not the node
            log.exception("external scan of %s failed", digest)
            await self._finish(
                digest, repository, "failed", error=f"{type(e).__name__}: {e}"[:1000]
            )
            return "failed"
        await self._finish(
            digest,
            repository,
            "done",
            findings=[f.to_dict() for f in found],
            database_updated_at=db_updated,
            scanner=label,
        )
        return "done"

    async def _finish(
        self,
        digest: str,
        repository: str,
        status: str,
        *,
        inventory: dict[str, Any] | None = None,
        findings: list[dict[str, Any]] | None = None,
        database_updated_at: datetime | None = None,
        error: str | None = None,
        scanner: str | None = None,
        announce: bool = True,
        immediate: bool = False,
    ) -> None:
        """Record a final result and publish :class:`ScanCompleted` with it (not for a failure
        the job queue retries: *announce* False, the retry announces its own outcome).

        Inside a job the row is written with the job's success (one transaction for both),
        unless *immediate* (the job is about to fail and retry: the row shows why meanwhile)
        or SBOMs are attached next (they read the stored result)."""
        found = findings or []
        summary = summarize(found)
        scanned_at = now()
        event = None
        if announce and self.ctx.events.wants(ScanCompleted):
            event = ScanCompleted(
                repository,
                digest,
                status,
                tuple(summary.items()),
                scanned_at,
                database_updated_at,
            )
        defer = not immediate and not (status == "done" and self.config.scanning.attach_sbom)
        await self._set(
            digest,
            repository,
            event,
            defer=defer,
            status=status,
            scanned_at=scanned_at,
            database_updated_at=database_updated_at,
            inventory=json.dumps(inventory) if inventory is not None else None,
            findings=json.dumps(found),
            summary=json.dumps(summary),
            error=error,
            scanner=scanner,
        )

    async def counted_inventory(self, layer_digests: list[str]) -> tuple[Inventory, int]:
        """The image's inventory, and how many of its layers this call read from storage.

        The cached records of every layer come in one read (a small image's layers are usually
        all cached: one query, not one connection per layer); misses are analyzed in order, each
        once per process however many scans want it at the same time (the scan that started the
        reading counts it)."""
        known = await self._cached_records(layer_digests)
        records: list[tuple[str, LayerRecord]] = []
        analyzed = 0
        for digest in layer_digests:
            record = known.get(digest)
            if record is None:  # a layer listed twice is analyzed once
                task = self._analyzing.get(digest)
                mine = task is None
                if task is None:
                    task = self._analyzing[digest] = asyncio.ensure_future(self._analyze(digest))
                    task.add_done_callback(partial(self._analyzed, digest))
                # Shielded: a cancelled scan leaves the reading to the others waiting for it.
                fresh, read = await asyncio.shield(task)
                record = known[digest] = fresh
                analyzed += int(mine and read)
            records.append((digest, record))
        return merge(records), analyzed

    def _analyzed(self, digest: str, _task: asyncio.Future[Any]) -> None:
        self._analyzing.pop(digest, None)

    async def _cached_records(self, digests: list[str]) -> dict[str, LayerRecord]:
        if not digests:
            return {}
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(scan_layers.c.digest, scan_layers.c.version, scan_layers.c.record).where(
                    scan_layers.c.digest.in_(list(dict.fromkeys(digests)))
                )
            )
        out: dict[str, LayerRecord] = {}
        for row in rows:
            record = _loads(row.record, None) if row.version == RECORD_VERSION else None
            if isinstance(record, dict):
                out[row.digest] = record
        return out

    async def _analyze(self, digest: str) -> tuple[LayerRecord, bool]:
        """A layer the cache does not hold: read from storage, analyzed and cached; and
        whether it was read (False: not a digest, or missing from storage)."""
        algorithm, _, hex_ = digest.partition(":")
        if (
            algorithm not in ("sha256", "sha512")
            or not hex_
            or not all(c in "0123456789abcdef" for c in hex_)
        ):
            return {"v": RECORD_VERSION, "files": {}, "removed": [], "opaque": [],
                    "errors": [f"layer {digest[:80]}: not a digest"]}, False  # fmt: skip
        # A scan whose cache read came just before another's reading of this layer committed
        # finds its record now, instead of reading the layer a second time.
        cached = (await self._cached_records([digest])).get(digest)
        if cached is not None:
            return cached, False
        try:
            record = await analyze_layer(
                self.ctx.storage.reader(blob_path(algorithm, hex_)), self.limits
            )
        except PathNotFound:
            record = {"v": RECORD_VERSION, "files": {}, "removed": [], "opaque": [],
                      "errors": [f"layer {digest}: blob missing from storage"]}  # fmt: skip
            return record, False  # not cached: it may be there later
        self.layers_analyzed += 1
        text = json.dumps(record, separators=(",", ":"))
        async with self.ctx.write_engine.begin() as conn:
            await conn.execute(sa.delete(scan_layers).where(
                scan_layers.c.digest == digest, scan_layers.c.version != RECORD_VERSION
            ))  # fmt: skip
            stmt = _insert(conn, scan_layers).values(
                digest=digest, version=RECORD_VERSION, record=text, analyzed_at=now()
            )
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=["digest"]))
        return record, True

    async def result(self, digest: str) -> Result | None:
        async with self.ctx.engine.connect() as conn:
            return await get_result(conn, digest)

    async def results(self, digests: list[str]) -> dict[str, Result]:
        async with self.ctx.engine.connect() as conn:
            return await get_results(conn, digests)
