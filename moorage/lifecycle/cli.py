"""``moorage gc run [--dry-run] [--grace SECONDS]``: one garbage-collection pass now, printing
what it removed (or, with --dry-run, would remove). It talks to the database and the store
directly, so it works while servers run: their passes and this one share the work row by row."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, audit_cli, cli_actor, fail, load
from ..config import ConfigError
from ..storage.base import StorageError

T = TypeVar("T")


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


def _db(config: Any, work: Callable[[Any], Awaitable[T]]) -> T:
    """*work(conn)* in one write transaction on a one-connection engine."""
    from ..db.engine import create_engine, writer

    async def go() -> T:
        engine = create_engine(config.database_url, 1)
        try:
            async with writer(engine).begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def cmd_immutable(args: argparse.Namespace) -> int:
    from ..services.errors import ServiceError
    from . import immutable

    try:
        config = load(args)
        if args.action == "list":
            target = args.target
            rules = _db(config, lambda conn: immutable.list_rules(conn, target))
            for r in rules:
                print(f"{r.scope}\t{r.target}\t{r.pattern}\t{r.created_by or ''}")
            return 0
        if args.target is None or args.pattern is None:
            return fail(f"usage: moorage admin immutable {args.action} ORG-or-REPO PATTERN", 2)
        scope, target = immutable.parse_target(args.target)
        pattern = immutable.check_pattern(args.pattern)
        actor = cli_actor()
        if args.action == "add":
            changed = _db(config, lambda conn: immutable.add(conn, scope, target, pattern, actor))
        else:
            changed = _db(config, lambda conn: immutable.remove(conn, scope, target, pattern))
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)), 1)
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    if not changed:
        what = "already there" if args.action == "add" else "not found"
        return fail(f"immutability rule {pattern!r} on {scope} {target}: {what}", 1)
    audit_cli(
        config,
        f"tag.immutable_{'add' if args.action == 'add' else 'remove'}",
        scope=scope,
        target=target,
        pattern=pattern,
    )
    verb = "added" if args.action == "add" else "removed"
    print(f"{verb} immutability rule {pattern!r} on {scope} {target}")
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    from ..audit import AuditEvent
    from ..runtime import runtime
    from ..services.errors import ServiceError
    from ..services.manifests import ManifestService
    from . import history

    try:
        config = load(args)
        repo, tag = history.parse_reference(args.reference)
        digest = args.digest
        if args.action == "restore" and not digest:
            return fail("usage: moorage tags restore REPOSITORY:TAG DIGEST", 2)

        async def go() -> int:
            async with runtime(config) as rt:
                if args.action == "history":
                    async with rt.ctx.engine.connect() as conn:
                        entries = await history.history(conn, repo, tag, config.gc.history_days)
                    for e in entries:
                        when = "current" if e.replaced_at is None else e.replaced_at.isoformat()
                        state = "" if e.restorable else "\t(gone)"
                        print(f"{when}\t{e.digest}{state}")
                    return 0
                await history.restore(ManifestService(rt.ctx), repo, tag, digest)
                await rt.audit.record_now(
                    AuditEvent(
                        "tag.restore",
                        actor=cli_actor(),
                        actor_type="system",
                        repository=repo,
                        tag=tag,
                        digest=digest,
                    )
                )
            print(f"restored {repo}:{tag} -> {digest}")
            return 0

        return asyncio.run(go())
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)), 1)
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)


def register(tree: CommandTree) -> None:
    tg = tree.top.add_parser("tags", help="a tag's history (time machine) and restoring it")
    tsub = tg.add_subparsers(dest="tags_command", required=True)
    hist = tsub.add_parser("history", help="what REPOSITORY:TAG pointed to, newest first")
    hist.add_argument("reference", metavar="REPOSITORY:TAG")
    add_common(hist)
    hist.set_defaults(func=cmd_tags, action="history", digest=None)
    rest = tsub.add_parser("restore", help="point REPOSITORY:TAG at an earlier manifest again")
    rest.add_argument("reference", metavar="REPOSITORY:TAG")
    rest.add_argument("digest", metavar="DIGEST")
    add_common(rest)
    rest.set_defaults(func=cmd_tags, action="restore")

    imm = tree.admin.add_parser(
        "immutable", help="tag immutability rules (ORG-or-REPO PATTERN, e.g. acme 'v*')"
    )
    imm.add_argument("action", choices=("add", "remove", "list"))
    imm.add_argument("target", nargs="?", metavar="ORG-or-REPO")
    imm.add_argument("pattern", nargs="?", metavar="PATTERN")
    add_common(imm)
    imm.set_defaults(func=cmd_immutable)

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
