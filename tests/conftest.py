"""Shared fixtures: real Moorage servers on free loopback ports, over SQLite and PostgreSQL.

Every server is a `moorage serve` subprocess (the command a user runs), started on 127.0.0.1 and
stopped by the PID we started. PostgreSQL runs are given a database of their own, dropped after.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

PG_ADMIN_URL = os.environ.get("MOORAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b for b in os.environ.get("MOORAGE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
# Blob stores the `server` fixture runs on: filesystem by default (CI time); add s3 to run the
# protocol suites on S3 too (moto on loopback): MOORAGE_TEST_STORAGE=filesystem,s3.
STORAGES = [s for s in os.environ.get("MOORAGE_TEST_STORAGE", "filesystem").split(",") if s]
# How long a server or tool the tests start may take to answer: a bound, not a measure. Generous,
# since parallel workers on a busy machine slow every start; a session-scoped server that misses
# it fails every later test that uses it.
STARTUP_TIMEOUT = float(os.environ.get("MOORAGE_TEST_STARTUP_TIMEOUT", "120"))


# Ports for the servers the tests start come from 20000-29999, below the kernel's ephemeral range
# (32768 up, where outgoing connections take their source ports), one block of 1000 per pytest
# process: block 0 for a run without xdist, block N+1 for xdist worker gwN. Two workers of a run
# never hand out the same port, and a process never hands out a port twice until it has gone
# round its block (the kernel's bind-to-port-0 may give back the port it just gave another
# caller that has not bound it yet).
PORT_BASE = 20000
PORT_BLOCK = 1000
_port_cursor: int | None = None


def _port_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest-xdist
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdecimal() else 0
    return PORT_BASE + (index % 10) * PORT_BLOCK


def free_port() -> int:
    """A loopback TCP port nothing listens on now, not handed out before by this process."""
    global _port_cursor
    if _port_cursor is None:  # start anywhere in the block: concurrent runs rarely meet
        _port_cursor = random.randrange(PORT_BLOCK)
    base = _port_block()
    for _ in range(PORT_BLOCK):
        port = base + _port_cursor % PORT_BLOCK
        _port_cursor += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:  # no SO_REUSEADDR: a port still in TIME_WAIT is skipped too
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {base}-{base + PORT_BLOCK - 1}")


def _psql(sql: str, admin_url: str = PG_ADMIN_URL) -> None:
    subprocess.run(
        ["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextlib.contextmanager
def postgres_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A fresh PostgreSQL database for one test session (on the shared server, or the server of
    *admin_url*); dropped afterwards. Random names: parallel workers never share one."""
    name = f"moorage_test_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"', admin_url)
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with contextlib.suppress(Exception):
            _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_url)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15
) -> int:
    """Stop a process this test run started (by its PID): *sig*, then SIGKILL after *timeout*.
    Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


# Servers started by this test process and not stopped yet: a failing test's report carries
# their warnings and errors (a module-scoped server's log is deleted with its directory, and a
# flaky 503 in CI must explain itself; see pytest_runtest_makereport below).
_LIVE_SERVERS: dict[int, MoorageServer] = {}


def server_problems(server: MoorageServer, limit: int = 60) -> str:
    """The WARNING/ERROR lines (and tracebacks) of *server*'s whole log, the last *limit*."""
    if server.log_path is None or not server.log_path.exists():
        return ""
    picked: list[str] = []
    in_trace = False
    for ln in server.log_path.read_text(errors="replace").splitlines():
        if ln.startswith("Traceback"):
            in_trace = True
        elif in_trace and ln[:2].isdigit():  # the next timestamped log line ends it
            in_trace = False
        if in_trace or " WARNING " in ln or " ERROR " in ln:
            picked.append(ln)
    return "\n".join(picked[-limit:])


class PortTaken(RuntimeError):
    """A server could not listen on its port: something else took it first."""


@dataclass
class MoorageServer:
    data_dir: Path
    database_url: str | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    cwd: Path | None = None  # where `python -m moorage.cli` finds its code (default: this one)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``moorage serve`` on this server's port and data directory."""
        return [
            sys.executable,
            "-m",
            "moorage.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]

    def start(self, timeout: float = STARTUP_TIMEOUT) -> MoorageServer:
        if self.port:
            return self._start(timeout)
        for attempt in range(3):  # a port chosen for us may be taken by another run meanwhile
            self.port = free_port()
            try:
                return self._start(timeout)
            except PortTaken:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> MoorageServer:
        env = dict(os.environ)
        env.update(self.env)
        if self.database_url:
            env["MOORAGE_DATABASE_URL"] = self.database_url
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _LIVE_SERVERS[id(self)] = self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                log = self.log()
                if "address already in use" in log.lower():
                    raise PortTaken(f"port {self.port} taken:\n{log}")
                raise RuntimeError(f"moorage exited early:\n{log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moorage did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:] if self.log_path else ""

    def wait_exit(self, timeout: float) -> int:
        """The exit status of a server told to stop; when it is still running after *timeout*,
        a failure that shows why: its log, and what each of its processes is waiting in."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            states = []
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            kids = children.read_text().split() if children.exists() else []
            for pid in [str(self.proc.pid), *kids]:
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text().splitlines()
                    threads = sorted(os.listdir(f"/proc/{pid}/task"))
                    wchans = [
                        Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
                        + ":"
                        + Path(f"/proc/{pid}/task/{t}/wchan").read_text()
                        for t in threads
                    ]
                    states.append(f"pid {pid} {status[2]}; threads {wchans}")
            raise AssertionError(
                f"still running {timeout} s after it was told to stop\n"
                + "\n".join(states)
                + "\n"
                + self.log()
            ) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        _LIVE_SERVERS.pop(id(self), None)
        code = stop_process(self.proc, sig, timeout)
        self.proc = None
        return code

    def restart(self) -> MoorageServer:
        self.stop()
        return self.start()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """('sqlite', None) or ('postgresql', URL of a database made for this session)."""
    if request.param == "postgresql":
        with postgres_database() as url:
            yield "postgresql", url
    else:
        yield "sqlite", None


@pytest.fixture(scope="session")
def moto() -> Iterator[Any]:
    """One S3 server (moto on loopback) for the session: a tests.s3server.MotoServer."""
    from tests.s3server import MotoServer

    with MotoServer() as s3:
        yield s3


@pytest.fixture(scope="session", params=STORAGES)
def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment selecting the blob store of a server: {} (filesystem) or a fresh S3 bucket."""
    if request.param == "s3":
        s3 = request.getfixturevalue("moto")
        return dict(s3.env(s3.create_bucket(f"srv-{uuid.uuid4().hex[:12]}")))
    return {}


ADMIN_PASSWORD = "admin-test-password-1"


@pytest.fixture(scope="session")
def server(backend: tuple[str, str | None], storage_env: dict[str, str]) -> Iterator[MoorageServer]:
    """An open registry (``--no-auth``): protocol tests exercise the protocol alone.
    Access control is tested against ``auth_server``."""
    with tempfile.TemporaryDirectory(prefix="moorage-test-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", database_url=backend[1], extra_args=["--no-auth"], env=storage_env
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


@contextlib.contextmanager
def own_auth_server(**env: str) -> Iterator[MoorageServer]:
    """A registry of its own (SQLite, access control on, admin password ADMIN_PASSWORD) with
    extra ``MOORAGE_*`` settings, for tests of a configuration the shared server lacks."""
    with tempfile.TemporaryDirectory(prefix="moorage-own-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="session")
def auth_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    """A registry with access control on (the default), admin password ADMIN_PASSWORD."""
    with tempfile.TemporaryDirectory(prefix="moorage-auth-") as tmp:
        url = backend[1]
        ctx = postgres_database() if url else contextlib.nullcontext(None)
        with ctx as own_url:  # a database of its own: users must not leak between servers
            srv = MoorageServer(
                Path(tmp) / "data",
                database_url=own_url,
                env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD},
            ).start()
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture
def client(server: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses."""
    return f"test/r{uuid.uuid4().hex[:10]}"


# --- small protocol helpers shared by tests --------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


def image_manifest(
    client: httpx.Client,
    repo: str,
    layers: list[bytes] | None = None,
    config: bytes | None = None,
    **extra: object,
) -> bytes:
    """Push config and layers; return the bytes of an OCI image manifest referencing them."""
    config = (
        config
        if config is not None
        else json.dumps({"os": "linux", "architecture": "amd64", "n": uuid.uuid4().hex}).encode()
    )
    layers = layers if layers is not None else [os.urandom(1000)]
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(client, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": push_blob(client, repo, layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def put_manifest(
    client: httpx.Client,
    repo: str,
    ref: str,
    payload: bytes,
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
) -> httpx.Response:
    return client.put(
        f"/v2/{repo}/manifests/{ref}", content=payload, headers={"Content-Type": media_type}
    )


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    return str(body["errors"][0]["code"])


_CLI_LOCK = threading.Lock()


def run_cli(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``moorage ARGS`` with *env* as its environment: the command's exit code, standard output
    and standard error, as ``subprocess.run`` gives them.

    It runs in this process, as click's CliRunner runs a command: ``moorage.cli.main`` in a
    thread of its own (its own event loop), with this environment, standard input and output
    swapped in and the logging configuration it changes put back afterwards. A ``moorage``
    process costs about a second of CPU for its imports alone; a few hundred of them were a
    fifth of the suite's CPU. ``MOORAGE_TEST_CLI_SUBPROCESS=1`` runs a real process instead.
    """
    if os.environ.get("MOORAGE_TEST_CLI_SUBPROCESS") == "1":
        return subprocess.run(
            [sys.executable, "-m", "moorage.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    from moorage.cli import main

    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []

    def target() -> None:
        code: int
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's usage errors, --help
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter would print, and its exit status
            traceback.print_exc()
            code = 1
        codes.append(code)

    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved_logging = [(lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    with _CLI_LOCK:
        saved_env = dict(os.environ)
        saved_stdin = sys.stdin
        os.environ.clear()
        os.environ.update(env)
        sys.stdin = io.StringIO(stdin or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                thread = threading.Thread(target=target, name="moorage-cli")
                thread.start()
                thread.join(timeout)
        finally:
            sys.stdin = saved_stdin
            os.environ.clear()
            os.environ.update(saved_env)
            for lg, (handlers, level, propagate, disabled) in zip(
                loggers, saved_logging, strict=True
            ):
                lg.handlers[:] = handlers
                lg.setLevel(level)
                lg.propagate, lg.disabled = propagate, disabled
    if not codes:
        raise AssertionError(f"moorage {' '.join(args)} still running after {timeout} s")
    return subprocess.CompletedProcess(["moorage", *args], codes[0], out.getvalue(), err.getvalue())


def moorage_cli(
    server: MoorageServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``moorage ARGS --data-dir <the server's>`` against a server's database (as an
    operator would while it runs)."""
    env = dict(os.environ)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    return run_cli([*args, "--data-dir", str(server.data_dir)], env, stdin, timeout=120)


def admin_cli(server: MoorageServer, *args: str, stdin: str | None = None) -> str:
    """``moorage admin ARGS``; fails the test on a non-zero exit; returns standard output."""
    r = moorage_cli(server, "admin", *args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    return r.stdout


def org_with_admin_developer(
    server: MoorageServer, password: str, org_prefix: str, user_prefix: str
) -> tuple[str, str]:
    """A new organization and a new user (*password*) who administers it through its team
    ``devs``: (organization, user), their names the prefixes plus a random suffix."""
    s = uuid.uuid4().hex[:6]
    org, user = f"{org_prefix}{s}", f"{user_prefix}{s}"
    # Through the REST API as the administrator (a `moorage admin` process per step costs
    # about a second of CPU; the CLI is tested on its own).
    with httpx.Client(base_url=server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        for method, path, body in (
            ("POST", "/api/v1/users", {"username": user, "password": password}),
            ("POST", "/api/v1/organizations", {"name": org}),
            ("POST", f"/api/v1/organizations/{org}/teams", {"name": "devs", "members": [user]}),
            ("PUT", f"/api/v1/organizations/{org}/permissions/teams/devs", {"role": "admin"}),
        ):
            r = c.request(method, path, json=body)
            assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
    return org, user


# --- parallel runs (pytest-xdist, `--dist loadgroup`; see docs/ci.md) ------------------------


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for ``-n auto`` (the default, from pyproject.toml's addopts): twice the cores, at
    most 8 (the port blocks above), or MOORAGE_TEST_WORKERS. Most of a test's time is spent
    waiting on the servers and clients it drives, so even 2 cores keep 4 workers busy."""
    wanted = os.environ.get("MOORAGE_TEST_WORKERS", "")
    if wanted.isdecimal():
        return int(wanted)
    return max(1, min(8, 2 * len(os.sched_getaffinity(0))))


# Directories whose modules all share one worker: tests/ha starts a cluster (three nodes,
# HAProxy, S3, a PostgreSQL server of its own) per storage variant for the session, used by every
# module there; one worker starts it once instead of each worker starting its own.
SHARED_GROUPS = {"tests/ha": "ha"}


# Groups that take longest (measured: docs/ci.md), handed out first so that no long group starts
# last and keeps one worker busy after the others are done. Every other module follows in
# collection order (pyproject.toml's addopts turn off xdist's reordering by test count).
SLOW_FIRST = [
    "ha",
    "tests/auth/test_tokens.py",
    "tests/hooks/test_delivery.py",
    "tests/jobs/test_runner.py",
    "tests/audit/test_chain.py",
    "tests/test_operation.py",
    "tests/auth/test_access.py",
    "tests/registry/test_uploads.py",
    "tests/api/test_tokens_sessions.py",
    "tests/auth/test_lockout.py",
    "tests/auth/test_ldap_e2e.py",
    "tests/registry/test_hostile.py",
    "tests/api/test_identities.py",
    "tests/security/test_throttling.py",
    "tests/security/test_review_findings.py",
    "tests/audit/test_query_export.py",
    "tests/security/test_sessions.py",
]


def _group(item: pytest.Item) -> str:
    path = item.nodeid.split("::", 1)[0]
    for prefix, name in SHARED_GROUPS.items():
        if path.startswith(prefix + "/"):
            return name
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report lists the warnings and errors of every Moorage server this
    process still runs (the test's own and the module's or session's shared ones)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when == "teardown":
        return
    for srv in list(_LIVE_SERVERS.values()):
        problems = server_problems(srv)
        if problems:
            report.sections.append((f"moorage server :{srv.port} warnings and errors", problems))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, every test of a module goes to the same worker (its module-scoped servers
    start once), like `--dist loadscope`, with the groups above. Runs before xdist's own hook,
    which turns the mark into the unit of scheduling."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    groups = {}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(_group(item)))
        mark = item.get_closest_marker("xdist_group")
        groups[item.nodeid] = str(mark.args[0] if mark and mark.args else "default")
    # Stable: the same order on every worker (xdist requires identical collections).
    items.sort(key=lambda item: rank.get(groups[item.nodeid], len(rank)))
