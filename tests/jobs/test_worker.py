"""``moorage worker`` runs the job queue without serving; a node with ``jobs.enabled: false``
serves without running jobs (operators scale the two apart, as Harbor and Quay allow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import MoorageServer, moorage_cli, stop_process

ROOT = Path(__file__).resolve().parents[2]


def _job(server: MoorageServer, job_id: str) -> dict[str, object]:
    out = moorage_cli(server, "jobs", "show", job_id).stdout
    return dict(json.loads(out))


def test_serving_nodes_without_jobs_and_a_worker_that_runs_them(tmp_path: Path) -> None:
    env = {"MOORAGE_JOBS_ENABLED": "false", "MOORAGE_JOBS_POLL_SECONDS": "0.2"}
    srv = MoorageServer(tmp_path / "data", extra_args=["--no-auth"], env=env).start()
    try:
        r = moorage_cli(srv, "jobs", "run", "jobs.prune")
        job_id = r.stdout.split()[2]
        time.sleep(2)  # ten polls of a node that would run jobs
        assert _job(srv, job_id)["state"] == "queued"
        worker = subprocess.Popen(
            [sys.executable, "-m", "moorage.cli", "worker", "--data-dir", str(srv.data_dir)],
            cwd=ROOT,
            env={**os.environ, **env, "MOORAGE_AUTH_ENABLED": "false"},
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while _job(srv, job_id)["state"] != "succeeded":
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert str(_job(srv, job_id)["node"]).split(":")[1] == str(worker.pid)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
            log = worker.stderr.read().decode() if worker.stderr else ""
            stop_process(worker)
        assert code == 0, log
        assert "worker: running background jobs" in log
    finally:
        srv.stop()
