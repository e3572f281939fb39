"""Shared fixtures: real Moorage servers on free loopback ports, over SQLite and PostgreSQL.

Every server is a `moorage serve` subprocess (the command a user runs), started on 127.0.0.1 and
stopped by the PID we started. PostgreSQL runs are given a database of their own, dropped after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", PG_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test session; dropped afterwards."""
    name = f"moorage_test_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with contextlib.suppress(Exception):
            _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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

    def start(self, timeout: float = 30) -> MoorageServer:
        self.port = self.port or free_port()
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moorage exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moorage did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:] if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
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


def moorage_cli(
    server: MoorageServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``moorage ARGS --data-dir <the server's>`` against a server's database (as an
    operator would while it runs)."""
    env = dict(os.environ)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    return subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args, "--data-dir", str(server.data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def admin_cli(server: MoorageServer, *args: str, stdin: str | None = None) -> str:
    """``moorage admin ARGS``; fails the test on a non-zero exit; returns standard output."""
    r = moorage_cli(server, "admin", *args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    return r.stdout
