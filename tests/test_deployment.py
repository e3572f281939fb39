"""The deployment examples (Dockerfile, compose, systemd unit and its env file, HAProxy config)
speak the real configuration contract: every MOORAGE_* they set is a key the server reads, the
compose nodes' environment loads as a valid configuration, and HAProxy accepts its file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moorage.config import config_keys, env_name, load_config

ROOT = Path(__file__).resolve().parents[1]
# Variables read outside the key table (documented in README.md / docs/configuration.md), and
# the addresses deploy/haproxy.cfg takes from its environment.
EXTRA = {"MOORAGE_ADMIN_PASSWORD", "MOORAGE_CONFIG"}
LB_VARS = {
    "MOORAGE_LB_BIND": "127.0.0.1:5999",
    "MOORAGE_LB_STATS_SOCKET": "/tmp/moorage-test-haproxy-check.sock",
    "MOORAGE_NODE1": "127.0.0.1:1",
    "MOORAGE_NODE2": "127.0.0.1:2",
    "MOORAGE_NODE3": "127.0.0.1:3",
}


def known_settings() -> set[str]:
    """Every MOORAGE_* variable the server or the example files read (shared with
    tests/test_kubernetes.py)."""
    return {env_name(k) for k in config_keys()} | EXTRA | set(LB_VARS)


def _compose() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text()))


def _env_file() -> dict[str, str]:
    out = {}
    for line in (ROOT / "deploy" / "moorage.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_every_moorage_variable_in_the_examples_is_a_real_setting() -> None:
    texts = [
        (ROOT / "Dockerfile").read_text(),
        (ROOT / "deploy" / "compose.yaml").read_text(),
        (ROOT / "deploy" / "moorage.env").read_text(),
        (ROOT / "docs" / "deployment.md").read_text(),
    ]
    used = {m for t in texts for m in re.findall(r"\bMOORAGE_[A-Z0-9_]+\b", t)}
    assert used, "no settings found: the test reads the wrong files"
    assert used - known_settings() == set()


def test_the_compose_nodes_and_the_env_file_load_as_valid_configurations() -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    nodes = [s for name, s in services.items() if name.startswith("node")]
    assert set(services["lb"]["environment"]) == set(LB_VARS)
    assert len(nodes) == 3
    for node in nodes:
        env = {
            k: re.sub(r"\$\{[A-Z_]+:[-?]([^}]*)\}", r"\1", str(v))
            for k, v in node["environment"].items()
        }
        config = load_config(None, environ=env)
        assert config.storage.driver == "s3" and config.database_url.startswith("postgresql")
    config = load_config(None, environ=_env_file())
    assert config.storage.driver == "s3"


def test_the_systemd_unit_runs_real_commands() -> None:
    unit = (ROOT / "deploy" / "moorage.service").read_text()
    for line in unit.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=")):
            args = line.partition("=")[2].split()[1:]
            r = subprocess.run(
                [sys.executable, "-m", "moorage.cli", *args, "--help"],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0, (line, r.stderr)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is installed by .ci/run")
def test_haproxy_accepts_the_example_configuration() -> None:
    r = subprocess.run(
        ["haproxy", "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **LB_VARS},
    )
    assert r.returncode == 0, r.stdout + r.stderr
