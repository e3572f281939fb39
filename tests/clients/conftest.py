"""Fixtures for integration tests with real registry clients (skopeo, podman, buildah, oras).

The registry under test is started once per session on a free loopback port:

* default: Moorage — ``moorage serve --host 127.0.0.1 --port P --data-dir DIR``, ready when
  ``GET /readyz`` answers 200. ``MOORAGE_TEST_DATABASE_URL``, if set, is passed to the server as
  ``MOORAGE_DATABASE_URL`` (e.g. to run the suite against PostgreSQL).
* ``MOORAGE_TEST_REGISTRY=distribution``: CNCF Distribution 2.8.2 (``docker-registry serve``) with
  a config of our own (filesystem storage in a temp dir, deletes enabled). This proves the tests
  themselves against a reference registry.

Client isolation (nothing is read from or written to the machine's container configuration):

* containers/image (used by skopeo, podman and buildah) keeps a blob-info cache that remembers
  where blobs were seen and makes later copies try cross-repository mounts from earlier runs.
  There is no flag for its location; it is ``/var/lib/containers/cache`` when the effective uid is
  0, else ``$XDG_DATA_HOME/containers/cache``. The uid it uses is ``_CONTAINERS_ROOTLESS_UID`` if
  set (containers/image ``internal/rootless``), so we set that to a non-zero uid and point
  ``XDG_DATA_HOME`` at a session temp dir. ``_CONTAINERS_USERNS_CONFIGURED=1`` stops podman and
  buildah from then trying to re-exec themselves in a user namespace.
* HOME, XDG_CONFIG_HOME, XDG_RUNTIME_DIR and TMPDIR point at the session temp dir (no stray
  auth.json, sigstore dirs or temp files); skopeo gets ``--registries-conf``, ``--registries.d``
  and ``--policy`` (it ignores CONTAINERS_REGISTRIES_CONF); podman and buildah get
  CONTAINERS_REGISTRIES_CONF and a CONTAINERS_CONF with file locks, no events and their temp and
  network dirs in the temp dir; podman/buildah storage is ``--storage-driver vfs --root DIR
  --runroot DIR`` per test.

Set ``MOORAGE_TEST_KEEP_TMP=1`` to keep the session temp dir (it is printed) for debugging.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, stop_process

from .harness import BearerAuth, ClientEnv, Engine, Registry, Skopeo, make_client_env

REGISTRY_KIND = os.environ.get("MOORAGE_TEST_REGISTRY", "moorage").strip().lower()
STARTUP_TIMEOUT = float(os.environ.get("MOORAGE_TEST_STARTUP_TIMEOUT", "120"))
KEEP_TMP = os.environ.get("MOORAGE_TEST_KEEP_TMP", "") not in ("", "0")

# The registry process currently running (for attaching its log to failed test reports).
_current_registry: Registry | None = None


def _distribution_config(path: Path, storage: Path, port: int) -> None:
    path.write_text(
        "\n".join(
            [
                "version: 0.1",
                "log:",
                "  level: info",
                "  accesslog:",
                "    disabled: true",
                "storage:",
                "  filesystem:",
                f"    rootdirectory: {storage}",
                "  delete:",
                "    enabled: true",
                "  cache:",
                "    blobdescriptor: inmemory",
                "  maintenance:",
                "    uploadpurging:",
                "      enabled: false",
                "http:",
                f"  addr: 127.0.0.1:{port}",
                "",
            ]
        )
    )


def _moorage_command() -> list[str]:
    exe = Path(sys.executable).parent / "moorage"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moorage")
    if found:
        return [found]
    # Not installed as a script (e.g. run from a checkout): the same entry point via -m.
    return [sys.executable, "-m", "moorage.cli"]


def _start_registry(base: Path, database_url: str | None = None) -> Registry:
    port = free_port()
    data_dir = base / "registry-data"
    data_dir.mkdir()
    log_path = base / "registry.log"
    env = dict(os.environ)
    if REGISTRY_KIND == "distribution":
        binary = shutil.which("docker-registry")
        if not binary:
            pytest.skip("docker-registry (CNCF Distribution) is not installed")
        config = base / "distribution.yml"
        _distribution_config(config, data_dir, port)
        cmd = [binary, "serve", str(config)]
        ready_path = "/v2/"
    elif REGISTRY_KIND == "moorage":
        cmd = [
            *_moorage_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            # Protocol compatibility of the clients; logins are tested in tests/auth.
            "--no-auth",
        ]
        db_url = os.environ.get("MOORAGE_TEST_DATABASE_URL") or database_url
        if db_url:
            env["MOORAGE_DATABASE_URL"] = db_url
        ready_path = "/readyz"
    else:
        pytest.fail(f"MOORAGE_TEST_REGISTRY={REGISTRY_KIND!r}: use 'moorage' or 'distribution'")

    log = log_path.open("wb")
    log.write(("$ " + " ".join(cmd) + "\n").encode())
    log.flush()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=base
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=30.0, trust_env=False, auth=BearerAuth())
    registry = Registry(REGISTRY_KIND, f"127.0.0.1:{port}", url, data_dir, log_path, proc, http)

    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "no answer yet"
    while True:
        if proc.poll() is not None:
            http.close()
            pytest.fail(
                f"{REGISTRY_KIND} exited with code {proc.returncode} during startup:\n"
                + registry.log_since(0),
                pytrace=False,
            )
        try:
            r = httpx.get(url + ready_path, timeout=2.0, trust_env=False)
            if r.status_code == 200:
                break
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            _stop(proc)
            http.close()
            pytest.fail(
                f"{REGISTRY_KIND} not ready after {STARTUP_TIMEOUT}s "
                f"(GET {ready_path}: {last}):\n" + registry.log_since(0),
                pytrace=False,
            )
        time.sleep(0.1)
    return registry


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)


@pytest.fixture(scope="session")
def clients_tmp() -> Iterator[Path]:
    """One temp dir for the whole session (server data, client config, caches)."""
    base = Path(tempfile.mkdtemp(prefix="moorage-clients-"))
    try:
        yield base
    finally:
        if KEEP_TMP:
            print(f"\nclient test temp dir kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(clients_tmp: Path, backend: tuple[str, str | None]) -> Iterator[Registry]:
    """The registry under test, running on a free loopback port for the whole session.

    For Moorage, once per metadata backend (the shared ``backend`` fixture: SQLite, then a
    PostgreSQL database made for the session).
    """
    global _current_registry
    if REGISTRY_KIND == "distribution" and backend[0] != "sqlite":
        pytest.skip("CNCF Distribution has no metadata database")
    # A directory per start: with xdist, modules sharing this worker may alternate backends,
    # and pytest then tears the session fixture down and starts it again for the same backend.
    base = Path(tempfile.mkdtemp(prefix=f"server-{backend[0]}-", dir=clients_tmp))
    reg = _start_registry(base, backend[1])
    _current_registry = reg
    try:
        yield reg
    finally:
        _current_registry = None
        reg.http.close()
        _stop(reg.proc)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    reg = _current_registry
    start = reg.log_size() if reg is not None else 0
    outcome = yield
    if reg is not None and outcome.excinfo is not None:
        item.add_report_section("call", "registry log", reg.log_since(start))


# --------------------------------------------------------------------------- client environment


@pytest.fixture(scope="session")
def client_env(clients_tmp: Path, registry: Registry) -> ClientEnv:
    return make_client_env(
        clients_tmp / f"clients-{registry.host.rsplit(':', 1)[1]}", registry.host
    )


@pytest.fixture(scope="session")
def skopeo(client_env: ClientEnv) -> Skopeo:
    """``skopeo(*args, check=True, debug=False)`` with isolated config, policy and blob-info cache."""
    binary = shutil.which("skopeo")
    if not binary:
        pytest.skip("skopeo is not installed")
    return Skopeo(binary, client_env)


def _engine(name: str, client_env: ClientEnv) -> Engine:
    binary = shutil.which(name)
    if not binary:
        pytest.skip(f"{name} is not installed")
    # podman refuses a runroot longer than 50 characters: keep the storage path short.
    storage = Path(tempfile.mkdtemp(prefix=f"mc-{name[0]}-"))
    for sub in ("root", "runroot", "libpod"):
        (storage / sub).mkdir()
    return Engine(name, binary, storage, client_env)


@pytest.fixture
def podman(client_env: ClientEnv) -> Iterator[Engine]:
    """podman with a fresh private vfs storage for this test."""
    engine = _engine("podman", client_env)
    yield engine
    shutil.rmtree(engine.storage, ignore_errors=True)


@pytest.fixture
def buildah(client_env: ClientEnv) -> Iterator[Engine]:
    """buildah with a fresh private vfs storage for this test."""
    engine = _engine("buildah", client_env)
    yield engine
    shutil.rmtree(engine.storage, ignore_errors=True)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test (valid under the distribution name grammar)."""
    module = request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    return f"clients/{module}/{name}-{uuid.uuid4().hex[:6]}"
