"""Abandoned upload sessions are purged by the background job on a running server: their data
is deleted and their URLs answer BLOB_UPLOAD_UNKNOWN; sessions in use are spared."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, error_code, moorage_cli


@pytest.fixture
def purging_server(tmp_path: Path) -> Iterator[MoorageServer]:
    srv = MoorageServer(
        tmp_path / "data",
        extra_args=["--no-auth"],
        env={
            "MOORAGE_JOBS_POLL_SECONDS": "0.2",
        },
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def _wait_for_job(srv: MoorageServer, job_id: str, within: float = 30) -> str:
    deadline = time.monotonic() + within
    while True:
        out = moorage_cli(srv, "jobs", "list").stdout
        done = [
            line
            for line in out.splitlines()
            if line.startswith(f"{job_id}\t") and "\tsucceeded\t" in line
        ]
        if done:
            return done[0]
        assert time.monotonic() < deadline, out
        time.sleep(0.2)


def test_stale_uploads_are_purged_and_live_ones_spared(purging_server: MoorageServer) -> None:
    srv = purging_server
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        stale = c.post("/v2/jobs/purge/blobs/uploads/").headers["location"]
        assert c.patch(stale, content=b"x" * 1000).status_code == 202
        time.sleep(12)
        live = c.post("/v2/jobs/purge/blobs/uploads/").headers["location"]
        assert c.patch(live, content=b"y" * 10).status_code == 202

        upload_dirs = list((srv.data_dir / "storage" / "uploads").iterdir())
        assert len(upload_dirs) == 2
        # Idle for 6 s: the stale session (12 s) goes, the live one must still be fresh when the
        # job runs (a CLI start and one poll later).
        r = moorage_cli(
            srv,
            "jobs",
            "run",
            "uploads.purge_stale",
            "--payload",
            '{"idle_hours": %r}' % (6 / 3600),
        )
        assert r.returncode == 0, r.stderr
        line = _wait_for_job(srv, r.stdout.split()[2])

        assert '"sessions": 1' in line and '"storage_items": 1' in line, line
        gone = c.get(stale)
        assert gone.status_code == 404 and error_code(gone) == "BLOB_UPLOAD_UNKNOWN"
        assert c.get(live).status_code == 204
        remaining = list((srv.data_dir / "storage" / "uploads").iterdir())
        assert len(remaining) == 1


def test_jobs_cli_refuses_unknown_kinds_and_bad_payloads(purging_server: MoorageServer) -> None:
    r = moorage_cli(purging_server, "jobs", "run", "no.such.job")
    assert r.returncode == 2 and "unknown job kind" in r.stderr
    r = moorage_cli(purging_server, "jobs", "run", "uploads.purge_stale", "--payload", "[1]")
    assert r.returncode == 2 and "JSON object" in r.stderr
