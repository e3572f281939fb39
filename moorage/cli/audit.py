"""``moorage audit export`` and ``moorage audit verify``.

Both only read the database (one snapshot each), so they run beside a live server: on SQLite the
WAL lets readers proceed while the server writes; on PostgreSQL they read a REPEATABLE READ
snapshot. Exit codes: 0 success / intact, 1 the log is not intact, 2 usage, configuration or
database error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..config import Config, ConfigError
from .common import CommandTree, add_common, load

if TYPE_CHECKING:  # the commands import what they use: parsing the command line stays cheap
    from ..audit import store
    from ..audit.events import ExportFormat


def _since(text: str) -> datetime:
    from ..audit.events import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
        ) from None


def register(tree: CommandTree) -> None:
    """``moorage audit export`` and ``moorage audit verify``."""
    from ..audit.events import FORMATS, RESULTS

    audit = tree.top.add_parser("audit", help="audit log: export and verify")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    export = audit_sub.add_parser(
        "export", help="write audit records (oldest first) as JSON Lines or CSV"
    )
    add_common(export)
    export.add_argument("--format", choices=FORMATS, default="jsonl", help="default jsonl")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--actor", help="only this actor")
    export.add_argument(
        "--action", help="only this action, or a prefix ending in '.' or '.*' (manifest.*)"
    )
    export.add_argument("--repository", help="only this repository")
    export.add_argument("--result", choices=sorted(RESULTS), help="only this result")
    export.add_argument("--since", type=_since, help="from this time on (ISO 8601, inclusive)")
    export.add_argument("--until", type=_since, help="before this time (ISO 8601, exclusive)")
    export.set_defaults(func=cmd_audit_export)

    verify = audit_sub.add_parser(
        "verify", help="check the hash chain; exit 1 naming the first bad record"
    )
    add_common(verify)
    verify.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help="check an unfiltered export (JSON Lines or CSV) instead of the database",
    )
    verify.set_defaults(func=cmd_audit_verify)


def _config(args: argparse.Namespace) -> Config:
    return load(args)


def _database_url(config: Config) -> str:
    url = config.database_url
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        if not Path(u.database).exists():
            raise ConfigError(f"no database at {u.database} (check --data-dir / database.url)")
    return url


async def _with_engine(url: str, work: Any) -> Any:
    from ..db.engine import create_engine

    engine = create_engine(url, pool_size=2)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


def _database_error(exc: Exception) -> int:
    hint = ""
    if "audit_events" in str(exc) or "audit_anchor" in str(exc):
        hint = " (is the database upgraded? run `moorage db upgrade`)"
    print(f"moorage: database error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
    return 2


def cmd_audit_export(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except SQLAlchemyError as exc:
        return _database_error(exc)


def _export(args: argparse.Namespace) -> int:
    from ..audit import store
    from ..audit.export import export_to

    url = _database_url(_config(args))
    filters = store.AuditFilter(
        actor=args.actor,
        action=args.action,
        repository=args.repository,
        result=args.result,
        since=args.since,
        until=args.until,
    )
    fmt: ExportFormat = args.format
    if not args.output:
        asyncio.run(_with_engine(url, lambda e: export_to(e, sys.stdout, fmt, filters)))
        sys.stdout.flush()
        return 0
    # Written beside the target and renamed at the end: a failed export leaves no partial file.
    target = Path(args.output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            asyncio.run(_with_engine(url, lambda e: _export_file(e, out, fmt, filters)))
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return 0


async def _export_file(
    engine: Any, out: TextIO, fmt: ExportFormat, filters: store.AuditFilter
) -> None:
    from ..audit.export import export_to

    await export_to(engine, out, fmt, filters)
    out.flush()
    os.fsync(out.fileno())


def _verify_file(path: str) -> int:
    """An export file, CSV (recognized by its header row; its formula escaping undone) or
    JSON Lines, re-hashed and linked from its first record."""
    from ..audit.export import CSV_FIELDS, parse_csv, parse_jsonl, verify_export

    try:
        with open(path, encoding="utf-8", newline="") as f:
            first = f.readline()
            f.seek(0)
            is_csv = first.rstrip("\r\n") == ",".join(CSV_FIELDS)
            result = verify_export(parse_csv(f) if is_csv else parse_jsonl(f))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        print(f"moorage: cannot read the export {path}: {exc}", file=sys.stderr)
        return 2
    print(result.message())
    return 0 if result.ok else 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from ..audit import store

    if args.input:
        return _verify_file(args.input)
    url = _database_url(_config(args))
    try:
        result = asyncio.run(_with_engine(url, store.verify))
    except SQLAlchemyError as exc:
        return _database_error(exc)
    print(result.message())
    return 0 if result.ok else 1
