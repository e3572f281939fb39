"""The ``moorage`` command. Its spellings are a contract operators script against."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .auth.bootstrap import bootstrap
from .config import Config, ConfigError, load_config
from .db.engine import upgrade_sync
from .logs import setup_logging

log = logging.getLogger("moorage")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML configuration file (also MOORAGE_CONFIG)")
    p.add_argument("--data-dir", help="data directory (SQLite database, filesystem store)")


def _load(args: argparse.Namespace, **overrides: object) -> Config:
    values = {"data_dir": args.data_dir, **overrides}
    return load_config(args.config, overrides=values)


def _check_storage(config: Config) -> None:
    """Settings a driver refuses (e.g. S3 without credentials) are a configuration error, said
    before anything starts."""
    from .app import make_storage
    from .storage.base import StorageError

    try:
        make_storage(config)
    except StorageError as exc:
        raise ConfigError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(
        args,
        **{
            "http.host": args.host,
            "http.port": args.port,
            "http.workers": args.workers,
            "http.tls.certificate": args.tls_cert,
            "http.tls.key": args.tls_key,
            "auth.enabled": False if args.no_auth else None,
        },
    )
    setup_logging(config.log.format, config.log.level)
    _check_storage(config)
    os.makedirs(config.data_dir, exist_ok=True)
    if config.database.migrate_on_start:
        upgrade_sync(config.database_url)
    if config.auth.enabled:
        asyncio.run(bootstrap(config))
    else:
        log.warning(
            "*** --no-auth: AUTHENTICATION IS OFF. Every client has full access to every "
            "repository. For local development and benchmarks only. ***"
        )
    scheme = "https" if config.http.tls.certificate else "http"
    log.info(
        "moorage %s serving on %s://%s:%d (database %s, storage %s, %d worker(s))",
        __version__,
        scheme,
        config.http.host,
        config.http.port,
        config.database_url.split("@")[-1],
        config.storage.driver,
        config.http.workers,
    )
    import uvicorn

    from .app import Moorage

    common = {
        "host": config.http.host,
        "port": config.http.port,
        "ssl_certfile": config.http.tls.certificate,
        "ssl_keyfile": config.http.tls.key,
        "timeout_graceful_shutdown": int(config.http.shutdown_timeout),
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_keep_alive": 30,
    }
    if config.http.workers > 1:
        os.environ["MOORAGE_EFFECTIVE_CONFIG"] = config.model_dump_json()
        uvicorn.run(
            "moorage.app:app_from_environment",
            factory=True,
            workers=config.http.workers,
            **common,  # type: ignore[arg-type]
        )
    else:
        uvicorn.run(Moorage(config), **common)  # type: ignore[arg-type]
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from .auth.admin import create_user

    config = _load(args)
    setup_logging(config.log.format, config.log.level)
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        asyncio.run(create_user(config, args.name, password, is_admin=args.admin, email=args.email))
    except ValueError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 1
    _audit_cli(config, "user.create", user=args.name, admin=bool(args.admin))
    print(f"created user {args.name}{' (administrator)' if args.admin else ''}")
    return 0


def _audit_cli(config: Config, action: str, **fields: object) -> None:
    """Record an administrative command in the audit log (durably, before returning)."""
    import getpass

    from .audit import AuditEvent, AuditLog
    from .db.engine import create_engine, writer

    async def write() -> None:
        engine = create_engine(config.database_url, 1)
        try:
            log_ = AuditLog(writer(engine), config.audit)
            await log_.record_now(
                AuditEvent(
                    action,
                    actor=f"cli:{getpass.getuser()}",
                    actor_type="system",
                    details=fields,
                )
            )
        finally:
            await engine.dispose()

    asyncio.run(write())


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
        from .auth import admin

        config = _load(args)
        func = getattr(admin, name)
        pos = positional(args)
        kw = keywords(args) if keywords else {}
        try:
            asyncio.run(func(config, *pos, **kw))
        except ValueError as exc:
            print(f"moorage: {exc}", file=sys.stderr)
            return 1
        _audit_cli(config, _ADMIN_ACTIONS[name], arguments=[str(p) for p in pos], **kw)
        print("ok")
        return 0

    return run


def cmd_create_robot(args: argparse.Namespace) -> int:
    from .auth.admin import create_robot

    config = _load(args)
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
    _audit_cli(config, "robot.create", robot=name, access=access, expires_days=args.expires_days)
    print(f"name: {name}\nsecret: {secret}\n(the secret is shown only now)")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from .auth.admin import rotate_keys
    from .auth.keycrypt import KeyDecryptionError

    config = _load(args)
    try:
        kid = asyncio.run(rotate_keys(config))
    except KeyDecryptionError as exc:
        raise ConfigError(str(exc)) from None
    _audit_cli(config, "config.change", change="signing key rotated", kid=kid)
    print(f"new signing key {kid}; the previous one verifies for {config.auth.token.key_overlap} s")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = _load(args)
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
)


# The password of a URL's userinfo (database.url, audit.http.url): scheme://user:***@host
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*:)[^/]*@")


def _redact(value: object, key: str = "") -> object:
    """Secrets masked: SECRET_KEYS, every header value (audit.http.headers carries
    Authorization), and passwords inside URLs."""
    if isinstance(value, dict):
        return {
            k: ("***" if v and (k in SECRET_KEYS or key == "headers") else _redact(v, k))
            for k, v in value.items()
        }
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def cmd_config(args: argparse.Namespace) -> int:
    import json

    config = _load(args)
    print(json.dumps(_redact(config.model_dump(mode="json")), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moorage", description="Moorage container registry")
    parser.add_argument("--version", action="version", version=f"moorage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the registry")
    _common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 5000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="anonymous full access (local development and benchmarks only)",
    )
    serve.set_defaults(func=cmd_serve)

    admin = sub.add_parser("admin", help="administration (works while the server runs)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    cu = admin_sub.add_parser("create-user", help="create a local user")
    _common(cu)
    cu.add_argument("name")
    cu.add_argument("--admin", action="store_true", help="make a system administrator")
    cu.add_argument("--email")
    cu.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    cu.set_defaults(func=cmd_create_user)
    rk = admin_sub.add_parser("rotate-keys", help="start signing tokens with a new key")
    _common(rk)
    rk.set_defaults(func=cmd_rotate_keys)

    co = admin_sub.add_parser("create-org", help="create an organization (a namespace)")
    _common(co)
    co.add_argument("name")
    co.set_defaults(func=_admin_call("create_org", lambda a: (a.name,)))
    ct = admin_sub.add_parser("create-team", help="create a team (or add members to it)")
    _common(ct)
    ct.add_argument("org")
    ct.add_argument("team")
    ct.add_argument("--member", action="append", default=[], help="username (repeatable)")
    ct.set_defaults(func=_admin_call("create_team", lambda a: (a.org, a.team, a.member)))
    gr = admin_sub.add_parser("grant", help="grant a role on an organization or repository")
    _common(gr)
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
    cr = admin_sub.add_parser("create-robot", help="create a robot account; prints its secret once")
    _common(cr)
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
    rr = admin_sub.add_parser("revoke-robot", help="revoke a robot account")
    _common(rr)
    rr.add_argument("name")
    rr.set_defaults(func=_admin_call("revoke_robot", lambda a: (a.name,)))
    sv = admin_sub.add_parser("set-visibility", help="make a repository public or private")
    _common(sv)
    sv.add_argument("repository")
    sv.add_argument("visibility", choices=["public", "private"])
    sv.set_defaults(func=_admin_call("set_visibility", lambda a: (a.repository, a.visibility)))

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    _common(up)
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    from .cli_audit import register as register_audit

    register_audit(sub)

    from .cli_jobs import register as register_jobs

    register_jobs(sub)

    cfg = sub.add_parser("config", help="print the effective configuration")
    _common(cfg)
    cfg.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"moorage: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an export file that cannot be written
        print(f"moorage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
