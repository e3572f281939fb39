"""``moorage admin create-org NAME --mirror-of URL [--upstream-username U
--upstream-password-stdin] [--insecure]`` (issue 14's spelling): the core's ``create-org`` with
the cache options added by this capability. Without ``--mirror-of`` it is the core command
unchanged. ``moorage mirror caches`` lists the cache organizations.

Both work on the database directly, beside running nodes (which see a new cache within a few
seconds), and record what they changed in the audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, audit_cli, fail, load
from ..services.errors import ServiceError

if TYPE_CHECKING:  # the commands import what they use: parsing the command line stays cheap
    from .service import Cache


def _create(args: argparse.Namespace) -> int:
    from ..auth.admin import create_org_in
    from ..db.engine import writer
    from ..runtime import runtime
    from .service import MirrorService

    password = None
    if args.upstream_password_stdin:
        if not args.upstream_username:
            return fail("--upstream-password-stdin needs --upstream-username")
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.upstream_username:
        return fail("--upstream-username needs --upstream-password-stdin")
    config = load(args)

    async def go() -> Cache:
        async with runtime(config) as rt:
            service = rt.services["mirror"]
            assert isinstance(service, MirrorService)
            async with writer(rt.ctx.write_engine).begin() as conn:
                await create_org_in(conn, args.name)
                return await service.create_cache(
                    conn,
                    args.name,
                    args.mirror_of,
                    username=args.upstream_username,
                    password=password,
                    insecure=args.insecure,
                    platforms=args.platform,
                    staleness_seconds=args.staleness,
                    evict_after_days=args.evict_after_days,
                    max_bytes=args.max_size,
                )

    try:
        cache = asyncio.run(go())
    except (ServiceError, ValueError) as exc:
        return fail(getattr(exc, "message", None) or str(exc))
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    audit_cli(
        config,
        "organization.create",
        arguments=[args.name],
        mirror_of=cache.url,
        upstream_username=cache.username,
        platforms=list(cache.platforms or ()),
    )
    print(f"created organization {cache.namespace}: a pull-through cache of {cache.url}")
    return 0


def _wrap(original: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.mirror_of is None:
            for option in ("upstream_username", "upstream_password_stdin", "insecure", "platform"):
                if getattr(args, option):
                    return fail(f"--{option.replace('_', '-')} needs --mirror-of")
            return original(args)
        return _create(args)

    return run


def cmd_caches(args: argparse.Namespace) -> int:
    from ..runtime import runtime
    from .service import MirrorService

    config = load(args)

    async def go() -> list[Cache]:
        async with runtime(config) as rt:
            service = rt.services["mirror"]
            assert isinstance(service, MirrorService)
            return await service.caches()

    try:
        caches = asyncio.run(go())
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    for c in caches:
        print(
            f"{c.namespace}\t{c.url}\tuser={c.username or '-'}\tinsecure={c.insecure}"
            f"\tplatforms={','.join(c.platforms or ()) or 'all'}\tstaleness={c.staleness_seconds}s"
            f"\tevict_after_days={c.evict_after_days or '-'}\tmax_bytes={c.max_bytes or '-'}"
        )
    return 0


def register(tree: CommandTree) -> None:
    co: Any = tree.admin.choices["create-org"]
    co.add_argument("--mirror-of", metavar="URL", help="make it a pull-through cache of URL")
    co.add_argument("--upstream-username", help="with --mirror-of: the upstream account")
    co.add_argument(
        "--upstream-password-stdin",
        action="store_true",
        help="with --mirror-of: read the upstream password from stdin (stored encrypted)",
    )
    co.add_argument(
        "--insecure", action="store_true", help="with --mirror-of: do not verify TLS certificates"
    )
    co.add_argument(
        "--platform",
        action="append",
        help="with --mirror-of: keep only os/arch[/variant] of indexes (repeatable; sparse index)",
    )
    co.add_argument(
        "--staleness",
        type=int,
        default=300,
        metavar="SECONDS",
        help="with --mirror-of: revalidate a tag upstream at most this often (default 300)",
    )
    co.add_argument(
        "--evict-after-days", type=int, help="with --mirror-of: evict images not pulled for N days"
    )
    co.add_argument("--max-size", type=int, metavar="BYTES", help="with --mirror-of: size cap")
    co.set_defaults(func=_wrap(co.get_default("func")))

    top = tree.top.add_parser("mirror", help="pull-through cache organizations")
    sub = top.add_subparsers(dest="mirror_command", required=True)
    p = sub.add_parser("caches", help="list the cache organizations")
    add_common(p)
    p.set_defaults(func=cmd_caches)
