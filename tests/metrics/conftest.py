"""A real ``moorage serve`` (metrics are built in: moorage/metrics/node.py wired in
moorage/app.py) on a free loopback port, configured through ``MOORAGE_*`` variables, and a
scraper that parses what it serves with prometheus_client's own parser."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from moorage.api.app import ManagementAPI

from ..conftest import STARTUP_TIMEOUT, free_port, postgres_database, stop_process

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
API_PREFIX = "/api/v1"


def api_templates() -> list[str]:
    """The REST API's route templates, from its own route table (the handlers are not called:
    the table only names bound methods)."""
    api = object.__new__(ManagementAPI)
    return [API_PREFIX + op.path for op in ManagementAPI._ops(api)]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class MeteredServer:
    data_dir: Path
    database_url: str | None = None
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MOORAGE_DATA_DIR=str(self.data_dir),
            MOORAGE_AUTH_ENABLED="false",
            MOORAGE_LOG_ACCESS_LOG="false",
            MOORAGE_METRICS_DATABASE_SECONDS="0.2",
            MOORAGE_HTTP_WORKERS=str(self.workers),
            PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
        )
        if self.database_url:
            env["MOORAGE_DATABASE_URL"] = self.database_url
        env.update(self.env)
        return env

    def start(self, timeout: float = STARTUP_TIMEOUT) -> MeteredServer:
        self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        self.log_path = self.data_dir.parent / f"metered-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
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
                ],  # fmt: skip
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:] if self.log_path else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def scrape(self, url: str | None = None, **headers: str) -> Samples:
        r = httpx.get(url or f"{self.url}/metrics", headers=headers, timeout=30)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/plain"), r.headers
        return parse(r.text)


@contextlib.contextmanager
def metered_server(
    database_url: str | None = None, workers: int = 1, **env: str
) -> Iterator[MeteredServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-metrics-") as tmp:
        srv = MeteredServer(Path(tmp) / "data", database_url, workers, env).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def metered(backend: tuple[str, str | None]) -> Iterator[MeteredServer]:
    """One metered server per backend (SQLite, and PostgreSQL in a database of its own)."""
    ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
    with ctx as url, metered_server(url) as srv:
        yield srv
