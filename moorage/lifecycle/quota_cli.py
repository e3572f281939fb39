"""``moorage admin set-quota ORG-or-USER BYTES|none`` (and ``moorage admin quota list``): one
transaction on the database, so it works while servers run — their next push check reads the
new quota. Every change is audited (``quota.set`` / ``quota.remove``)."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, audit_cli, cli_actor, fail, load
from ..config import ConfigError
from .cli import _db


def _show(q: Any) -> str:
    from .quota import describe, human_bytes

    limit = (
        "none" if q.limit_bytes is None else f"{human_bytes(q.limit_bytes)} ({q.limit_bytes} bytes)"
    )
    return (
        f"quota of {describe(q.kind, q.namespace)}: {limit}; "
        f"usage {human_bytes(q.usage_bytes)} ({q.usage_bytes} bytes)"
    )


def cmd_set_quota(args: argparse.Namespace) -> int:
    from ..services.errors import ServiceError
    from . import quota

    try:
        config = load(args)
        raw = args.limit.strip()
        limit = None if raw.lower() == "none" else quota.parse_size(raw)
        actor = cli_actor()
        state, before = _db(config, lambda conn: quota.set_limit(conn, args.target, limit, actor))
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)), 1)
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    audit_cli(
        config,
        "quota.remove" if limit is None else "quota.set",
        namespace=state.namespace,
        kind=state.kind,
        limit_bytes=limit,
        previous_bytes=before,
    )
    print(_show(state))
    return 0


def cmd_quota(args: argparse.Namespace) -> int:
    from ..services.errors import ServiceError
    from . import quota

    try:
        config = load(args)
        if args.target:
            found = [_db(config, lambda conn: quota.get(conn, args.target))]
        else:
            found = _db(config, quota.list_quotas)
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)), 1)
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)
    for q in found:
        print(_show(q))
    return 0


def register(tree: CommandTree) -> None:
    sq = tree.admin.add_parser(
        "set-quota",
        help="storage quota of an organization or user namespace (BYTES, e.g. 10GiB, or none)",
    )
    sq.add_argument("target", metavar="ORG-or-USER")
    sq.add_argument(
        "limit",
        metavar="BYTES|none",
        help="bytes, or a number with a unit (500MB, 10GiB, 1.5TiB); none removes the quota",
    )
    add_common(sq)
    sq.set_defaults(func=cmd_set_quota)

    show = tree.admin.add_parser(
        "quota", help="a namespace's quota and usage (without ORG-or-USER: every quota)"
    )
    show.add_argument("target", nargs="?", metavar="ORG-or-USER")
    add_common(show)
    show.set_defaults(func=cmd_quota)
