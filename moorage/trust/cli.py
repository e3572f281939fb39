"""``moorage trust ...``: content-trust configuration and pull policies from the command line.

The contract's spellings (kept): ``add-key NAMESPACE NAME --public-key PEMFILE``,
``add-notation-store NAMESPACE NAME --root-cert PEMFILE...``, ``set-policy ORG-or-REPO
--require-signature on|off [--signer NAME...]``; NAMESPACE may be ``*`` (the system default).
Each command works on the database beside running servers (every node sees the change within
the trust refresh interval), goes through the same service as the API and the UI (validation,
re-verification job) and is audited as a ``system`` actor named ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..cli.common import CommandTree, add_common, cli_actor, fail, load

Action = Callable[[Any, Any], Awaitable[int]]


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"moorage: cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > 4 * 1024 * 1024:
        raise SystemExit(f"moorage: {what} {path} is too large")
    return data


def _run(args: argparse.Namespace, action: Action) -> int:
    """Run *action(admin, caller)* with the trust service of a short-lived runtime."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..runtime import build_access_service, runtime
    from ..services.errors import ServiceError
    from .admin import TrustAdmin, system_caller

    config = load(args)

    async def go() -> int:
        async with runtime(config) as rt:
            admin = rt.services.get("trust.admin")
            if admin is None:  # access control off: the CLI still manages trust
                access = build_access_service(config, rt.ctx)
                admin = TrustAdmin(rt.ctx, access, rt.audit).bind(rt.services["trust"])
            return await action(admin, system_caller(cli_actor()))

    try:
        return asyncio.run(go())
    except ServiceError as exc:
        return fail(exc.message)
    except SQLAlchemyError as exc:
        return fail(f"database error (is the database migrated? 'moorage db upgrade'): {exc}", 2)


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("on or off")
    return value == "on"


# --- commands ---------------------------------------------------------------------------------


def cmd_add_key(args: argparse.Namespace) -> int:
    pem = _read(args.public_key, "public key")

    async def act(admin: Any, caller: Any) -> int:
        fp = await admin.add_key(caller, args.namespace, args.name, pem)
        print(f"trusted key {args.name} in {args.namespace} ({fp})")
        return 0

    return _run(args, act)


def cmd_add_store(args: argparse.Namespace) -> int:
    certs: list[bytes | str] = [_read(p, "certificate") for p in args.root_cert]

    async def act(admin: Any, caller: Any) -> int:
        n = await admin.add_notation_store(caller, args.namespace, args.name, certs, args.type)
        print(f"Notation trust store {args.type}:{args.name} in {args.namespace} holds {n} certificate(s)")
        return 0

    return _run(args, act)


def cmd_add_keyless(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        await admin.add_keyless(
            caller, args.namespace, args.name, identity=args.identity, issuer=args.issuer,
            identity_regex=args.identity_regex, issuer_regex=args.issuer_regex,
        )  # fmt: skip
        print(f"trusted keyless identity {args.name} in {args.namespace}")
        return 0

    return _run(args, act)


def cmd_add_ca(args: argparse.Namespace) -> int:
    roots = b"".join(_read(p, "certificate") for p in args.root_cert)
    inter = b"".join(_read(p, "certificate") for p in args.intermediate_cert or [])

    async def act(admin: Any, caller: Any) -> int:
        await admin.add_ca(
            caller, args.namespace, args.name, roots=roots, intermediates=inter or None,
            email=args.email, hostname=args.hostname,
        )  # fmt: skip
        print(f"trusted CA {args.name} in {args.namespace}")
        return 0

    return _run(args, act)


def cmd_remove_key(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        await admin.remove_entry(caller, args.namespace, args.name)
        print(f"removed {args.name} from {args.namespace}")
        return 0

    return _run(args, act)


def cmd_remove_store(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        await admin.remove_entry(caller, args.namespace, args.name, f"notation-{args.type}")
        print(f"removed Notation trust store {args.type}:{args.name} from {args.namespace}")
        return 0

    return _run(args, act)


def _document(args: argparse.Namespace, what: str) -> Any:
    if args.clear:
        return None
    if not args.file:
        raise SystemExit(f"moorage: give the {what} file, or --clear")
    try:
        doc = json.loads(_read(args.file, what))
    except ValueError:
        raise SystemExit(f"moorage: {args.file} is not JSON") from None
    return doc


def cmd_set_trusted_root(args: argparse.Namespace) -> int:
    doc = _document(args, "trusted_root.json")

    async def act(admin: Any, caller: Any) -> int:
        await admin.set_trusted_root(caller, args.namespace, doc)
        print(f"Sigstore trusted root of {args.namespace} {'removed' if doc is None else 'set'}")
        return 0

    return _run(args, act)


def cmd_set_notation_policy(args: argparse.Namespace) -> int:
    doc = _document(args, "trust policy")

    async def act(admin: Any, caller: Any) -> int:
        await admin.set_notation_policy(caller, args.namespace, doc)
        print(f"Notation trust policy of {args.namespace} {'removed' if doc is None else 'set'}")
        return 0

    return _run(args, act)


def cmd_set_rekor(args: argparse.Namespace) -> int:
    value = {"on": True, "off": False, "inherit": None}[args.value]

    async def act(admin: Any, caller: Any) -> int:
        await admin.set_require_tlog(caller, args.namespace, value)
        print(f"key signatures in {args.namespace} need a Rekor entry: {args.value}")
        return 0

    return _run(args, act)


def cmd_set_policy(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        row = await admin.set_policy(
            caller, args.target, require_signature=args.require_signature,
            signers=args.signer or [], require_all=args.all,
            docker_reference=args.docker_reference,
        )  # fmt: skip
        print(_policy_line(row))
        return 0

    return _run(args, act)


def cmd_remove_policy(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        await admin.delete_policy(caller, args.target)
        print(f"removed the trust policy of {args.target}")
        return 0

    return _run(args, act)


def _policy_line(p: Any) -> str:
    if not p.require_signature:
        rule = "signatures not required"
    elif not p.signers:
        rule = "signed-only: any verified signature"
    else:
        rule = f"signed-only: {'all' if p.require_all else 'one'} of {', '.join(p.signers)}"
    ref = f"; docker-reference {p.docker_reference}" if p.docker_reference else ""
    return f"{p.target}\t{rule}{ref}"


def cmd_list(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        names = [args.namespace] if args.namespace else await admin.namespaces(caller)
        for ns in names:
            cfg = await admin.namespace_config(caller, ns)
            print(f"[{ns}] version {cfg.version}"
                  f"{'; Sigstore trusted root set' if cfg.sigstore_trusted_root else ''}"
                  f"{'; Notation trust policy set' if cfg.notation_policy else ''}"
                  f"{'' if cfg.require_tlog_for_keys is None else f'; Rekor required: {cfg.require_tlog_for_keys}'}")  # noqa: E501
            for e in cfg.entries:
                print(f"  {e.kind}\t{e.name}\t{_entry_detail(e)}")
        for p in await admin.policies(caller):
            if not args.namespace or p.target.split("/", 1)[0] in (args.namespace, "*"):
                print("policy\t" + _policy_line(p))
        return 0

    return _run(args, act)


def _entry_detail(e: Any) -> str:
    s = e.spec
    if e.kind == "key":
        from .admin import fingerprint

        return fingerprint(s["public_key"])
    if e.kind == "keyless":
        return f"identity={s['identity']} issuer={s['issuer']}"
    if e.kind == "pki":
        return f"email={s.get('email') or '-'} hostname={s.get('hostname') or '-'}"
    return f"{len(s.get('certificates', []))} certificate(s)"


def cmd_status(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        from .api import contract

        report = await admin.report(caller, args.repository, args.reference)
        print(json.dumps(contract(report).model_dump(mode="json"), indent=2))
        return 0 if report.verdict.status == "trusted" else 3

    return _run(args, act)


def cmd_reverify(args: argparse.Namespace) -> int:
    async def act(admin: Any, caller: Any) -> int:
        job = await admin.reverify(caller, args.namespace)
        print(f"queued job {job}" if job else "a re-verification of this namespace is already queued")
        return 0

    return _run(args, act)


def register(tree: CommandTree) -> None:
    trust = tree.top.add_parser("trust", help="content trust: signing keys, trust stores, signed-only pulls")
    sub = trust.add_subparsers(dest="trust_command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help)
        add_common(p)
        p.set_defaults(func=func)
        return p

    ns_help = "organization, or * for the system default"
    p = command("add-key", cmd_add_key, "trust a cosign public key")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("name")
    p.add_argument("--public-key", required=True, metavar="PEMFILE")
    p = command("add-notation-store", cmd_add_store, "add root certificates to a Notation trust store")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("name")
    p.add_argument("--root-cert", required=True, nargs="+", metavar="PEMFILE")
    p.add_argument("--type", default="ca", choices=("ca", "signingAuthority", "tsa"))
    p = command("set-policy", cmd_set_policy, "signed-only pulls for *, an organization or a repository")
    p.add_argument("target", metavar="ORG-or-REPO")
    p.add_argument("--require-signature", required=True, type=_on_off, metavar="on|off")
    p.add_argument("--signer", nargs="+", metavar="NAME", help="key, identity, CA or Notation store names")
    p.add_argument("--all", action="store_true", help="require every --signer (two-person rule)")
    p.add_argument("--docker-reference", metavar="PATTERN", help="cosign's signed reference must match")
    p = command("remove-policy", cmd_remove_policy, "remove a pull policy")
    p.add_argument("target", metavar="ORG-or-REPO")
    p = command("add-keyless", cmd_add_keyless, "trust a keyless (Fulcio) signer identity")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("name")
    p.add_argument("--identity", required=True, help="certificate SAN (email or URI)")
    p.add_argument("--issuer", required=True, help="OIDC issuer URL")
    p.add_argument("--identity-regex", action="store_true")
    p.add_argument("--issuer-regex", action="store_true")
    p = command("add-ca", cmd_add_ca, "trust a private CA for cosign certificate signatures")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("name")
    p.add_argument("--root-cert", required=True, nargs="+", metavar="PEMFILE")
    p.add_argument("--intermediate-cert", nargs="+", metavar="PEMFILE")
    p.add_argument("--email")
    p.add_argument("--hostname")
    p = command("remove-key", cmd_remove_key, "remove a key, keyless identity or CA")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("name")
    p = command("remove-notation-store", cmd_remove_store, "remove a Notation trust store")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("name")
    p.add_argument("--type", default="ca", choices=("ca", "signingAuthority", "tsa"))
    for name, func, what in (
        ("set-trusted-root", cmd_set_trusted_root, "Sigstore trusted_root.json"),
        ("set-notation-policy", cmd_set_notation_policy, "Notation trust policy (trustpolicy.json)"),
    ):
        p = command(name, func, f"set or clear the {what}")
        p.add_argument("namespace", help=ns_help)
        p.add_argument("file", nargs="?", metavar="FILE")
        p.add_argument("--clear", action="store_true")
    p = command("set-rekor", cmd_set_rekor, "whether key signatures need a Rekor entry")
    p.add_argument("namespace", help=ns_help)
    p.add_argument("value", choices=("on", "off", "inherit"))
    p = command("list", cmd_list, "show trust configuration and policies")
    p.add_argument("namespace", nargs="?", help=ns_help)
    p = command("status", cmd_status, "the trust verdict of a tag or digest (exit 3 unless trusted)")
    p.add_argument("repository")
    p.add_argument("reference", help="tag or digest")
    p = command("reverify", cmd_reverify, "queue a re-verification of a namespace's signatures")
    p.add_argument("namespace", help=ns_help)

