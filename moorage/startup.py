"""Why a process could not start, in one line an operator can act on.

Every start-up failure of ``moorage serve`` and ``moorage worker`` — a full disk, a database
that cannot be reached or refuses the login, a port in use, a directory that cannot be written —
ends with one line on standard error, ``moorage: cannot start: <what is wrong>; <what to do>``,
and a non-zero exit code; the traceback goes to the log at debug level only
(``MOORAGE_LOG_LEVEL=debug``). Configuration errors have their own line (moorage/config.py).

The checks here run before anything else starts (:func:`check_port`, :func:`check_disk`,
:func:`check_database`);
:func:`explain` turns whatever else fails during start into the line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
from urllib.parse import urlsplit

from .config import ConfigError

log = logging.getLogger("moorage")

# Below this many free bytes a failing write is taken for a full disk.
NEARLY_FULL = 4 << 20


class StartupError(Exception):
    """A start-up failure already explained (its message is the line)."""


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return out


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    # SQLAlchemy's wrapping: "(module.Class) message (Background on this error at: URL)".
    line = re.sub(r"^\([\w.]+\) ", "", line)
    line = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", line)
    line = line.split(" [SQL: ", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _free_bytes(path: str) -> int | None:
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _no_space(place: str, free: int | None) -> str:
    shown = "unknown" if free is None else f"{free // 1024} KiB"
    return (
        f"no space left on the disk holding {os.path.abspath(place)} ({shown} free); free "
        "space there (or move data_dir / database.url to a larger disk) and start again"
    )


def _disks(data_dir: str | None, database_url: str | None) -> list[str]:
    """The places whose disk a start needs room on: the data directory, the SQLite file."""
    return [p for p in (data_dir, _sqlite_path(database_url or "")) if p]


def check_disk(data_dir: str, database_url: str) -> None:
    """Refuse to start on a disk (nearly) full: the data directory's and the SQLite file's.

    Whether a start on a full disk fails at all would otherwise depend on what the last process
    left there: with the database's -wal and -shm files still present (a process killed, or one
    that did not close every connection) SQLite opens, reads, and the server starts, then fails
    every write — pushes, audit records, jobs — one request at a time."""
    for place in _disks(data_dir, database_url):
        free = _free_bytes(place)
        if free is not None and free < NEARLY_FULL:
            raise StartupError(_no_space(place, free))


def describe_database(url: str) -> str:
    """Where the database is, without its password."""
    if url.startswith("sqlite"):
        return "SQLite database " + url.split(":///", 1)[-1]
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    name = parts.path.lstrip("/") or "(default)"
    return f"PostgreSQL database {name!r} at {host}:{port}"


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    return url.split(":///", 1)[-1].split("?", 1)[0] or None


def explain(
    exc: BaseException, *, data_dir: str | None = None, database_url: str | None = None
) -> str:
    """The one line for *exc*, raised while starting."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, StartupError):
            return str(e)
        if isinstance(e, ConfigError):
            return f"configuration error: {_one_line(str(e), 400)}"
    # A full disk: ENOSPC anywhere, or SQLite's write errors on a disk (nearly) full.
    places = _disks(data_dir, database_url)
    for e in chain:
        text = str(e).lower()
        enospc = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        sqlite_write = any(
            s in text for s in ("database or disk is full", "disk i/o error", "no space left")
        )
        if enospc or sqlite_write:
            for place in places:
                free = _free_bytes(place)
                if enospc or (free is not None and free < NEARLY_FULL):
                    return _no_space(place, free)
            if enospc:
                return f"no space left on a disk ({_one_line(str(e))}); free space and start again"
    db = describe_database(database_url) if database_url else "the database"
    for e in chain:
        name = type(e).__name__
        text = _one_line(str(e))
        if name == "InvalidPasswordError" or "password authentication failed" in text:
            return (
                f"{db} refused the login ({text}); fix the user and password in database.url "
                "(MOORAGE_DATABASE_URL)"
            )
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            return (
                f"{db} lacks Moorage's tables ({text}); run 'moorage db upgrade' or set "
                "database.migrate_on_start: true"
            )
        if name == "InvalidCatalogNameError" or ("database" in text and "does not exist" in text):
            return (
                f"{db} does not exist ({text}); create it (createdb) or fix database.url "
                "(MOORAGE_DATABASE_URL)"
            )
        if isinstance(e, socket.gaierror):
            return (
                f"cannot resolve the host of {db} ({text}); fix the host in database.url "
                "(MOORAGE_DATABASE_URL)"
            )
        if isinstance(e, ConnectionError | TimeoutError | asyncio.TimeoutError) or (
            isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH)
        ):
            return (
                f"cannot reach {db} ({text or name}); start the database server or fix "
                "database.url (MOORAGE_DATABASE_URL)"
            )
        if name == "CannotConnectNowError" or "the database system is" in text:
            return f"{db} is not accepting connections yet ({text}); wait for it and start again"
        if name == "DiskFullError" or "could not extend file" in text:
            return f"{db} has run out of disk space ({text}); free space on the database server"
    for e in chain:
        if isinstance(e, PermissionError):
            where = f" {e.filename}" if e.filename else ""
            return (
                f"permission denied on{where} ({_one_line(e.strerror or str(e))}); run as a "
                "user that may write there, or change data_dir"
            )
    for e in chain:
        if type(e).__name__ == "OperationalError" and "sqlite" in (database_url or ""):
            return (
                f"{db}: {_one_line(str(getattr(e, 'orig', e)))}; check the disk, the file's "
                "permissions and that no other program holds it"
            )
    return (
        f"{type(exc).__name__}: {_one_line(str(exc))} (run with MOORAGE_LOG_LEVEL=debug for "
        "the traceback)"
    )


def check_port(host: str, port: int) -> None:
    """Fail early, in words, when the listening address cannot be bound (uvicorn would say so
    only after the application had started, amid its own log lines)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {host}:{port}: the host name does not resolve ({exc}); fix "
            "http.host (--host)"
        ) from None
    family, type_, proto, _, addr = infos[0]
    with socket.socket(family, type_, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"cannot listen on {host}:{port}: the address is already in use by another "
                    "process; stop it or choose another port (--port or http.port)"
                ) from None
            if exc.errno == errno.EACCES:
                raise StartupError(
                    f"cannot listen on {host}:{port}: permission denied; use a port above 1023 "
                    "or grant the process CAP_NET_BIND_SERVICE"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartupError(
                    f"cannot listen on {host}:{port}: {host} is not an address of this host; "
                    "fix http.host (--host)"
                ) from None
            raise StartupError(
                f"cannot listen on {host}:{port}: {exc.strerror}; fix http.host / http.port"
            ) from None


def check_database(url: str, timeout: float = 15.0) -> None:
    """Connect once and run ``SELECT 1`` (a database that cannot be reached fails here, in
    words, before migrations or the server start)."""
    import sqlalchemy as sa

    from .db.engine import create_engine

    async def probe() -> None:
        engine = create_engine(url, 1)
        try:
            async with asyncio.timeout(timeout), engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(probe())
    except Exception as exc:  # explained by the caller
        raise StartupError(explain(exc, database_url=url)) from exc
