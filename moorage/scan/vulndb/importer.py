"""``moorage vulndb import PATH|URL`` and the scheduled refresh: OSV JSON from osv.dev's
per-ecosystem ``all.zip`` exports (a file or a URL) or a directory searched recursively.

Incremental: a record is written only when it is new or its ``modified`` is later than the
stored copy's; a URL is fetched with the validators of the last fetch (``If-None-Match``,
``If-Modified-Since``) and a download whose bytes did not change (same sha256) is not read
again. Work goes in batches of 500 records, one short write transaction each, so a server
running on the same database keeps serving; parsing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ...db.engine import writer
from . import store
from .osv import Record, RecordError, parse_record, parse_time

BATCH = 500
MAX_MEMBER = 64 * 1024 * 1024  # one OSV record; the largest real ones are a few MB
MAX_DOWNLOAD = 4 * 1024 * 1024 * 1024


class ImportError_(Exception):
    """The source could not be read at all (missing path, HTTP error, not a zip)."""


@dataclass
class ImportResult:
    source: str
    kind: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    invalid: int = 0
    files: int = 0
    not_modified: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "withdrawn": self.withdrawn,
            "invalid": self.invalid,
            "files": self.files,
            "not_modified": self.not_modified,
            "errors": self.errors[:20],
        }


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _documents_of_dir(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*.json")):
        if path.is_file() and not path.is_symlink():
            if path.stat().st_size > MAX_MEMBER:
                yield str(path), b""
                continue
            yield str(path), path.read_bytes()


def _documents_of_zip(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportError_(f"{path}: not a zip archive ({exc})") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            if info.file_size > MAX_MEMBER:
                yield info.filename, b""
                continue
            with zf.open(info) as f:
                data = f.read(MAX_MEMBER + 1)
            yield info.filename, data if len(data) <= MAX_MEMBER else b""


def _documents_of_file(path: Path) -> Iterator[tuple[str, bytes]]:
    yield str(path), path.read_bytes() if path.stat().st_size <= MAX_MEMBER else b""


def _classify(spec: str) -> tuple[str, str]:
    """(name, kind) of a local source."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ImportError_(f"{spec}: no such file or directory")
    kind = "directory" if path.is_dir() else ("zip" if zipfile.is_zipfile(path) else "file")
    return str(path.resolve()), kind


Decoded = tuple[str, Any, str, datetime]  # file name, document, id, modified


def _decode(docs: list[tuple[str, bytes]]) -> tuple[list[Decoded], list[str]]:
    """JSON documents with their id and ``modified`` (enough to skip unchanged records without
    the full parse)."""
    ok: list[Decoded] = []
    bad: list[str] = []
    for name, data in docs:
        if not data:
            bad.append(f"{name}: too large or empty")
            continue
        try:
            doc = json.loads(data)
        except ValueError as exc:
            bad.append(f"{name}: {str(exc)[:200]}")
            continue
        # an export may hold a list of records in one file
        for d in doc if isinstance(doc, list) else [doc]:
            osv_id = d.get("id") if isinstance(d, dict) else None
            modified = parse_time(d.get("modified")) if isinstance(d, dict) else None
            if not isinstance(osv_id, str) or not osv_id or len(osv_id) > 128:
                bad.append(f"{name}: no id")
            elif modified is None:
                bad.append(f"{name}: {osv_id}: no valid 'modified'")
            else:
                ok.append((name, d, osv_id, modified))
    return ok, bad


def _parse(docs: list[Decoded]) -> tuple[list[tuple[Record, bytes]], list[str]]:
    ok: list[tuple[Record, bytes]] = []
    bad: list[str] = []
    for name, d, _osv_id, _modified in docs:
        try:
            rec = parse_record(d)
            ok.append((rec, json.dumps(d, separators=(",", ":")).encode()))
        except (ValueError, RecordError) as exc:
            bad.append(f"{name}: {str(exc)[:200]}")
    return ok, bad


async def _load(
    engine: AsyncEngine, source_id: int, docs: Iterator[tuple[str, bytes]], result: ImportResult
) -> None:
    w = writer(engine)

    def take() -> list[tuple[str, bytes]]:
        out = []
        for item in docs:
            out.append(item)
            if len(out) >= BATCH:
                break
        return out

    while True:
        chunk = await asyncio.to_thread(take)
        if not chunk:
            return
        result.files += len(chunk)
        decoded, bad = await asyncio.to_thread(_decode, chunk)
        async with engine.connect() as conn:
            stored = await store.modified_of(conn, [d[2] for d in decoded])
        todo = [d for d in decoded if d[2] not in stored or stored[d[2]] < d[3]]
        result.unchanged += len(decoded) - len(todo)
        records, bad_records = await asyncio.to_thread(_parse, todo)
        bad += bad_records
        result.invalid += len(bad)
        result.errors.extend(bad[: max(0, 20 - len(result.errors))])
        if not records:
            continue
        async with w.begin() as conn:
            counts = await store.upsert(conn, source_id, records)
        result.added += counts["added"]
        result.updated += counts["updated"]
        result.unchanged += counts["unchanged"]
        result.withdrawn += counts["withdrawn"]


async def _download(
    url: str, src: store.SourceRow, http_timeout: float, dest: Path
) -> tuple[bool, str | None, str | None, str]:
    """Fetch *url* into *dest*: (modified?, etag, last-modified, sha256)."""
    import httpx

    headers = {}
    if src.etag:
        headers["If-None-Match"] = src.etag
    if src.last_modified:
        headers["If-Modified-Since"] = src.last_modified
    digest = hashlib.sha256()
    size = 0
    try:
        async with httpx.AsyncClient(timeout=http_timeout, follow_redirects=True) as client:
            async with client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 304:
                    return False, src.etag, src.last_modified, src.sha256 or ""
                if resp.status_code != 200:
                    raise ImportError_(f"{url}: HTTP {resp.status_code}")
                with dest.open("wb") as f:
                    async for chunk in resp.aiter_bytes(1 << 20):
                        size += len(chunk)
                        if size > MAX_DOWNLOAD:
                            raise ImportError_(f"{url}: larger than {MAX_DOWNLOAD} bytes")
                        digest.update(chunk)
                        f.write(chunk)
                etag = resp.headers.get("etag")
                last_modified = resp.headers.get("last-modified")
    except httpx.HTTPError as exc:
        raise ImportError_(f"{url}: {exc.__class__.__name__}: {exc}") from None
    sha = digest.hexdigest()
    return sha != src.sha256, etag, last_modified, sha


async def import_source(
    engine: AsyncEngine, spec: str, *, http_timeout: float = 300.0
) -> ImportResult:
    """Import one source: a URL of a zip, a zip file, a directory, or one JSON file."""
    if is_url(spec):
        kind = "url"
        name = spec
    else:
        name, kind = await asyncio.to_thread(_classify, spec)
    async with writer(engine).begin() as conn:
        src = await store.source(conn, name, kind)
    result = ImportResult(name, kind)
    etag = last_modified = sha = None
    try:
        if kind == "url":
            fd, tmp = await asyncio.to_thread(
                tempfile.mkstemp, prefix="moorage-osv-", suffix=".zip"
            )
            os.close(fd)
            try:
                modified, etag, last_modified, sha = await _download(
                    spec, src, http_timeout, Path(tmp)
                )
                if not modified:
                    result.not_modified = True
                else:
                    await _load(engine, src.id, _documents_of_zip(Path(tmp)), result)
            finally:
                await asyncio.to_thread(Path(tmp).unlink, missing_ok=True)
        elif kind == "directory":
            await _load(engine, src.id, _documents_of_dir(Path(name)), result)
        elif kind == "zip":
            await _load(engine, src.id, _documents_of_zip(Path(name)), result)
        else:
            await _load(engine, src.id, _documents_of_file(Path(name)), result)
    except ImportError_ as exc:
        async with writer(engine).begin() as conn:
            await store.fail_source(conn, src.id, str(exc))
        raise
    async with writer(engine).begin() as conn:
        await store.finish_source(
            conn,
            src.id,
            result.as_dict(),
            changed=result.changed,
            etag=etag,
            last_modified=last_modified,
            sha256=sha,
        )
    return result
