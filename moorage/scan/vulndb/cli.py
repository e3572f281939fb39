"""``moorage vulndb import PATH|URL`` and ``moorage vulndb status``: they talk to the database
only, so they work while the server runs (imports go in short transactions)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ...cli.common import CommandTree, add_common, audit_cli, fail, load


def _engine(config: Any) -> Any:
    from ...db.engine import create_engine

    return create_engine(config.database_url, 2)


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import ImportError_, import_source

    config = load(args)
    results = []

    async def work() -> None:
        engine = _engine(config)
        try:
            for spec in args.sources:
                results.append(
                    await import_source(engine, spec, http_timeout=config.vulndb.http_timeout)
                )
        finally:
            if any(r.changed for r in results):
                # stored scans are matched again by a running node (job vulndb.rematch)
                from ...db.engine import writer
                from .rematch import queue_rematch

                async with writer(engine).begin() as conn:
                    await queue_rematch(conn)
            await engine.dispose()

    try:
        asyncio.run(work())
    except ImportError_ as exc:
        for r in results:
            _print_result(r.as_dict(), args.json)
        return fail(str(exc), 1)
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    for r in results:
        _print_result(r.as_dict(), args.json)
        audit_cli(
            config,
            "vulndb.import",
            source=r.source,
            added=r.added,
            updated=r.updated,
            withdrawn=r.withdrawn,
            invalid=r.invalid,
        )
    return 0


def _print_result(d: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(d))
        return
    if d["not_modified"]:
        print(f"{d['source']}: not modified since the last import")
        return
    print(
        f"{d['source']} ({d['kind']}): {d['files']} files, {d['added']} added, "
        f"{d['updated']} updated, {d['unchanged']} unchanged, {d['withdrawn']} withdrawn, "
        f"{d['invalid']} invalid"
    )
    for e in d["errors"]:
        print(f"  skipped {e}")


def cmd_status(args: argparse.Namespace) -> int:
    from .service import status

    config = load(args)

    async def work() -> Any:
        engine = _engine(config)
        try:
            return await status(engine, config.vulndb)
        finally:
            await engine.dispose()

    try:
        st = asyncio.run(work())
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    if args.json:
        print(st.model_dump_json())
        return 0
    updated = st.updated_at.isoformat() if st.updated_at else "never"
    print(f"records: {st.records} ({st.withdrawn} withdrawn), updated {updated}")
    for eco, n in st.ecosystems.items():
        print(f"  {eco}\t{n}")
    print("sources:")
    for s in st.sources:
        when = s.imported_at.isoformat() if s.imported_at else "never"
        line = f"  {s.name} ({s.kind})\trecords={s.records}\timported={when}"
        if s.last_result:
            r = s.last_result
            line += f"\tlast: +{r.get('added', 0)} ~{r.get('updated', 0)} ={r.get('unchanged', 0)}"
        if s.error:
            line += f"\terror={json.dumps(s.error)}"
        print(line)
    if st.configured_sources:
        print(f"refreshed every {st.refresh_hours:g} h: {', '.join(st.configured_sources)}")
    return 0


def register(tree: CommandTree) -> None:
    vdb = tree.top.add_parser("vulndb", help="the offline vulnerability database (OSV)")
    sub = vdb.add_subparsers(dest="vulndb_command", required=True)
    imp = sub.add_parser(
        "import",
        help="import OSV advisories: osv.dev's all.zip (a file or a URL) or a directory of "
        "OSV JSON (searched recursively); only new or changed records are written",
    )
    add_common(imp)
    imp.add_argument("sources", nargs="+", metavar="PATH|URL")
    imp.add_argument("--json", action="store_true", help="one JSON object per source")
    imp.set_defaults(func=cmd_import)
    st = sub.add_parser("status", help="what was imported, when, and the records per ecosystem")
    add_common(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    register_admin(tree)


def cmd_set_policy(args: argparse.Namespace) -> int:
    from ...cli.common import cli_actor
    from ...hooks.service import parse_target
    from ...services.errors import ServiceError
    from . import store as st
    from .policy import allow_to_json, check_level, parse_allow

    config = load(args)
    try:
        scope, target = parse_target(args.target)
        level = check_level(args.block_severity)
        allow = tuple(parse_allow(a, args.reason or "") for a in args.allow or ())
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)), 1)

    async def work() -> None:
        from ...db.engine import writer

        engine = _engine(config)
        try:
            async with writer(engine).begin() as conn:
                await st.put_policy(
                    conn,
                    scope=scope,
                    target=target,
                    block_severity=level,
                    fixable_only=args.fixable_only,
                    block_unscanned=args.block_unscanned,
                    allow=allow_to_json(allow),
                    actor=cli_actor(),
                )
        finally:
            await engine.dispose()

    try:
        asyncio.run(work())
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    audit_cli(
        config,
        "vulnerability.policy.set",
        target=target,
        block_severity=level,
        fixable_only=args.fixable_only,
        block_unscanned=args.block_unscanned,
        allow=[a.as_dict() for a in allow],
    )
    allowed = ", ".join(a.id + (f" until {a.expires}" if a.expires else "") for a in allow)
    print(
        f"vulnerability policy of {target}: block {level}"
        + (" (fixable only)" if args.fixable_only else "")
        + (", unscanned blocked" if args.block_unscanned else "")
        + (f"; allowed: {allowed}" if allowed else "")
    )
    return 0


def cmd_remove_policy(args: argparse.Namespace) -> int:
    from . import store as st

    config = load(args)

    async def work() -> bool:
        from ...db.engine import writer

        engine = _engine(config)
        try:
            async with writer(engine).begin() as conn:
                return await st.delete_policy(conn, args.target)
        finally:
            await engine.dispose()

    if not asyncio.run(work()):
        return fail(f"no vulnerability policy for {args.target[:255]}")
    audit_cli(config, "vulnerability.policy.remove", target=args.target)
    print(f"vulnerability policy of {args.target} removed")
    return 0


def register_admin(tree: CommandTree) -> None:
    sp = tree.admin.add_parser(
        "set-vulnerability-policy",
        help="block pulls of images with findings at or above a severity (organization or "
        "repository; a repository's policy replaces its organization's)",
    )
    add_common(sp)
    sp.add_argument("target", metavar="ORG-or-REPO")
    sp.add_argument(
        "--block-severity", required=True, choices=("critical", "high", "medium", "low", "none")
    )
    sp.add_argument("--fixable-only", action="store_true", help="only findings with a fix count")
    sp.add_argument(
        "--block-unscanned", action="store_true", help="also block images not scanned yet"
    )
    sp.add_argument(
        "--allow",
        nargs="*",
        metavar="CVE-ID[:EXPIRY-DATE]",
        help="advisories allowed (by id, alias or upstream id), until YYYY-MM-DD if given",
    )
    sp.add_argument("--reason", default="", help="why the allow-list entries are accepted")
    sp.set_defaults(func=cmd_set_policy)
    rp = tree.admin.add_parser(
        "remove-vulnerability-policy", help="remove an organization's or repository's policy"
    )
    add_common(rp)
    rp.add_argument("target", metavar="ORG-or-REPO")
    rp.set_defaults(func=cmd_remove_policy)
