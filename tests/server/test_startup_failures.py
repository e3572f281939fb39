"""Every start-up failure of `moorage serve` ends with one clear line (issue 10).

Each case starts the real command and checks: a non-zero exit code, no traceback, and a last line
saying what is wrong and what to do. The full disk is a small tmpfs the test mounts, fills and
unmounts (root only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, PG_ADMIN_URL, free_port, postgres_database


def serve(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "moorage.cli", "serve", "--no-auth", "--data-dir", str(data_dir)]
    if "--port" not in args:
        cmd += ["--port", str(free_port())]
    proc = subprocess.run(
        [*cmd, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def last_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "no output at all"
    return lines[-1]


def test_bad_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "moorage.yaml"
    cfg.write_text("http:\n  header_timeout: soon\n")
    code, out = serve(tmp_path / "data", "--config", str(cfg))
    line = last_line(out)
    assert code == 2
    assert line.startswith("moorage: configuration error: http.header_timeout:"), line
    assert "'soon'" in line and f"Fix it in the config file {cfg}" in line
    assert "MOORAGE_HTTP_HEADER_TIMEOUT" in line

    cfg.write_text("htpp:\n  port: 5000\n")
    code, out = serve(tmp_path / "data", "--config", str(cfg))
    assert code == 2 and "htpp: unknown key" in last_line(out)

    cfg.write_text("http:\n  port: [\n")
    code, out = serve(tmp_path / "data", "--config", str(cfg))
    assert code == 2 and "is not valid YAML" in last_line(out)

    code, out = serve(tmp_path / "data", env={"MOORAGE_HTTP_WORKERS": "0"})
    line = last_line(out)
    assert code == 2 and "http.workers:" in line and "MOORAGE_HTTP_WORKERS" in line


def test_database_unreachable(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://moorage:secret@127.0.0.1:{closed}/registry"
    code, out = serve(tmp_path / "data", env={"MOORAGE_DATABASE_URL": url})
    line = last_line(out)
    assert code == 1
    assert line.startswith("moorage: cannot start: cannot reach PostgreSQL database 'registry'")
    assert f"127.0.0.1:{closed}" in line and "fix database.url" in line
    assert "secret" not in out  # the password is never shown

    url = "postgresql://moorage@no-such-host.invalid:5432/registry"
    code, out = serve(tmp_path / "data", env={"MOORAGE_DATABASE_URL": url})
    line = last_line(out)
    assert code == 1 and "cannot resolve the host" in line, line


def test_database_that_does_not_exist(tmp_path: Path) -> None:
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/moorage_no_such_database"
    code, out = serve(tmp_path / "data", env={"MOORAGE_DATABASE_URL": url})
    line = last_line(out)
    if "cannot reach" in line:
        pytest.skip("no PostgreSQL at " + PG_ADMIN_URL)
    assert code == 1
    assert "'moorage_no_such_database'" in line and "does not exist" in line, line
    assert "create it" in line


@pytest.mark.parametrize("kind", [b for b in ("sqlite", "postgresql") if b in BACKENDS])
def test_database_without_its_tables(tmp_path: Path, kind: str) -> None:
    """Fails inside the application's start (within uvicorn): the same kind of last line."""
    env = {"MOORAGE_DATABASE_MIGRATE_ON_START": "false"}
    with contextlib.ExitStack() as stack:
        if kind == "postgresql":  # a fresh, empty database of its own
            env["MOORAGE_DATABASE_URL"] = stack.enter_context(postgres_database())
        code, out = serve(tmp_path / "data", env=env)
    line = last_line(out)
    assert code == 1, out
    assert line.startswith("moorage: cannot start: ") and "lacks Moorage's tables" in line, line
    assert "moorage db upgrade" in line


@pytest.mark.parametrize("kind", [b for b in ("sqlite", "postgresql") if b in BACKENDS])
def test_an_admin_command_on_a_database_without_its_tables(tmp_path: Path, kind: str) -> None:
    """``moorage admin`` beside no server yet: one line that says what to do, no traceback."""
    env = {**os.environ}
    with contextlib.ExitStack() as stack:
        if kind == "postgresql":
            env["MOORAGE_DATABASE_URL"] = stack.enter_context(postgres_database())
        proc = subprocess.run(
            [sys.executable, "-m", "moorage.cli", "admin", "create-org", "acme"]
            + ["--data-dir", str(tmp_path / "data")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    line = last_line(proc.stdout + proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert line.startswith("moorage: ") and "lacks Moorage's tables" in line, line
    assert "moorage db upgrade" in line


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = serve(tmp_path / "data", "--port", str(port))
    line = last_line(out)
    assert code == 1
    assert line == (
        f"moorage: cannot start: cannot listen on 127.0.0.1:{port}: the address is already in "
        "use by another process; stop it or choose another port (--port or http.port)"
    )
    # Nothing was started before the check (no migrations, no application start-up).
    assert "startup" not in out.lower() and not (tmp_path / "data").exists()


@contextlib.contextmanager
def tmpfs(size_mib: int) -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="moorage-startfull-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def fill(mount: Path) -> None:
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_fresh_and_existing(tmp_path: Path) -> None:
    with tmpfs(16) as mount:
        # A first start on a disk with no room left.
        fill(mount)
        code, out = serve(mount / "fresh")
        line = last_line(out)
        assert code == 1, out
        assert line.startswith(f"moorage: cannot start: no space left on the disk holding {mount}")
        assert "free space there" in line
        (mount / "filler").unlink()

        # A registry that ran, then its disk filled up: after a clean stop, and after a crash
        # while the disk was full (SQLite's -wal and -shm files left behind: SQLite then opens
        # and reads, and the server would start and fail every write instead).
        data = mount / "data"
        for ending in ("stopped", "crashed"):
            port = free_port()
            with open(tmp_path / "first.log", "wb") as log:
                first = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "moorage.cli",
                        "serve",
                        "--no-auth",
                        "--data-dir",
                        str(data),
                        "--port",
                        str(port),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            break
                    if first.poll() is not None:
                        raise AssertionError((tmp_path / "first.log").read_text())
                    time.sleep(0.1)
                if ending == "crashed":
                    fill(mount)
                    first.kill()
            finally:
                first.terminate()
                first.wait(30)
            if ending == "stopped":
                fill(mount)
            else:
                assert (data / "moorage.db-wal").exists()
            code, out = serve(data)
            line = last_line(out)
            assert code == 1, out
            assert f"no space left on the disk holding {data}" in line, line
            (mount / "filler").unlink()
