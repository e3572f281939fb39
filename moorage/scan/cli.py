"""``moorage scan REPOSITORY:TAG|REPOSITORY@DIGEST [--wait] [--format json|table]``.

Without ``--wait`` the scan is queued (a running node's job runner takes it). With ``--wait``
this process scans the image itself (the layer cache is shared, so a layer another node read
is not read again) and prints the result; the exit code is 0 when the scan finished (whatever
it found), 1 when it failed. Works while the server runs: it talks to the database and the
storage only."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ..cli.common import CommandTree, add_common, fail, load
from ..oci.digest import is_digest
from ..oci.names import valid_name, valid_tag
from .service import SEVERITIES, Result


def parse_reference(text: str) -> tuple[str, str] | None:
    """``repo@digest`` or ``repo:tag`` → (repository, reference)."""
    if "@" in text:
        repo, _, ref = text.partition("@")
        return (repo, ref) if valid_name(repo) and is_digest(ref) else None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon <= slash:
        return None
    repo, ref = text[:colon], text[colon + 1 :]
    return (repo, ref) if valid_name(repo) and valid_tag(ref) else None


def report(result: Result) -> dict[str, Any]:
    return {
        "digest": result.digest,
        "status": result.status,
        "scanned_at": result.scanned_at.isoformat() if result.scanned_at else None,
        "database_updated_at": result.database_updated_at.isoformat()
        if result.database_updated_at
        else None,
        "summary": result.summary or dict.fromkeys(SEVERITIES, 0),
        "findings": result.findings,
        "packages": len((result.inventory or {}).get("packages", [])),
        "error": result.error,
    }


def table(doc: dict[str, Any]) -> str:
    lines = [
        f"digest\t{doc['digest']}",
        f"status\t{doc['status']}",
        f"scanned_at\t{doc['scanned_at'] or '-'}",
        f"database_updated_at\t{doc['database_updated_at'] or '-'}",
        f"packages\t{doc['packages']}",
        "summary\t" + " ".join(f"{k}={v}" for k, v in doc["summary"].items()),
    ]
    if doc.get("error"):
        lines.append(f"error\t{doc['error']}")
    if doc["findings"]:
        lines.append("ID\tSEVERITY\tPACKAGE\tVERSION\tFIXED")
        for f in doc["findings"]:
            lines.append(
                f"{f.get('id', '')}\t{f.get('severity', '')}\t{f.get('package', '')}\t"
                f"{f.get('version', '')}\t{f.get('fixed_version') or '-'}"
            )
    return "\n".join(lines)


def cmd_scan(args: argparse.Namespace) -> int:
    parsed = parse_reference(args.reference)
    if parsed is None:
        return fail(f"{args.reference!r} is not REPOSITORY:TAG or REPOSITORY@DIGEST")
    repository, reference = parsed
    config = load(args)

    async def go() -> tuple[str, Result | None] | str:
        from ..db import queries as core_q
        from ..runtime import runtime

        async with runtime(config) as rt:
            service = rt.services["scan"]
            async with rt.ctx.engine.connect() as conn:
                row = (
                    await core_q.manifest_by_digest(conn, repository, reference)
                    if ":" in reference
                    else await core_q.manifest_by_tag(conn, repository, reference)
                )
            if row is None:
                return f"no manifest {reference} in {repository}"
            if not args.wait:
                await service.request(repository, row.digest)
                return row.digest, None
            await service.scan(repository, row.digest)
            return row.digest, await service.result(row.digest)

    out = asyncio.run(go())
    if isinstance(out, str):
        return fail(out)
    digest, result = out
    if result is None:
        print(json.dumps({"digest": digest, "status": "pending"}) if args.format == "json"
              else f"queued a scan of {repository}@{digest}")  # fmt: skip
        return 0
    doc = report(result)
    print(json.dumps(doc, indent=1) if args.format == "json" else table(doc))
    return 1 if result.status == "failed" else 0


def register(tree: CommandTree) -> None:
    p = tree.top.add_parser("scan", help="scan an image: its inventory and vulnerabilities")
    add_common(p)
    p.add_argument("reference", metavar="REPOSITORY:TAG|REPOSITORY@DIGEST")
    p.add_argument("--wait", action="store_true", help="scan now and print the result")
    p.add_argument("--format", choices=("json", "table"), default="table")
    p.set_defaults(func=cmd_scan)
