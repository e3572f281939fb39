"""Queries on the vulnerability tables (the only SQL of the vulndb package)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .osv import Record
from .tables import vulndb_affected, vulndb_records, vulndb_sources


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


# --- sources ----------------------------------------------------------------------------------


@dataclass
class SourceRow:
    id: int
    name: str
    kind: str
    imported_at: datetime | None
    changed_at: datetime | None
    records: int
    last_result: dict[str, Any] | None
    etag: str | None
    last_modified: str | None
    sha256: str | None
    error: str | None


def _source(r: Any) -> SourceRow:
    return SourceRow(
        id=r.id,
        name=r.name,
        kind=r.kind,
        imported_at=_utc(r.imported_at),
        changed_at=_utc(r.changed_at),
        records=r.records,
        last_result=json.loads(r.last_result) if r.last_result else None,
        etag=r.etag,
        last_modified=r.last_modified,
        sha256=r.sha256,
        error=r.error,
    )


async def source(conn: AsyncConnection, name: str, kind: str) -> SourceRow:
    """The source named *name*, created if new."""
    row = (
        await conn.execute(sa.select(vulndb_sources).where(vulndb_sources.c.name == name))
    ).first()
    if row is None:
        await conn.execute(sa.insert(vulndb_sources).values(name=name, kind=kind, records=0))
        row = (
            await conn.execute(sa.select(vulndb_sources).where(vulndb_sources.c.name == name))
        ).one()
    return _source(row)


async def sources(conn: AsyncConnection) -> list[SourceRow]:
    rows = await conn.execute(sa.select(vulndb_sources).order_by(vulndb_sources.c.id))
    return [_source(r) for r in rows]


async def finish_source(
    conn: AsyncConnection,
    source_id: int,
    result: dict[str, Any],
    *,
    changed: bool,
    etag: str | None = None,
    last_modified: str | None = None,
    sha256: str | None = None,
    error: str | None = None,
) -> None:
    t = now()
    count = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(vulndb_records)
        .where(vulndb_records.c.source_id == source_id)
    )
    values: dict[str, Any] = {
        "imported_at": t,
        "records": int(count or 0),
        "last_result": json.dumps(result, sort_keys=True),
        "error": error[:1024] if error else None,
    }
    if changed:
        values["changed_at"] = t
    if etag is not None or last_modified is not None or sha256 is not None:
        values.update(etag=etag, last_modified=last_modified, sha256=sha256)
    await conn.execute(
        sa.update(vulndb_sources).where(vulndb_sources.c.id == source_id).values(**values)
    )


async def fail_source(conn: AsyncConnection, source_id: int, error: str) -> None:
    await conn.execute(
        sa.update(vulndb_sources)
        .where(vulndb_sources.c.id == source_id)
        .values(error=error[:1024], imported_at=now())
    )


# --- records ----------------------------------------------------------------------------------


async def modified_of(conn: AsyncConnection, osv_ids: list[str]) -> dict[str, datetime]:
    """The stored ``modified`` of those of *osv_ids* held."""
    out: dict[str, datetime] = {}
    ids = sorted(set(osv_ids))
    for i in range(0, len(ids), 500):
        result = await conn.execute(
            sa.select(vulndb_records.c.osv_id, vulndb_records.c.modified).where(
                vulndb_records.c.osv_id.in_(ids[i : i + 500])
            )
        )
        for osv_id, modified in result.all():
            out[osv_id] = _utc(modified) or now()
    return out


async def upsert(
    conn: AsyncConnection, source_id: int, batch: list[tuple[Record, bytes]]
) -> dict[str, int]:
    """Store the records of *batch* that are new or more recently modified than the stored
    copy; a withdrawn record keeps its row and loses its index rows. Counts by outcome."""
    counts = {"added": 0, "updated": 0, "unchanged": 0, "withdrawn": 0}
    if not batch:
        return counts
    ids = list({r.osv_id for r, _ in batch})
    existing: dict[str, tuple[int, datetime]] = {}
    for i in range(0, len(ids), 500):
        rows = await conn.execute(
            sa.select(
                vulndb_records.c.osv_id, vulndb_records.c.id, vulndb_records.c.modified
            ).where(vulndb_records.c.osv_id.in_(ids[i : i + 500]))
        )
        for r in rows:
            existing[r.osv_id] = (r.id, _utc(r.modified) or now())
    t = now()
    new_rows: list[tuple[Record, dict[str, Any]]] = []
    changed: list[tuple[Record, int]] = []
    for rec, raw in batch:
        old = existing.get(rec.osv_id)
        if old is not None and (old[1] >= rec.modified or old[0] < 0):  # < 0: added above
            counts["unchanged"] += 1
            continue
        values = {
            "osv_id": rec.osv_id,
            "source_id": source_id,
            "modified": rec.modified,
            "published": rec.published,
            "withdrawn": rec.withdrawn,
            "imported_at": t,
            "summary": rec.summary[:512],
            "aliases": json.dumps(rec.aliases),
            "upstream": json.dumps(rec.upstream),
            "links": json.dumps(rec.links),
            "severity": rec.severity.level,
            "cvss_score": rec.severity.score,
            "cvss_vector": rec.severity.vector[:256],
            "ecosystems": ",".join(sorted({a.data["e"] for a in rec.affected}))[:1024],
            "raw": zlib.compress(raw, 6),
        }
        if old is None:
            new_rows.append((rec, values))
            existing[rec.osv_id] = (-1, rec.modified)  # a duplicate later in the batch: unchanged
            counts["added"] += 1
        else:
            rid = old[0]
            await conn.execute(
                sa.update(vulndb_records).where(vulndb_records.c.id == rid).values(**values)
            )
            await conn.execute(sa.delete(vulndb_affected).where(vulndb_affected.c.record_id == rid))
            existing[rec.osv_id] = (rid, rec.modified)
            changed.append((rec, rid))
            counts["updated"] += 1
    if new_rows:  # one multi-row insert, then the new ids in one query
        await conn.execute(sa.insert(vulndb_records), [v for _, v in new_rows])
        new_ids = [r.osv_id for r, _ in new_rows]
        rows = await conn.execute(
            sa.select(vulndb_records.c.osv_id, vulndb_records.c.id).where(
                vulndb_records.c.osv_id.in_(new_ids)
            )
        )
        ids_of = {r.osv_id: r.id for r in rows}
        changed.extend((rec, ids_of[rec.osv_id]) for rec, _ in new_rows)
    index_rows: list[dict[str, Any]] = []
    for rec, rid in changed:
        if rec.withdrawn is not None:
            counts["withdrawn"] += 1
            continue
        for a in rec.affected:
            index_rows.append(
                {
                    "record_id": rid,
                    "ecosystem": a.ecosystem,
                    "name": a.name,
                    "data": json.dumps(a.data, separators=(",", ":")),
                }
            )
    if index_rows:
        await conn.execute(sa.insert(vulndb_affected), index_rows)
    return counts


@dataclass(frozen=True, slots=True)
class Facts:
    """What a finding shows of its record."""

    osv_id: str
    summary: str
    aliases: str
    upstream: str
    links: str
    severity: str
    cvss_score: float | None
    cvss_vector: str


async def lookup(
    conn: AsyncConnection, ecosystem: str, names: Iterable[str]
) -> list[tuple[int, str, str]]:
    """Every index row of *ecosystem* for *names* (normalized): (record id, name, data). One
    fetch per 500 names (row by row, an async driver pays a thread hop per row)."""
    wanted = sorted(set(names))
    out: list[tuple[int, str, str]] = []
    a = vulndb_affected
    for i in range(0, len(wanted), 500):
        result = await conn.execute(
            sa.select(a.c.record_id, a.c.name, a.c.data).where(
                a.c.ecosystem == ecosystem, a.c.name.in_(wanted[i : i + 500])
            )
        )
        out.extend((int(r[0]), str(r[1]), str(r[2])) for r in result.all())
    return out


async def facts(conn: AsyncConnection, record_ids: Iterable[int]) -> dict[int, Facts]:
    """The records' facts, by id (only those a finding needs)."""
    ids = sorted(set(record_ids))
    r = vulndb_records
    out: dict[int, Facts] = {}
    for i in range(0, len(ids), 500):
        result = await conn.execute(
            sa.select(
                r.c.id, r.c.osv_id, r.c.summary, r.c.aliases, r.c.upstream, r.c.links,
                r.c.severity, r.c.cvss_score, r.c.cvss_vector,
            ).where(r.c.id.in_(ids[i : i + 500]))
        )  # fmt: skip
        for row in result.all():
            out[int(row[0])] = Facts(*row[1:])
    return out


async def raw_record(conn: AsyncConnection, osv_id: str) -> dict[str, Any] | None:
    blob = await conn.scalar(
        sa.select(vulndb_records.c.raw).where(vulndb_records.c.osv_id == osv_id)
    )
    if blob is None:
        return None
    doc: dict[str, Any] = json.loads(zlib.decompress(blob))
    return doc


async def totals(conn: AsyncConnection) -> dict[str, Any]:
    """Record counts (all, withdrawn), records per ecosystem key, and when the data last
    changed."""
    total = await conn.scalar(sa.select(sa.func.count()).select_from(vulndb_records))
    withdrawn = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(vulndb_records)
        .where(vulndb_records.c.withdrawn.is_not(None))
    )
    per = await conn.execute(
        sa.select(
            vulndb_affected.c.ecosystem, sa.func.count(sa.distinct(vulndb_affected.c.record_id))
        )
        .group_by(vulndb_affected.c.ecosystem)
        .order_by(vulndb_affected.c.ecosystem)
    )
    changed = await conn.scalar(sa.select(sa.func.max(vulndb_sources.c.changed_at)))
    return {
        "records": int(total or 0),
        "withdrawn": int(withdrawn or 0),
        "ecosystems": {e: int(n) for e, n in per},
        "updated_at": _utc(changed),
    }


async def updated_at(conn: AsyncConnection) -> datetime | None:
    return _utc(await conn.scalar(sa.select(sa.func.max(vulndb_sources.c.changed_at))))


# --- vulnerability policies -------------------------------------------------------------------


async def policies(conn: AsyncConnection) -> list[Any]:
    from .tables import vulnerability_policies as vp

    return list(await conn.execute(sa.select(vp).order_by(vp.c.target)))


async def put_policy(
    conn: AsyncConnection,
    *,
    scope: str,
    target: str,
    block_severity: str,
    fixable_only: bool,
    block_unscanned: bool,
    allow: str,
    actor: str,
) -> None:
    from .tables import vulnerability_policies as vp

    values = {
        "scope": scope,
        "block_severity": block_severity,
        "fixable_only": fixable_only,
        "block_unscanned": block_unscanned,
        "allow": allow,
        "updated_at": now(),
        "updated_by": actor[:255],
    }
    done = await conn.execute(sa.update(vp).where(vp.c.target == target).values(**values))
    if done.rowcount == 0:
        await conn.execute(sa.insert(vp).values(target=target, **values))


async def delete_policy(conn: AsyncConnection, target: str) -> bool:
    from .tables import vulnerability_policies as vp

    done = await conn.execute(sa.delete(vp).where(vp.c.target == target))
    return bool(done.rowcount)


async def subject_of(
    conn: AsyncConnection, repository: str, digest: str
) -> tuple[bool, str | None]:
    """(found, subject digest) of a manifest: referrers (signatures, SBOMs, attestations) have a
    subject."""
    from ...db.schema import manifests, repositories

    row = (
        await conn.execute(
            sa.select(manifests.c.subject_digest)
            .select_from(
                manifests.join(repositories, repositories.c.id == manifests.c.repository_id)
            )
            .where(repositories.c.name == repository, manifests.c.digest == digest)
        )
    ).first()
    return (row is not None, row.subject_digest if row is not None else None)
