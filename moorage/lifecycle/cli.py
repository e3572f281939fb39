"""``moorage gc run [--dry-run] [--grace SECONDS]``: one garbage-collection pass now, printing
what it removed (or, with --dry-run, would remove). It talks to the database and the store
directly, so it works while servers run: their passes and this one share the work row by row."""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, cli_actor, fail, load
from ..config import ConfigError
from ..storage.base import StorageError


def _grace(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not 0 <= value <= 10 * 365 * 86400:
        raise argparse.ArgumentTypeError("grace must be between 0 and ten years of seconds")
    return value


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime import runtime
    from .wiring import NAME

    try:
        config = load(args)
    except ConfigError as exc:
        return fail(str(exc), 2)

    async def go() -> int:
        async with runtime(config) as rt:
            report = await rt.services[NAME].gc(
                dry_run=args.dry_run, grace=args.grace, trigger="cli", actor=cli_actor()
            )
        verb = "would remove" if args.dry_run else "removed"
        for repo, digest in report.manifests:
            print(f"{verb} manifest {repo}@{digest}")
        for digest, size in report.blobs:
            print(f"{verb} blob {digest} ({size} bytes)")
        print(
            f"{verb}: {len(report.manifests)} manifests, {len(report.blobs)} blobs, "
            f"{report.bytes} bytes ({human(report.bytes)})"
            + (f"; {report.deferred} reviews deferred" if report.deferred else "")
        )
        return 0

    try:
        return asyncio.run(go())
    except (SQLAlchemyError, StorageError, OSError) as exc:
        return fail(f"garbage collection failed: {exc}", 2)


def register(tree: CommandTree) -> None:
    gc = tree.top.add_parser("gc", help="garbage collection")
    sub = gc.add_subparsers(dest="gc_command", required=True)
    run = sub.add_parser("run", help="one pass now: remove unreferenced manifests and blobs")
    add_common(run)
    run.add_argument(
        "--dry-run", action="store_true", help="report what would go; change nothing"
    )
    run.add_argument(
        "--grace",
        type=_grace,
        default=None,
        metavar="SECONDS",
        help="spare what was linked, uploaded or dereferenced less than this ago "
        "(default: gc.grace_seconds)",
    )
    run.set_defaults(func=cmd_run)
