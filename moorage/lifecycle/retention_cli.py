"""``moorage retention set|show|clear|run``: retention policies from the command line. They talk
to the database directly (like ``moorage gc run``), so they work while servers run; a run here
and a scheduled run elsewhere re-check each removal in its own transaction."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, cli_actor, fail, load
from ..config import ConfigError
from ..services.errors import ServiceError


def show_policy(stored: Any) -> str:
    rules = " ".join(stored.policy.rules()) or "(no rules)"
    last = ""
    if stored.last_run_at is not None:
        last = (
            f"\tlast run {stored.last_run_at.isoformat(timespec='seconds')}: "
            f"{stored.last_run_tags or 0} tags, {stored.last_run_manifests or 0} manifests"
        )
    return f"{stored.scope}\t{stored.target}\t{rules}{last}"


def print_report(report: Any) -> None:
    verb = "would remove" if report.dry_run else "removed"
    for r in report.removed:
        if r.tag is not None:
            print(f"{verb} tag {r.repository}:{r.tag} ({r.digest})")
        else:
            print(f"{verb} manifest {r.repository}@{r.digest} ({r.reason})")
    for r, why in report.skipped:
        print(f"skipped {r.label()}: {why}")
    s = report.summary()
    print(
        f"{verb}: {s['tags']} tags, {s['manifests']} untagged manifests in "
        f"{s['repositories']} repositories; kept {s['kept']} tags"
        + (f", spared {s['spared_immutable']} immutable" if s["spared_immutable"] else "")
        + (f"; skipped {s['skipped']} changed since the plan" if s["skipped"] else "")
    )


def cmd_retention(args: argparse.Namespace) -> int:
    from ..runtime import runtime
    from . import retention as ret

    try:
        config = load(args)
        target = getattr(args, "target", None)
        scope, name = ret.parse_target(target) if target else ("", "")
        policy = ret.parse_rules(args.rules) if args.action == "set" else None

        async def go() -> int:
            async with runtime(config) as rt:
                service: ret.Retention = rt.services[ret.SERVICE]
                actor = cli_actor()
                if args.action == "show":
                    if target:
                        one = await service.policy(scope, name)
                        if one is None:
                            return fail(f"no retention policy on {scope} {name}", 1)
                        found = [one]
                    else:
                        found = await service.policies()
                    for stored in found:
                        print(show_policy(stored))
                    return 0
                if args.action == "set":
                    assert policy is not None
                    stored = await service.set(scope, name, policy, actor)
                    print(f"retention policy on {scope} {name}: {' '.join(stored.policy.rules())}")
                    return 0
                if args.action == "clear":
                    if not await service.clear(scope, name, actor):
                        return fail(f"no retention policy on {scope} {name}", 1)
                    print(f"cleared the retention policy on {scope} {name}")
                    return 0
                report = await service.run(
                    scope, name, dry_run=args.dry_run, trigger="cli", actor=actor
                )
                print_report(report)
                return 0

        return asyncio.run(go())
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)), 1)
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)


def register(tree: CommandTree) -> None:
    top = tree.top.add_parser(
        "retention",
        help="retention policies: which tags of an organization or repository are removed",
        description="Rules: keep-last=N, keep-pulled-within=DURATION, "
        "keep-tags=PATTERN[,PATTERN...], untagged-after=DURATION (DURATION: 30d, 12h, 90m). "
        "A tag is kept if any keep rule keeps it; immutable tags are never removed; a "
        "repository's policy replaces its organization's (docs/lifecycle.md).",
    )
    sub = top.add_subparsers(dest="retention_command", required=True)
    set_ = sub.add_parser("set", help="set (replace) the policy of ORG-or-REPO")
    set_.add_argument("target", metavar="ORG-or-REPO")
    set_.add_argument("rules", nargs="+", metavar="RULE")
    add_common(set_)
    set_.set_defaults(func=cmd_retention, action="set", dry_run=False)
    show = sub.add_parser("show", help="the policy of ORG-or-REPO, or every policy")
    show.add_argument("target", nargs="?", metavar="ORG-or-REPO")
    add_common(show)
    show.set_defaults(func=cmd_retention, action="show", rules=(), dry_run=False)
    clear = sub.add_parser("clear", help="remove the policy of ORG-or-REPO")
    clear.add_argument("target", metavar="ORG-or-REPO")
    add_common(clear)
    clear.set_defaults(func=cmd_retention, action="clear", rules=(), dry_run=False)
    run = sub.add_parser("run", help="apply the policy of ORG-or-REPO now")
    run.add_argument("target", metavar="ORG-or-REPO")
    run.add_argument(
        "--dry-run", action="store_true", help="list exactly what would be removed; change nothing"
    )
    add_common(run)
    run.set_defaults(func=cmd_retention, action="run", rules=())
