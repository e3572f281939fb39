"""A full disk (issue 10): a 1 GiB layer pushed into a 300 MiB tmpfs.

The server's whole data directory (SQLite database and filesystem store) lives on a tmpfs that
the test mounts and unmounts (root only). A PATCH that runs out of space is cut back to the
session's last saved offset at once, /readyz and the log say the store is full, and cancelling
the upload frees its bytes — also when the disk is completely full.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, error_code, sha256

MiB = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(size_mib: int) -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="moorage-full-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_bytes(path: Path) -> int:
    """Bytes allocated under *path* (what a truncation or deletion gives back)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def one_gib() -> Iterator[bytes]:
    chunk = os.urandom(MiB)
    for _ in range(1024):
        yield chunk


@pytest.fixture
def full_server(backend: tuple[str, str | None]) -> Iterator[tuple[MoorageServer, Path]]:
    # SQLite: the database shares the full disk; PostgreSQL: only the blob store does.
    with tmpfs(300) as mount:
        srv = MoorageServer(
            mount / "data", database_url=backend[1], extra_args=["--no-auth"]
        ).start()
        try:
            yield srv, mount
        finally:
            srv.stop()


def test_a_layer_larger_than_the_disk(full_server: tuple[MoorageServer, Path]) -> None:
    srv, mount = full_server
    uploads = srv.data_dir / "storage" / "uploads"
    first = os.urandom(50 * MiB)
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/v2/full/app/blobs/uploads/")
        loc = r.headers["Location"]
        r = c.patch(loc, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202, r.text

        # 1 GiB more into ~250 MiB of free space: the server fails the request.
        try:
            r = c.patch(loc, content=one_gib())
            assert r.status_code == 503, r.text
            assert error_code(r) == "UNAVAILABLE" and "storage is full" in r.text
        except httpx.TransportError:
            pass  # the server answered before the body ended and closed the connection

        # The failed request's bytes are gone at once (not kept until a resume or a purge).
        assert used_bytes(uploads) <= len(first) + MiB
        assert free_bytes(mount) > 150 * MiB
        status = c.get(loc)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}"

        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text  # pulls still work: stay in service
        assert ready.json()["checks"]["storage"].startswith("full:"), ready.text
        assert "no space left writing upload" in srv.log()

        # Now fill the disk to the last byte, then cancel the upload: its bytes are freed.
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            for size in (MiB, 4096):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        assert free_bytes(mount) < MiB
        assert c.get("/readyz").json()["checks"]["storage"].startswith("full:")
        r = c.delete(loc)
        assert r.status_code == 204, r.text
        assert not (uploads / loc.rsplit("/", 1)[1]).exists()
        assert free_bytes(mount) >= len(first) - MiB
        assert c.get(loc).status_code == 404

        filler.unlink()
        small = os.urandom(100_000)
        r = c.post("/v2/full/app/blobs/uploads/", params={"digest": sha256(small)}, content=small)
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/full/app/blobs/{sha256(small)}").content == small
