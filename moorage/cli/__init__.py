"""The ``moorage`` command. Its spellings are a contract operators script against.

One module per area: serve.py (``serve``, ``worker``), admin.py (``admin ...``, ``db upgrade``,
``config``), audit.py (``audit ...``), jobs.py (``jobs ...``); common.py holds what they share.
Each installed capability (moorage/capabilities.py) adds its own commands through its ``cli``
hook, from its own package.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..capability import Capability
from ..config import ConfigError
from . import admin, audit, jobs, serve
from .common import CommandTree, load


def build_parser(capabilities: tuple[Capability, ...] | None = None) -> argparse.ArgumentParser:
    """The whole command; *capabilities* default to the installed ones."""
    from ..capabilities import installed

    parser = argparse.ArgumentParser(prog="moorage", description="Moorage container registry")
    parser.add_argument("--version", action="version", version=f"moorage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    admin_parser = sub.add_parser("admin", help="administration (works while the server runs)")
    tree = CommandTree(sub, admin_parser.add_subparsers(dest="admin_command", required=True))
    for module in (serve, admin, audit, jobs):
        module.register(tree)
    for cap in installed() if capabilities is None else capabilities:
        if cap.cli is not None:
            cap.cli(tree)
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
    except Exception as exc:
        # A database that cannot serve the command (unreachable, no tables yet, a wrong
        # password): one line that says what to do, as at the server's start, not a traceback.
        from sqlalchemy.exc import DBAPIError

        from ..startup import explain

        if not isinstance(exc, DBAPIError):
            raise
        url: str | None = None
        with contextlib.suppress(Exception):
            url = load(args).database_url
        print(f"moorage: {explain(exc, database_url=url)}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
