"""One behavioural suite for every storage driver (the S3 driver joins the parametrization)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.storage.base import PathNotFound, StorageDriver, StorageError, blob_path
from moorage.storage.filesystem import FilesystemDriver


@pytest.fixture(params=["filesystem"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    d: StorageDriver = FilesystemDriver(str(tmp_path / "store"))
    try:
        yield d
    finally:
        await d.close()


async def _read(d: StorageDriver, path: str, offset: int = 0, length: int | None = None) -> bytes:
    out = b""
    async for chunk in d.reader(path, offset, length, chunk_size=1000):
        out += chunk
    return out


async def test_put_get_stat_delete(driver: StorageDriver) -> None:
    await driver.put_bytes("a/b/c", b"hello")
    assert await driver.get_bytes("a/b/c") == b"hello"
    st = await driver.stat("a/b/c")
    assert st is not None and st.size == 5
    assert await driver.list("a") == ["a/b/c"]
    await driver.delete("a/b/c")
    assert await driver.stat("a/b/c") is None
    with pytest.raises(PathNotFound):
        await driver.get_bytes("a/b/c")
    await driver.delete("a/b/c")  # deleting twice is fine


async def test_ranged_reads(driver: StorageDriver) -> None:
    data = os.urandom(10_000)
    await driver.put_bytes("x", data)
    assert await _read(driver, "x") == data
    assert await _read(driver, "x", 1234) == data[1234:]
    assert await _read(driver, "x", 1234, 4321) == data[1234:5555]
    assert await _read(driver, "x", 9999, 10) == data[9999:]
    with pytest.raises(PathNotFound):
        await _read(driver, "missing")


async def test_writer_resume_commit(driver: StorageDriver) -> None:
    data = os.urandom(3_000_000)
    w = await driver.new_writer("u1")
    await w.write(data[:1_000_000])
    await w.flush()
    state = w.state()
    await w.close()
    w = await driver.resume_writer("u1", state)
    assert w.size == 1_000_000
    back = b"".join([c async for c in w.read_back()])
    assert back == data[:1_000_000]
    await w.write(data[1_000_000:])
    final = blob_path("sha256", "ab" * 32)
    assert await driver.stat(final) is None
    await w.commit(final)
    assert await _read(driver, final) == data
    # The upload's own files are gone.
    assert await driver.list("uploads") == []


async def test_resume_discards_unrecorded_bytes(driver: StorageDriver) -> None:
    """Bytes written after the last saved state (a request that died) are not kept."""
    w = await driver.new_writer("u2")
    await w.write(b"a" * 100)
    state = w.state()
    await w.write(b"b" * 50)
    await w.close()
    w = await driver.resume_writer("u2", state)
    assert w.size == 100
    await w.write(b"c" * 10)
    await w.commit("blobs/final")
    assert await driver.get_bytes("blobs/final") == b"a" * 100 + b"c" * 10


async def test_cancel_removes_upload(driver: StorageDriver) -> None:
    w = await driver.new_writer("u3")
    await w.write(b"data")
    state = w.state()
    await w.cancel()
    with pytest.raises(PathNotFound):
        await driver.resume_writer("u3", state)


async def test_commit_over_identical_twin(driver: StorageDriver) -> None:
    """Two uploads of the same content committing to one path: the result is that content."""
    payload = os.urandom(5000)
    writers = []
    for i in range(2):
        w = await driver.new_writer(f"twin{i}")
        await w.write(payload)
        writers.append(w)
    for w in writers:
        await w.commit("blobs/twin")
    assert await driver.get_bytes("blobs/twin") == payload


async def test_paths_cannot_escape(driver: StorageDriver) -> None:
    if not isinstance(driver, FilesystemDriver):
        pytest.skip("object stores have no directory tree to escape")
    with pytest.raises(StorageError):
        await driver.get_bytes("../../etc/passwd")
    with pytest.raises(StorageError):
        await driver.put_bytes("../outside", b"x")


async def test_ping(driver: StorageDriver) -> None:
    await driver.ping()
