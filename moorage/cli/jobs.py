"""``moorage jobs list`` and ``moorage jobs run KIND``: look at and queue background work.

Both talk to the database only, so they work beside running nodes (one of which runs the job).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..config import Config
from .common import CommandTree, add_common, load


async def _list(config: Config, state: str | None, kind: str | None, limit: int) -> list[Any]:
    from ..db import job_queries
    from ..db.engine import create_engine

    engine = create_engine(config.database_url, 1)
    try:
        async with engine.connect() as conn:
            return await job_queries.list_jobs(conn, state=state, kind=kind, limit=limit)
    finally:
        await engine.dispose()


async def _enqueue(config: Config, kind: str, payload: dict[str, Any]) -> int | None:
    from ..db import job_queries
    from ..db.engine import create_engine, writer

    engine = create_engine(config.database_url, 1)
    try:
        async with writer(engine).begin() as conn:
            return await job_queries.enqueue(
                conn, kind, payload, max_attempts=config.jobs.max_attempts
            )
    finally:
        await engine.dispose()


def cmd_list(args: argparse.Namespace) -> int:
    config = load(args)
    try:
        rows = asyncio.run(_list(config, args.state, args.kind, args.limit))
    except SQLAlchemyError as exc:
        print(f"moorage: database error: {exc}", file=sys.stderr)
        return 2
    for j in rows:
        print(
            f"{j.id}\t{j.kind}\t{j.state}\tattempts={j.attempts}/{j.max_attempts}"
            f"\trun_after={j.run_after.isoformat()}\tnode={j.claimed_by or '-'}"
            + (f"\tprogress={_progress(j.progress)}" if j.progress else "")
            + (f"\terror={j.last_error}" if j.last_error else "")
            + (f"\tresult={json.dumps(j.result)}" if j.result is not None else "")
        )
    return 0


def _progress(p: dict[str, Any]) -> str:
    done, total = p.get("done", 0), p.get("total")
    text = f"{done}/{total}" if total is not None else str(done)
    return f"{text} {p['message']}" if p.get("message") else text


async def _get(config: Config, job_id: int) -> Any:
    from ..db import job_queries
    from ..db.engine import create_engine

    engine = create_engine(config.database_url, 1)
    try:
        async with engine.connect() as conn:
            return await job_queries.get_job(conn, job_id)
    finally:
        await engine.dispose()


def cmd_show(args: argparse.Namespace) -> int:
    from ..services.jobs import job_model

    config = load(args)
    try:
        job = asyncio.run(_get(config, args.id))
    except SQLAlchemyError as exc:
        print(f"moorage: database error: {exc}", file=sys.stderr)
        return 2
    if job is None:
        print(f"moorage: no job {args.id}", file=sys.stderr)
        return 1
    print(job_model(job).model_dump_json(indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..capabilities import installed
    from ..jobs.tasks import KNOWN_KINDS

    known = KNOWN_KINDS | {kind for cap in installed() for kind in cap.job_kinds}
    if args.kind not in known:
        print(
            f"moorage: unknown job kind {args.kind!r} (one of: {', '.join(sorted(known))})",
            file=sys.stderr,
        )
        return 2
    try:
        payload = json.loads(args.payload)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        print(f"moorage: --payload must be a JSON object ({exc})", file=sys.stderr)
        return 2
    config = load(args)
    try:
        job_id = asyncio.run(_enqueue(config, args.kind, payload))
    except SQLAlchemyError as exc:
        print(f"moorage: database error: {exc}", file=sys.stderr)
        return 2
    print(f"queued job {job_id} ({args.kind}); a running node picks it up")
    return 0


def register(tree: CommandTree) -> None:
    jobs = tree.top.add_parser("jobs", help="background jobs shared by every node")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    ls = jobs_sub.add_parser("list", help="recent jobs, newest first")
    add_common(ls)
    ls.add_argument("--state", choices=("queued", "running", "succeeded", "failed"))
    ls.add_argument("--kind")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)
    show = jobs_sub.add_parser("show", help="one job as JSON: state, progress, result or error")
    add_common(show)
    show.add_argument("id", type=int)
    show.set_defaults(func=cmd_show)
    run = jobs_sub.add_parser("run", help="queue a job now (e.g. uploads.purge_stale)")
    add_common(run)
    run.add_argument("kind")
    run.add_argument("--payload", default="{}", help="JSON object passed to the job")
    run.set_defaults(func=cmd_run)
