"""The ``moorage`` command. Its spellings are a contract operators script against."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
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


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(
        args,
        **{
            "http.host": args.host,
            "http.port": args.port,
            "http.workers": args.workers,
            "http.tls.certificate": args.tls_cert,
            "http.tls.key": args.tls_key,
        },
    )
    setup_logging(config.log.format, config.log.level)
    os.makedirs(config.data_dir, exist_ok=True)
    if config.database.migrate_on_start:
        upgrade_sync(config.database_url)
    log.warning(
        "access control is not configured: every client has full access to this registry. "
        "Bind it to a trusted network only."
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


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = _load(args)
    setup_logging(config.log.format, config.log.level)
    os.makedirs(config.data_dir, exist_ok=True)
    upgrade_sync(config.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(config.model_dump_json(indent=2))
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
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    _common(up)
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

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


if __name__ == "__main__":
    raise SystemExit(main())
