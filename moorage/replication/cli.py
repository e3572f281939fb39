"""``moorage replication ...``: remotes, policies, runs and their history. Each command works
on the database directly, beside running nodes (which run the jobs), and records its changes in
the audit log. The spellings of issue 14 are a contract:

    moorage replication add-remote NAME URL [--insecure] [--username U --password-stdin]
    moorage replication check-remote NAME
    moorage replication add-policy NAME --remote REMOTE --direction push|pull --source PATTERN
        [--tags PATTERN] [--exclude PATTERN] [--dest-namespace NS] [--trigger manual|event|cron:EXPR]
    moorage replication run POLICY [--wait]
    moorage replication executions POLICY
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from ..cli.common import CommandTree, add_common, audit_cli, cli_actor, fail, load
from ..services.errors import ServiceError

if TYPE_CHECKING:  # imported by the commands that use them: parsing the command line is cheap
    from ..config import Config
    from .models_api import Execution
    from .service import ReplicationService

T = TypeVar("T")


def _call(config: Config, fn: Callable[[ReplicationService], Awaitable[T]]) -> T:
    from ..runtime import runtime
    from .service import ReplicationService

    async def go() -> T:
        async with runtime(config) as rt:
            service = rt.services["replication"]
            assert isinstance(service, ReplicationService)
            return await fn(service)

    return asyncio.run(go())


class Exit(int):
    """A command's exit code after a failure it has reported (not a result)."""


def _run(args: argparse.Namespace, fn: Callable[[ReplicationService], Awaitable[T]]) -> T | Exit:
    config = load(args)
    try:
        return _call(config, fn)
    except ServiceError as exc:
        return Exit(fail(exc.message))
    except SQLAlchemyError as exc:
        return Exit(fail(f"database error: {exc}", 2))


def cmd_add_remote(args: argparse.Namespace) -> int:
    from .models_api import RemoteCreate

    password = None
    if args.password_stdin:
        if not args.username:
            return fail("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
    ca_pem = Path(args.ca_file).read_text() if args.ca_file else None
    spec = RemoteCreate(
        name=args.name,
        url=args.url,
        username=args.username,
        password=password,
        insecure=args.insecure,
        ca_pem=ca_pem,
        site=args.site,
        description=args.description or "",
    )
    out = _run(args, lambda s: s.add_remote(spec))
    if isinstance(out, Exit):
        return out
    audit_cli(load(args), "replication.remote.create", remote=out.name, url=out.url, site=out.site)
    print(f"remote {out.name}: {out.url}" + (" (site)" if out.site else ""))
    return 0


def cmd_check_remote(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.check_remote(args.name))
    if isinstance(out, Exit):
        return out
    print(f"{'ok' if out.ok else 'failed'}\t{out.remote}\t{out.message}")
    return 0 if out.ok else 1


def cmd_remotes(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.remotes())
    if isinstance(out, Exit):
        return out
    for r in out:
        check = "-" if r.check_ok is None else ("ok" if r.check_ok else "failed")
        print(f"{r.name}\t{r.url}\tuser={r.username or '-'}\tsite={r.site}\tcheck={check}")
    return 0


def cmd_remove_remote(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.delete_remote(args.name))
    if isinstance(out, Exit):
        return out
    audit_cli(load(args), "replication.remote.delete", remote=args.name)
    print(f"removed remote {args.name}")
    return 0


def _labels(values: list[str]) -> dict[str, str] | None:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        out[key] = value if sep else "*"
    return out or None


def cmd_add_policy(args: argparse.Namespace) -> int:
    from .models_api import PolicyCreate

    spec = PolicyCreate(
        name=args.name,
        remote=args.remote,
        direction=args.direction,
        source=args.source,
        tags=args.tags,
        exclude=args.exclude,
        labels=_labels(args.label),
        artifact_types=args.artifact_type or None,
        dest_namespace=args.dest_namespace,
        triggers=args.trigger or ["manual"],
        platforms=args.platform or None,
        referrers=not args.no_referrers,
        replicate_deletes=args.replicate_deletes,
        forward_replicated=args.forward_replicated,
        bandwidth_limit=args.bandwidth_limit,
        enabled=not args.disabled,
        description=args.description or "",
    )
    out = _run(args, lambda s: s.add_policy(spec, cli_actor()))
    if isinstance(out, Exit):
        return out
    audit_cli(load(args), "replication.policy.create", **out.model_dump(mode="json"))
    print(
        f"policy {out.name}: {out.direction} {out.source} via {out.remote}, "
        f"triggers {', '.join(out.triggers)}"
    )
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.policies())
    if isinstance(out, Exit):
        return out
    for p in out:
        print(
            f"{p.name}\t{p.direction}\t{p.source}\t{p.tags or '*'}\tremote={p.remote}"
            f"\ttriggers={','.join(p.triggers)}\tenabled={p.enabled}"
        )
    return 0


def cmd_remove_policy(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.delete_policy(args.name))
    if isinstance(out, Exit):
        return out
    audit_cli(load(args), "replication.policy.delete", policy=args.name)
    print(f"removed policy {args.name}")
    return 0


def _task_line(t: Any) -> str:
    what = f"{t.src_repo}:{t.ref} -> {t.dst_repo}"
    if t.operation == "delete":
        what = f"delete {t.dst_repo}:{t.ref}"
    outcome = t.outcome or t.state
    line = f"{outcome}\t{what}\t{t.digest or '-'}\t{t.bytes} bytes\t{t.duration:.2f}s"
    if t.error:
        line += f"\t{t.error}"
    return line


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    execution_id = _run(args, lambda s: s.start(args.policy, "manual", cli_actor()))
    if isinstance(execution_id, Exit):
        return execution_id
    audit_cli(config, "replication.run", policy=args.policy, execution=execution_id)
    if not args.wait:
        print(f"execution {execution_id} of {args.policy} queued; a running node runs its jobs")
        return 0
    return _wait(config, execution_id, args.timeout)


def _wait(config: Config, execution_id: int, timeout: float) -> int:
    from ..db.engine import create_engine
    from . import queries as q
    from .service import execution_model

    async def go() -> int:
        engine = create_engine(config.database_url, 1)
        shown: set[int] = set()
        deadline = time.monotonic() + timeout if timeout else None
        waited_note = time.monotonic() + 30
        try:
            while True:
                async with engine.connect() as conn:
                    e = await q.execution(conn, execution_id)
                    tasks = await q.tasks(conn, execution_id)
                assert e is not None
                for t in tasks:
                    if t.id not in shown and t.state in ("succeeded", "failed"):
                        shown.add(t.id)
                        print(_task_line(t), flush=True)
                if e.state not in ("planning", "running"):
                    model = execution_model(e)
                    print(
                        f"execution {e.id}: {e.state}, {e.succeeded} of {e.total} succeeded, "
                        f"{e.failed} failed, {e.bytes} bytes in {model.duration or 0:.1f}s"
                        + (f" ({e.message})" if e.message else "")
                    )
                    return 0 if e.state == "succeeded" else 1
                if time.monotonic() > waited_note and e.state == "planning":
                    print(
                        "moorage: still waiting for a node to plan the execution "
                        "(is moorage serve or moorage worker running?)",
                        file=sys.stderr,
                    )
                    waited_note = float("inf")
                if deadline is not None and time.monotonic() > deadline:
                    print(f"moorage: execution {e.id} still {e.state}", file=sys.stderr)
                    return 2
                await asyncio.sleep(0.5)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}", 2)


def cmd_executions(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.executions(args.policy, args.limit))
    if isinstance(out, Exit):
        return out
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in out], indent=2))
        return 0
    for e in out:
        _print_execution(e)
    return 0


def _print_execution(e: Execution) -> None:
    print(
        f"{e.id}\t{e.state}\ttrigger={e.trigger}\ttags={e.succeeded}/{e.total}"
        f"\tfailed={e.failed}\tbytes={e.bytes}\tstarted={e.created_at.isoformat()}"
        + (f"\tduration={e.duration:.1f}s" if e.duration is not None else "")
        + (f"\t{e.message}" if e.message else "")
    )


def cmd_execution(args: argparse.Namespace) -> int:
    out = _run(args, lambda s: s.execution(args.id))
    if isinstance(out, Exit):
        return out
    if args.json:
        print(out.model_dump_json(indent=2))
        return 0
    _print_execution(out)
    for t in out.tasks or []:
        print("  " + _task_line(t))
    return 0


def register(tree: CommandTree) -> None:
    top = tree.top.add_parser("replication", help="replication and geo-replication")
    sub = top.add_subparsers(dest="replication_command", required=True)

    p = sub.add_parser("add-remote", help="register a remote registry")
    add_common(p)
    p.add_argument("name")
    p.add_argument("url", help="http(s)://host[:port]")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--ca-file", help="PEM file of extra trusted CA certificates")
    p.add_argument(
        "--site",
        action="store_true",
        help="another Moorage site (geo-replication: identities are synced with it)",
    )
    p.add_argument("--description")
    p.set_defaults(func=cmd_add_remote)

    p = sub.add_parser("check-remote", help="check the connection to a remote (GET /v2/)")
    add_common(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_check_remote)

    p = sub.add_parser("remotes", help="list remote registries")
    add_common(p)
    p.set_defaults(func=cmd_remotes)

    p = sub.add_parser("remove-remote", help="remove a remote no policy uses")
    add_common(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_remove_remote)

    p = sub.add_parser("add-policy", help="create a push or pull replication policy")
    add_common(p)
    p.add_argument("name")
    p.add_argument("--remote", required=True)
    p.add_argument("--direction", required=True, choices=("push", "pull"))
    p.add_argument("--source", required=True, help="repository pattern (*, **, ?, {a,b})")
    p.add_argument("--tags", help="tag pattern (default: every tag)")
    p.add_argument("--exclude", help="excluded repositories (with '/') or tags (without)")
    p.add_argument("--dest-namespace", help="replace the namespace at the destination")
    p.add_argument(
        "--trigger",
        action="append",
        help="manual (default), event, cron:EXPR (5 fields, UTC); repeat to combine",
    )
    p.add_argument("--platform", action="append", help="os/arch[/variant] to copy (repeatable)")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE or KEY (repeatable)")
    p.add_argument("--artifact-type", action="append", help="media type, or image/index")
    p.add_argument("--no-referrers", action="store_true", help="leave signatures and SBOMs")
    p.add_argument("--replicate-deletes", action="store_true", help="delete events delete there")
    p.add_argument(
        "--forward-replicated",
        action="store_true",
        help="also send on what replication brought here (off: no loops between sites)",
    )
    p.add_argument("--bandwidth-limit", type=int, help="bytes per second, per node")
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--description")
    p.set_defaults(func=cmd_add_policy)

    p = sub.add_parser("policies", help="list replication policies")
    add_common(p)
    p.set_defaults(func=cmd_policies)

    p = sub.add_parser("remove-policy", help="delete a policy and its history")
    add_common(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_remove_policy)

    p = sub.add_parser("run", help="run a policy now (one job per tag)")
    add_common(p)
    p.add_argument("policy")
    p.add_argument(
        "--wait",
        action="store_true",
        help="print each tag's outcome; exit 0 only when every tag succeeded",
    )
    p.add_argument("--timeout", type=float, default=0, help="with --wait: give up after seconds")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("executions", help="a policy's executions, newest first")
    add_common(p)
    p.add_argument("policy")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_executions)

    p = sub.add_parser("execution", help="one execution with each tag's outcome")
    add_common(p)
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_execution)
