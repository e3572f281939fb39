"""``moorage admin ...`` (users, organizations, teams, grants, robots, keys, visibility),
``moorage db upgrade`` and ``moorage config``. Each works on the database directly, beside a
running server, and records what it changed in the audit log."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable

from ..config import ConfigError
from .common import CommandTree, add_common, audit_cli, load


def cmd_create_user(args: argparse.Namespace) -> int:
    from ..auth.admin import create_user
    from ..logs import setup_logging

    config = load(args)
    setup_logging(config.log.format, config.log.level)
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        asyncio.run(create_user(config, args.name, password, is_admin=args.admin, email=args.email))
    except ValueError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 1
    audit_cli(config, "user.create", user=args.name, admin=bool(args.admin))
    print(f"created user {args.name}{' (administrator)' if args.admin else ''}")
    return 0


# admin function → audit action
_ADMIN_ACTIONS = {
    "create_org": "organization.create",
    "create_team": "team.create",
    "grant_role": "permission.grant",
    "revoke_robot": "robot.revoke",
    "set_visibility": "policy.change",
}


def _admin_call(
    name: str,
    positional: Callable[[argparse.Namespace], tuple[object, ...]],
    keywords: Callable[[argparse.Namespace], dict[str, object]] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """A command that runs one function of moorage.auth.admin, audits it, and reports its
    error plainly."""

    def run(args: argparse.Namespace) -> int:
        from ..auth import admin

        config = load(args)
        func = getattr(admin, name)
        pos = positional(args)
        kw = keywords(args) if keywords else {}
        try:
            asyncio.run(func(config, *pos, **kw))
        except ValueError as exc:
            print(f"moorage: {exc}", file=sys.stderr)
            return 1
        audit_cli(config, _ADMIN_ACTIONS[name], arguments=[str(p) for p in pos], **kw)
        print("ok")
        return 0

    return run


def cmd_create_robot(args: argparse.Namespace) -> int:
    from ..auth.admin import create_robot

    config = load(args)
    access: list[dict[str, object]] = []
    for item in args.access:
        target, sep, actions = item.partition("=")
        if not sep or not actions:
            print(f"moorage: --access wants TARGET=ACTIONS, got {item!r}", file=sys.stderr)
            return 1
        key = "repository" if "/" in target else "organization"
        access.append({key: target, "actions": actions.split(",")})
    try:
        name, secret = asyncio.run(
            create_robot(config, args.namespace, args.name, access, args.expires_days)
        )
    except ValueError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 1
    audit_cli(config, "robot.create", robot=name, access=access, expires_days=args.expires_days)
    print(f"name: {name}\nsecret: {secret}\n(the secret is shown only now)")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from ..auth.admin import rotate_keys
    from ..auth.keycrypt import KeyDecryptionError

    config = load(args)
    try:
        kid = asyncio.run(rotate_keys(config))
    except KeyDecryptionError as exc:
        raise ConfigError(str(exc)) from None
    audit_cli(config, "config.change", change="signing key rotated", kid=kid)
    print(f"new signing key {kid}; the previous one verifies for {config.auth.token.key_overlap} s")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from ..db.engine import upgrade_sync
    from ..logs import setup_logging

    config = load(args)
    setup_logging(config.log.format, config.log.level)
    os.makedirs(config.data_dir, exist_ok=True)
    upgrade_sync(config.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


SECRET_KEYS = (
    "bind_password",
    "password",
    "secret",
    "secret_key",
    "secret_access_key",
    "key_encryption_secret",
    "client_secret",  # auth.oidc.client_secret
    "token",  # metrics.token (auth.token is a section: sections are never masked whole)
)


# The password of a URL's userinfo (database.url, audit.http.url): scheme://user:***@host
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*:)[^/]*@")


def _redact(value: object, key: str = "") -> object:
    """Secrets masked: SECRET_KEYS, every header value (audit.http.headers carries
    Authorization), and passwords inside URLs."""
    if isinstance(value, dict):
        return {
            k: (
                "***"
                if v and ((k in SECRET_KEYS and not isinstance(v, dict)) or key == "headers")
                else _redact(v, k)
            )
            for k, v in value.items()
        }
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def cmd_config(args: argparse.Namespace) -> int:
    import json

    config = load(args)
    print(json.dumps(_redact(config.model_dump(mode="json")), indent=2))
    return 0


def register(tree: CommandTree) -> None:
    cu = tree.admin.add_parser("create-user", help="create a local user")
    add_common(cu)
    cu.add_argument("name")
    cu.add_argument("--admin", action="store_true", help="make a system administrator")
    cu.add_argument("--email")
    cu.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    cu.set_defaults(func=cmd_create_user)
    rk = tree.admin.add_parser("rotate-keys", help="start signing tokens with a new key")
    add_common(rk)
    rk.set_defaults(func=cmd_rotate_keys)

    co = tree.admin.add_parser("create-org", help="create an organization (a namespace)")
    add_common(co)
    co.add_argument("name")
    co.set_defaults(func=_admin_call("create_org", lambda a: (a.name,)))
    ct = tree.admin.add_parser("create-team", help="create a team (or add members to it)")
    add_common(ct)
    ct.add_argument("org")
    ct.add_argument("team")
    ct.add_argument("--member", action="append", default=[], help="username (repeatable)")
    ct.set_defaults(func=_admin_call("create_team", lambda a: (a.org, a.team, a.member)))
    gr = tree.admin.add_parser("grant", help="grant a role on an organization or repository")
    add_common(gr)
    gr.add_argument("role", choices=["read", "write", "admin"])
    gr.add_argument("target", help="organization name, or repository ns/name")
    who = gr.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--team", help="org/team")
    gr.set_defaults(
        func=_admin_call(
            "grant_role",
            lambda a: (a.role,),
            lambda a: {"user": a.user, "team": a.team, "target": a.target},
        )
    )
    cr = tree.admin.add_parser(
        "create-robot", help="create a robot account; prints its secret once"
    )
    add_common(cr)
    cr.add_argument("namespace")
    cr.add_argument("name")
    cr.add_argument(
        "--access",
        action="append",
        required=True,
        help="TARGET=ACTIONS, e.g. acme/api=pull,push or acme=pull (repeatable)",
    )
    cr.add_argument("--expires-days", type=int, default=None)
    cr.set_defaults(func=cmd_create_robot)
    rr = tree.admin.add_parser("revoke-robot", help="revoke a robot account")
    add_common(rr)
    rr.add_argument("name")
    rr.set_defaults(func=_admin_call("revoke_robot", lambda a: (a.name,)))
    sv = tree.admin.add_parser("set-visibility", help="make a repository public or private")
    add_common(sv)
    sv.add_argument("repository")
    sv.add_argument("visibility", choices=["public", "private"])
    sv.set_defaults(func=_admin_call("set_visibility", lambda a: (a.repository, a.visibility)))

    db = tree.top.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    add_common(up)
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    cfg = tree.top.add_parser("config", help="print the effective configuration")
    add_common(cfg)
    cfg.set_defaults(func=cmd_config)
