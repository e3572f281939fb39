"""Moorage sites for the capability tests: ``moorage serve`` processes with access control, a
key-encryption secret (remote credentials are sealed with it) and a quick job queue, driven
through the ``moorage replication`` commands as an operator would."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, MoorageServer

SECRET = "replication-test-key-encryption-secret"
ADMIN = ("admin", ADMIN_PASSWORD)
QUICK_JOBS = {
    "MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": SECRET,
    "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MOORAGE_JOBS_POLL_SECONDS": "0.3",
    "MOORAGE_JOBS_HEARTBEAT_SECONDS": "0.5",
    "MOORAGE_JOBS_STALE_SECONDS": "3",
    "MOORAGE_JOBS_RETRY_BASE_SECONDS": "0.3",
    "MOORAGE_JOBS_RETRY_MAX_SECONDS": "2",
    "MOORAGE_LOG_LEVEL": "warning",
}


@contextlib.contextmanager
def site(name: str = "site", database_url: str | None = None, **env: str) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix=f"moorage-{name}-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", database_url=database_url, env={**QUICK_JOBS, **env}
        ).start()
        try:
            yield srv
        finally:
            srv.stop()
            keep = os.environ.get("MOORAGE_TEST_KEEP_LOGS")  # a directory: keep each site's log
            if keep and srv.log_path is not None and srv.log_path.exists():
                Path(keep).mkdir(parents=True, exist_ok=True)
                (Path(keep) / f"{name}-{srv.log_path.name}").write_bytes(srv.log_path.read_bytes())


def cli(
    server: MoorageServer, *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``moorage replication ARGS`` on the site's database, beside the running server."""
    env = dict(os.environ)
    env.update(QUICK_JOBS)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    try:
        return subprocess.run(
            [sys.executable, "-m", "moorage.cli", "replication", *args, "--data-dir", str(server.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"moorage replication {' '.join(args)}: no answer in {timeout} s\n{_state(server)}") from exc


def _state(server: MoorageServer) -> str:
    """What a timed-out command leaves to read: the server's jobs and its log's last lines."""
    parts = [f"load average: {os.getloadavg()}"]
    try:
        with api(server) as c:
            parts.append("jobs: " + c.get("/jobs", params={"limit": 200}).text[:6000])
    except httpx.HTTPError as exc:
        parts.append(f"jobs: {exc!r}")
    if server.log_path is not None and server.log_path.exists():
        parts.append("log:\n" + "\n".join(server.log_path.read_text(errors="replace").splitlines()[-60:]))
    return "\n".join(parts)


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def api(server: MoorageServer) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", auth=ADMIN, timeout=60)


def wait_execution(server: MoorageServer, execution: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with api(server) as c:
        while True:
            r = c.get(f"/replication/executions/{execution}")
            assert r.status_code == 200, r.text
            doc: dict[str, Any] = r.json()
            if doc["state"] not in ("planning", "running"):
                return doc
            assert time.monotonic() < deadline, json.dumps(doc, indent=1)[:3000]
            time.sleep(0.3)


def executions(server: MoorageServer, policy: str) -> list[dict[str, Any]]:
    with api(server) as c:
        r = c.get(f"/replication/policies/{policy}/executions")
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


def until(check: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
