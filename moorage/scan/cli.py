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
from typing import TYPE_CHECKING, Any

from ..cli.common import CommandTree, add_common, audit_cli, cli_actor, fail, load

if TYPE_CHECKING:  # the commands import what they use: parsing the command line stays cheap
    from .service import Result


def parse_reference(text: str) -> tuple[str, str] | None:
    """``repo@digest`` or ``repo:tag`` → (repository, reference)."""
    from ..oci.digest import is_digest
    from ..oci.names import valid_name, valid_tag

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
    from .service import SEVERITIES

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
    sp = tree.admin.add_parser(
        "set-scanner",
        help="scan an organization's images with an external Harbor pluggable scanner adapter "
        "(API v1.2) or with the built-in scanner",
    )
    add_common(sp)
    sp.add_argument("organization", metavar="ORG")
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument("--adapter", metavar="URL", help="the adapter's base URL ({URL}/api/v1/...)")
    which.add_argument("--builtin", action="store_true", help="the built-in scanner again")
    sp.add_argument(
        "--auth-header",
        metavar="NAME",
        help="header the adapter authenticates (default Authorization when a credential is given)",
    )
    sp.add_argument(
        "--credential-stdin",
        action="store_true",
        help="read the header's value (e.g. 'Bearer ...') from stdin; stored encrypted",
    )
    sp.add_argument(
        "--no-check", action="store_true", help="do not read the adapter's metadata first"
    )
    sp.set_defaults(func=cmd_set_scanner)


def cmd_set_scanner(args: argparse.Namespace) -> int:
    import sys

    from ..services.errors import ServiceError

    credential = None
    if args.credential_stdin:
        if args.builtin:
            return fail("--credential-stdin goes with --adapter")
        credential = sys.stdin.readline().rstrip("\r\n")
    elif args.auth_header:
        return fail("--auth-header needs --credential-stdin (the header's value)")
    config = load(args)

    async def go() -> Any:
        from ..runtime import runtime

        async with runtime(config) as rt:
            external = rt.services["scan"].external
            return await external.configure(
                args.organization,
                None if args.builtin else args.adapter,
                args.auth_header,
                credential,
                cli_actor(),
                check=not args.no_check,
            )

    from sqlalchemy.exc import SQLAlchemyError

    from ..auth.keycrypt import KeyDecryptionError

    try:
        setting, meta = asyncio.run(go())
    except ServiceError as exc:
        return fail(str(getattr(exc, "message", exc)))
    except KeyDecryptionError as exc:
        return fail(str(exc))
    except SQLAlchemyError as exc:
        return fail(f"database error (is it migrated? moorage db upgrade): {type(exc).__name__}", 2)
    if setting is None:
        audit_cli(config, "scan.scanner.set", organization=args.organization, scanner="builtin")
        print(f"{args.organization}: the built-in scanner")
        return 0
    audit_cli(
        config,
        "scan.scanner.set",
        organization=args.organization,
        scanner="external",
        adapter_url=setting.adapter_url,
        auth_header=setting.auth_header,
    )
    what = f" ({meta.label})" if meta is not None else ""
    print(f"{args.organization}: external scanner adapter {setting.adapter_url}{what}")
    return 0
