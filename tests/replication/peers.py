"""Real peer registries for the replication tests: CNCF Distribution 2.8.2 on loopback.

(Moorage peers come from tests/conftest.py's MoorageServer.)
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import STARTUP_TIMEOUT, free_port, stop_process

_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
{tls}"""


@dataclass
class Distribution:
    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@contextlib.contextmanager
def distribution(tls: tuple[Path, Path] | None = None) -> Iterator[Distribution]:
    """``docker-registry serve`` (Distribution 2.8.2) with filesystem storage in a temp dir;
    HTTPS with *tls* = (certificate, key) PEM files."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry (CNCF Distribution) is not installed")
    with tempfile.TemporaryDirectory(prefix="moorage-repl-dist-") as tmp:
        port = free_port()
        root = Path(tmp) / "data"
        config = Path(tmp) / "config.yml"
        tls_config = (
            f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls is not None else ""
        )
        config.write_text(_CONFIG.format(root=root, port=port, tls=tls_config))
        log_path = Path(tmp) / "registry.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        peer = Distribution(port, root, proc, log_path, tls is not None)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"docker-registry exited:\n{peer.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(peer.url + "/v2/", timeout=2, verify=False).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry not ready:\n{peer.log()}")
                time.sleep(0.05)
            yield peer
        finally:
            stop_process(proc)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
