"""``moorage webhooks add|list|remove|test|deliveries``: the same webhooks as the API and UI,
for operators. The commands talk to the database only, so they work while the server runs (a
running node sends what they queue); they act as the system and are audited as
``cli:<login>``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, audit_cli, cli_actor, fail, load
from ..services.errors import ServiceError
from .payloads import EVENT_KINDS, FORMATS

if TYPE_CHECKING:  # the commands import what they use: parsing the command line stays cheap
    from ..config import Config
    from . import queries as q

T = TypeVar("T")


def _run(config: Config, work: Callable[[Any], Awaitable[T]]) -> T:
    """*work(engine)* on a one-connection engine."""
    from ..db.engine import create_engine

    async def go() -> T:
        engine = create_engine(config.database_url, 1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _hook_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > 18:
        raise ServiceError(f"no webhook {raw[:30]}")
    return int(raw)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ServiceError as exc:
            return fail(str(getattr(exc, "message", exc)), 1)
        except SQLAlchemyError as exc:
            return fail(f"database error: {exc}", 2)

    return wrapped


@_guard
def cmd_add(args: argparse.Namespace) -> int:
    from ..db.engine import writer
    from .service import (
        check_format,
        check_secret,
        checked_url,
        create_in,
        parse_events,
        parse_target,
    )

    config = load(args)
    scope, target = parse_target(args.target)
    events = parse_events(args.events)
    fmt = check_format(args.format)
    url = checked_url(config, args.url)
    secret_text = None
    if args.secret_stdin:
        secret_text = sys.stdin.readline().rstrip("\r\n")
    secret = check_secret(secret_text)

    async def work(engine: Any) -> int:
        async with writer(engine).begin() as conn:
            return await create_in(
                conn,
                config,
                scope=scope,
                target=target,
                url=url,
                events=events,
                fmt=fmt,
                secret=secret,
                description=args.description or "",
                actor=cli_actor(),
            )

    wid = _run(config, work)
    audit_cli(
        config,
        "webhook.create",
        id=wid,
        target=target,
        url=url,
        events=events,
        format=fmt,
    )
    print(f"webhook {wid} for {target}: {','.join(events)} → {url} ({fmt})")
    if secret_text is None:
        print(f"signing secret (shown once): {secret}")
    return 0


@_guard
def cmd_list(args: argparse.Namespace) -> int:
    from . import queries as q
    from .service import parse_target

    config = load(args)
    targets = [parse_target(args.target)] if args.target else None

    async def work(engine: Any) -> list[q.WebhookRow]:
        async with engine.connect() as conn:
            return await q.list_webhooks(conn, targets=targets, limit=10_000)

    for h in _run(config, work):
        print(
            f"{h.id}\t{h.target}\t{h.url}\tevents={','.join(h.events)}\tformat={h.format}"
            f"\t{'on' if h.enabled else 'off'}"
        )
    return 0


@_guard
def cmd_remove(args: argparse.Namespace) -> int:
    from ..db.engine import writer
    from . import queries as q

    config = load(args)
    wid = _hook_id(args.id)

    async def work(engine: Any) -> q.WebhookRow | None:
        async with writer(engine).begin() as conn:
            hook = await q.get_webhook(conn, wid)
            if hook is not None:
                await q.delete_webhook(conn, wid)
            return hook

    hook = _run(config, work)
    if hook is None:
        return fail(f"no webhook {wid}")
    audit_cli(config, "webhook.delete", id=wid, target=hook.target, url=hook.url)
    print(f"webhook {wid} removed")
    return 0


@_guard
def cmd_test(args: argparse.Namespace) -> int:
    from ..db.engine import writer
    from . import outbox
    from . import queries as q
    from .service import test_in

    config = load(args)
    outbox.configure_from(config)
    wid = _hook_id(args.id)

    async def work(engine: Any) -> int | None:
        async with writer(engine).begin() as conn:
            hook = await q.get_webhook(conn, wid)
            return None if hook is None else await test_in(conn, hook, cli_actor())

    delivery = _run(config, work)
    if delivery is None:
        return fail(f"no webhook {wid}")
    print(
        f"test event queued as delivery {delivery}; a running node sends it "
        f"(moorage webhooks deliveries {wid})"
    )
    return 0


@_guard
def cmd_deliveries(args: argparse.Namespace) -> int:
    from . import queries as q
    from .service import delivery_model

    config = load(args)
    wid = _hook_id(args.id)

    async def work(engine: Any) -> tuple[q.WebhookRow | None, list[Any]]:
        async with engine.connect() as conn:
            hook = await q.get_webhook(conn, wid)
            if hook is None:
                return None, []
            rows = await q.list_deliveries(conn, wid, None, args.limit)
            attempts = await q.attempts_of(conn, [r.id for r in rows])
        return hook, [delivery_model(r, attempts[r.id]) for r in rows]

    hook, deliveries = _run(config, work)
    if hook is None:
        return fail(f"no webhook {wid}")
    for d in deliveries:
        if args.json:
            print(d.model_dump_json())
            continue
        log = " ".join(
            f"#{a.number}:{a.status if a.status is not None else 'error'}/{a.duration_ms:.0f}ms"
            for a in d.attempt_log
        )
        print(
            f"{d.id}\t{d.kind}\t{d.state}\tattempts={d.attempts}/{d.max_attempts}"
            f"\tlast={d.last_status if d.last_status is not None else '-'}"
            f"\tqueued={d.created_at.isoformat()}"
            + (f"\t{log}" if log else "")
            + (f"\terror={json.dumps(d.last_error)}" if d.last_error else "")
        )
    return 0


def register(tree: CommandTree) -> None:
    hooks = tree.top.add_parser(
        "webhooks", help="signed HTTP notifications per organization or repository"
    )
    sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    add = sub.add_parser("add", help="add a webhook to an organization or a repository")
    add_common(add)
    add.add_argument("target", metavar="ORG-or-REPO")
    add.add_argument("url", metavar="URL")
    add.add_argument(
        "--events",
        required=True,
        help=f"comma-separated: {','.join(EVENT_KINDS)}",
    )
    add.add_argument("--format", choices=FORMATS, default="distribution")
    add.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the signing secret from the first line of standard input (else one is "
        "generated and printed once)",
    )
    add.add_argument("--description", default="")
    add.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", help="webhooks, all or one organization's or repository's")
    add_common(ls)
    ls.add_argument("target", nargs="?", metavar="ORG-or-REPO")
    ls.set_defaults(func=cmd_list)
    rm = sub.add_parser("remove", help="delete a webhook and its delivery log")
    add_common(rm)
    rm.add_argument("id", metavar="ID")
    rm.set_defaults(func=cmd_remove)
    test = sub.add_parser("test", help="queue a test event for a webhook")
    add_common(test)
    test.add_argument("id", metavar="ID")
    test.set_defaults(func=cmd_test)
    dl = sub.add_parser("deliveries", help="a webhook's delivery log, newest first")
    add_common(dl)
    dl.add_argument("id", metavar="ID")
    dl.add_argument("--limit", type=int, default=20)
    dl.add_argument("--json", action="store_true", help="one JSON object per delivery")
    dl.set_defaults(func=cmd_deliveries)
