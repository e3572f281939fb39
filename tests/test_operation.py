"""Operating the server: CLI contract, config precedence, health, TLS, workers, logs, shutdown."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from moorage.config import config_keys, env_name, load_config
from tests.conftest import MoorageServer, free_port, sha256

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in config_keys():
        assert f"`{key}`" in doc, key
        assert f"`{env_name(key)}`" in doc, key


def test_config_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "m.yaml"
    cfg.write_text("http:\n  port: 6000\n  workers: 3\nlog:\n  format: json\n")
    c = load_config(str(cfg), environ={"MOORAGE_HTTP_PORT": "7000"}, overrides={"http.workers": 4})
    assert (c.http.port, c.http.workers, c.log.format) == (7000, 4, "json")
    assert load_config(None, environ={}).http.port == 5000


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "m.yaml"
    cfg.write_text("http:\n  port: not-a-port\n")
    r = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "http.port" in r.stderr and "Traceback" not in r.stderr


def test_db_upgrade_command(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "db", "upgrade", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "moorage.db").exists()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_workers_and_json_logs(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    srv = MoorageServer(
        tmp_path / "data",
        extra_args=["--workers", "2", "--tls-cert", str(cert), "--tls-key", str(key), "--no-auth"],
        env={"MOORAGE_LOG_FORMAT": "json"},
    )
    # The fixture probes readiness over plain HTTP; this server speaks TLS only.
    srv.port = free_port()
    proc = _start_raw(srv)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(
                    f"https://127.0.0.1:{srv.port}/v2/",
                    verify=ssl.create_default_context(cafile=str(cert)),
                    timeout=2,
                )
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert r.status_code == 200
        data = os.urandom(1000)
        with httpx.Client(
            base_url=f"https://127.0.0.1:{srv.port}",
            verify=ssl.create_default_context(cafile=str(cert)),
        ) as c:
            for _ in range(6):  # spread across both workers
                assert (
                    c.post(
                        "/v2/tls/app/blobs/uploads/", params={"digest": sha256(data)}, content=data
                    ).status_code
                    == 201
                )
            rid = c.get(f"/v2/tls/app/blobs/{sha256(data)}", headers={"X-Request-ID": "abc123"})
            assert rid.headers["X-Request-ID"] == "abc123"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [
        json.loads(line)
        for line in (tmp_path / "log").read_text().splitlines()
        if line.startswith("{")
    ]
    access = [entry for entry in lines if entry.get("logger") == "moorage.access"]
    assert access and all({"request_id", "method", "path", "status"} <= e.keys() for e in access)
    assert any(e["request_id"] == "abc123" and e["status"] == 200 for e in access)


def _start_raw(srv: MoorageServer) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(srv.env)
    log = open(srv.data_dir.parent / "log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        srv.command(),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_health_endpoints(server: MoorageServer) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    r = httpx.get(f"{server.url}/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}


def test_readyz_reports_a_broken_store(tmp_path: Path) -> None:
    srv = MoorageServer(tmp_path / "data").start()
    try:
        storage = tmp_path / "data" / "storage"
        storage.chmod(0o500)  # root ignores permissions: break it harder
        os.rename(storage, tmp_path / "moved")
        (tmp_path / "data" / "storage").write_text("not a directory")
        r = httpx.get(f"{srv.url}/readyz")
        assert r.status_code == 503 and r.json()["checks"]["storage"].startswith("error")
    finally:
        srv.stop()


def test_graceful_shutdown_lets_inflight_requests_finish(tmp_path: Path) -> None:
    srv = MoorageServer(tmp_path / "data", extra_args=["--no-auth"]).start()
    data = os.urandom(8 * 1024 * 1024)
    result: dict[str, object] = {}

    def slow_body() -> object:
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]
            time.sleep(0.05)

    def push() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.post(
                "/v2/drain/app/blobs/uploads/", params={"digest": sha256(data)}, content=slow_body()
            )
            result["status"] = r.status_code

    t = threading.Thread(target=push)
    t.start()
    time.sleep(0.5)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    t.join(60)
    code = srv.stop()
    assert result.get("status") == 201, srv.log()
    # uvicorn re-raises SIGTERM after draining, so the exit status is the signal's.
    assert code in (0, -signal.SIGTERM)
    # And the blob is really there after a restart.
    srv.start()
    try:
        assert httpx.get(f"{srv.url}/v2/drain/app/blobs/{sha256(data)}").content == data
    finally:
        srv.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_drain_seconds_reports_unready_while_still_serving(
    tmp_path: Path, workers: int
) -> None:
    """http.drain_seconds: after SIGTERM /readyz answers 503 (the load balancer takes the node
    out) while the node still serves; it stops listening afterwards. In every worker."""
    srv = MoorageServer(
        tmp_path / "data",
        extra_args=["--no-auth", "--workers", str(workers)],
        env={"MOORAGE_HTTP_DRAIN_SECONDS": "5"},
    ).start()
    try:
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        r = httpx.get(f"{srv.url}/readyz", timeout=5)
        while r.status_code != 503 and time.monotonic() < deadline:
            r = httpx.get(f"{srv.url}/readyz", timeout=5)
        assert r.status_code == 503 and r.json()["checks"]["shutdown"] == "draining", r.text
        # Every worker drains (connections land on either), and requests are still served.
        for _ in range(8):
            with httpx.Client(timeout=5) as fresh:
                assert fresh.get(f"{srv.url}/readyz").status_code == 503
                assert fresh.get(f"{srv.url}/v2/").status_code == 200
        # Then it stops by itself.
        assert srv.wait_exit(60) in (0, -signal.SIGTERM)
    finally:
        srv.stop()


@pytest.mark.parametrize("path", ["/nope", "/v3/", "/v2/_catalog/extra"])
def test_unknown_paths_are_json_404(server: MoorageServer, path: str) -> None:
    r = httpx.get(server.url + path)
    assert r.status_code == 404
    r.json()
