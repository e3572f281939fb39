"""A PostgreSQL server of the fault tests' own: a cluster made with initdb in a temp directory,
served by a ``postgres`` child process on a free loopback port.

tests/ha stops and starts PostgreSQL under traffic; doing that to the machine's shared server
(127.0.0.1:5432) would fail every test that other pytest workers run on it at that moment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ..conftest import free_port, stop_process


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    root = Path("/usr/lib/postgresql")
    found = [d / "bin" for d in root.glob("*") if (d / "bin" / "initdb").exists()]
    if not found:
        return None
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdecimal() else 0)


class PrivatePostgres:
    """initdb + ``postgres`` on 127.0.0.1:<free port>, trust authentication for ``postgres``.
    ``stop()`` and ``start()`` may be called again to make an outage; the data stays."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="moorage-ha-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.log_path = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # PostgreSQL refuses to run as root: as root, run it as the postgres user.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            args, check=True, capture_output=True, timeout=120, user=self.user, cwd=self.base
        )

    def __enter__(self) -> PrivatePostgres:
        try:
            if self.user is not None:
                shutil.chown(self.base, self.user, self.user)
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.base),  # the Unix socket stays in the temp dir
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                user=self.user,
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"postgres exited:\n{self.log()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                timeout=30,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not become ready:\n{self.log()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT, as ``pg_ctl stop -m fast``): clients are disconnected."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, timeout=60)
            self.proc = None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-6000:]
        return ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
