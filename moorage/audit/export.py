"""Export as JSON Lines or CSV: streamed from one snapshot, in constant memory; and read back.

A full export (no filters) is itself verifiable: ``verify_export(parse_jsonl(f))`` re-checks
every hash and link, anchored at the first record's ``prev_hash``.

CSV cells are escaped against formula injection (OWASP): a cell a spreadsheet would evaluate
(starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) is written with a leading
``'``. A cell that itself starts with ``'`` gets one too, so that ``parse_csv`` can undo the
escaping exactly (drop one leading ``'``) and the records still hash as they were recorded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import AsyncGenerator, Iterable, Iterator
from typing import TextIO

from sqlalchemy.ext.asyncio import AsyncEngine

from . import store
from .events import FORMATS, AuditRecord, ChainVerifier, ExportFormat, VerifyResult, format_time
from .store import AuditFilter

CSV_FIELDS = (
    "id",
    "time",
    "actor",
    "actor_type",
    "client_addr",
    "user_agent",
    "action",
    "repository",
    "tag",
    "digest",
    "result",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)
MEDIA_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv"}
_CHUNK = 64 * 1024


def jsonl_line(rec: AuditRecord) -> str:
    return json.dumps(rec.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"


# What makes a spreadsheet read a cell as a formula, plus the escape character itself.
_CSV_ESCAPE_FIRST = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value: str) -> str:
    return "'" + value if value.startswith(_CSV_ESCAPE_FIRST) else value


def csv_uncell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def csv_row(rec: AuditRecord) -> list[str]:
    cells = [
        str(rec.id),
        format_time(rec.time),
        rec.actor,
        rec.actor_type,
        rec.client_addr or "",
        rec.user_agent or "",
        rec.action,
        rec.repository or "",
        rec.tag or "",
        rec.digest or "",
        rec.result,
        rec.request_id or "",
        rec.details_json,
        rec.prev_hash,
        rec.hash,
    ]
    return [csv_cell(c) for c in cells]


async def iter_export(
    engine: AsyncEngine, fmt: ExportFormat, filters: AuditFilter | None = None
) -> AsyncGenerator[str, None]:
    """Text chunks of the export (oldest first), e.g. for a streaming HTTP response."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (jsonl or csv)")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_FIELDS)
    async with contextlib.aclosing(store.iter_records(engine, filters, order="asc")) as records:
        async for rec in records:
            if writer is not None:
                writer.writerow(csv_row(rec))
            else:
                buf.write(jsonl_line(rec))
            if buf.tell() >= _CHUNK:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    if buf.tell():
        yield buf.getvalue()


async def export_to(
    engine: AsyncEngine, out: TextIO, fmt: ExportFormat, filters: AuditFilter | None = None
) -> None:
    async with contextlib.aclosing(iter_export(engine, fmt, filters)) as chunks:
        async for chunk in chunks:
            out.write(chunk)


def parse_jsonl(lines: Iterable[str]) -> Iterator[AuditRecord]:
    for line in lines:
        if line.strip():
            yield AuditRecord.from_dict(json.loads(line))


def parse_csv(lines: Iterable[str]) -> Iterator[AuditRecord]:
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != CSV_FIELDS:
        raise ValueError(f"not a Moorage audit CSV export (columns {reader.fieldnames})")
    for row in reader:
        yield AuditRecord.from_dict(
            {k: csv_uncell(v) if isinstance(v, str) else v for k, v in row.items()}
        )


def verify_export(
    records: Iterable[AuditRecord], after_id: int | None = None, after_hash: str | None = None
) -> VerifyResult:
    """Check the chain of an unfiltered export; by default it is anchored at its first record."""
    checker: ChainVerifier | None = None
    for rec in records:
        if checker is None:
            checker = ChainVerifier(
                rec.id - 1 if after_id is None else after_id,
                rec.prev_hash if after_hash is None else after_hash,
            )
        if not checker.feed(rec):
            break
    return checker.finish() if checker is not None else VerifyResult(True, 0)
