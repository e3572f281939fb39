"""A real S3 server on loopback for tests: moto's server in a subprocess, behind a tiny TCP relay
that lets a test cut S3 off and bring it back with its data intact.

API (kept small on purpose; other test suites reuse it)::

    with MotoServer() as s3:            # starts moto_server on a free 127.0.0.1 port
        s3.create_bucket("b")           # idempotent
        s3.endpoint                     # "http://127.0.0.1:PORT" — give this to clients
        s3.env("b")                     # MOORAGE_* and AWS_* variables for a moorage process
        s3.pause()                      # S3 is "down": connections refused, open ones cut
        s3.resume()                     # same port, same buckets and objects
    # stop() (also on leaving the with-block) stops moto by the PID we started.

Why a relay: moto keeps everything in memory, so stopping its process would lose every bucket;
the relay (threads in the test process) refuses and resets connections while moto keeps running,
which is what a client sees when an S3 endpoint goes down. Credentials are fixed test values; moto
accepts any SigV4 signature made with them. ``AWS_EC2_METADATA_DISABLED=true`` is set for the
server and in :meth:`env` so no client ever probes the metadata service.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import STARTUP_TIMEOUT, free_port, stop_process

ACCESS_KEY = "moorage-test-key"
SECRET_KEY = "moorage-test-secret"
REGION = "us-east-1"


class _Relay:
    """TCP relay 127.0.0.1:port → 127.0.0.1:target that can refuse and cut connections."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._listener is not None:
            return  # already up
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.listen(128)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(256 * 1024):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._conns.discard(s)
                s.close()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                # RST rather than FIN: an abrupt failure, as when a server dies.
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                s.shutdown(socket.SHUT_RDWR)


class MotoServer:
    """moto's S3 server on a free loopback port (see the module docstring)."""

    def __init__(self, port: int = 0, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self._moto_port = free_port()
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._relay = _Relay(self.port, self._moto_port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> MotoServer:
        env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
        log: Any = subprocess.DEVNULL
        if self._log_dir is not None:
            log = open(self._log_dir / f"moto-{self.port}.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self._moto_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError("moto_server exited early")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{self._moto_port}/moto-api/", timeout=2)
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("moto_server did not become ready")
            time.sleep(0.1)
        self._relay.start()
        return self

    def stop(self) -> None:
        self._relay.stop()
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def pause(self) -> None:
        """S3 goes down: new connections are refused, open ones reset. Data is kept."""
        self._relay.stop()

    def resume(self) -> None:
        """S3 comes back on the same port with the same data."""
        self._relay.start()

    def client(self) -> Any:
        """A boto3 S3 client for assertions (path-style, test credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> str:
        c = self.client()
        with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
            c.create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Environment for a moorage process storing blobs in *bucket* on this server."""
        out = {
            "MOORAGE_STORAGE_DRIVER": "s3",
            "MOORAGE_STORAGE_S3_BUCKET": bucket,
            "MOORAGE_STORAGE_S3_ENDPOINT": self.endpoint,
            "MOORAGE_STORAGE_S3_REGION": REGION,
            "MOORAGE_STORAGE_S3_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if prefix:
            out["MOORAGE_STORAGE_S3_PREFIX"] = prefix
        return out

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
