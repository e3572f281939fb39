"""One behavioural suite for every storage driver: the filesystem and S3 (moto on loopback)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from moorage.storage.base import PathNotFound, StorageDriver, StorageError, blob_path
from moorage.storage.filesystem import FilesystemDriver
from tests.s3server import MotoServer
from tests.storage.s3util import MiB, make_s3


class Stores:
    """Builds fresh driver instances over the same store (a second node, a restart)."""

    def __init__(self, kind: str, tmp_path: Path, moto: MotoServer | None) -> None:
        self.kind = kind
        self.root = str(tmp_path / "store")
        self.moto = moto
        self.bucket = f"b-{uuid.uuid4().hex[:12]}"
        if moto is not None:
            moto.create_bucket(self.bucket)
        self.opened: list[StorageDriver] = []

    def new(self) -> StorageDriver:
        d: StorageDriver
        if self.kind == "s3":
            assert self.moto is not None
            d = make_s3(self.moto, self.bucket, prefix="reg/1")
        else:
            d = FilesystemDriver(self.root)
        self.opened.append(d)
        return d


@pytest.fixture(params=["filesystem", "s3"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    moto = request.getfixturevalue("moto") if request.param == "s3" else None
    s = Stores(request.param, tmp_path, moto)
    try:
        yield s
    finally:
        for d in s.opened:
            await d.close()


@pytest.fixture
def driver(stores: Stores) -> StorageDriver:
    return stores.new()


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
    await w.flush()
    state = w.state()
    await w.write(b"b" * 50)
    await w.flush()  # that request died before its state was saved
    await w.close()
    w = await driver.resume_writer("u2", state)
    assert w.size == 100
    await w.write(b"c" * 10)
    await w.commit("blobs/final")
    assert await driver.get_bytes("blobs/final") == b"a" * 100 + b"c" * 10


async def test_cancel_removes_upload(driver: StorageDriver) -> None:
    w = await driver.new_writer("u3")
    await w.write(b"data")
    await w.flush()
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


# A push is a series of requests (each a list of writes); every request ends with flush() and
# the saved state, and the next request runs in a fresh driver instance (another node).
PUSHES = {
    "1-byte chunks across the part minimum": [[1] * 300, [5 * MiB - 300 - 1], [1], [1] * 5],
    "4 MiB chunks": [[4 * MiB]] * 4,
    "exactly 5 MiB chunks": [[5 * MiB]] * 3,
    "12 MiB chunks": [[12 * MiB], [12 * MiB], [1]],
}


@pytest.mark.parametrize("push", list(PUSHES), ids=list(PUSHES))
async def test_resumable_push_across_part_boundaries(stores: Stores, push: str) -> None:
    import json

    rnd = os.urandom(1 << 20)
    expected = hashlib.sha256()
    sent = bytearray()
    state = (await (d := stores.new()).new_writer("push")).state()
    for request in PUSHES[push]:
        w = await stores.new().resume_writer("push", json.loads(json.dumps(state)))
        assert w.size == len(sent)
        for n in request:
            data = (rnd * (n // len(rnd) + 1))[:n] if n > 1 else os.urandom(1)
            await w.write(data)
            sent += data
            expected.update(data)
        await w.flush()
        state = w.state()
        await w.close()
    w = await stores.new().resume_writer("push", state)
    assert w.size == len(sent)
    rehash = hashlib.sha256()
    async for chunk in w.read_back():
        rehash.update(chunk)
    assert rehash.hexdigest() == expected.hexdigest()
    final = blob_path("sha256", expected.hexdigest())
    assert await d.stat(final) is None  # nothing visible before the commit
    await w.commit(final)
    st = await d.stat(final)
    assert st is not None and st.size == len(sent)
    got = hashlib.sha256()
    async for chunk in d.reader(final):
        got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    assert await d.list("uploads") == []


async def test_cleanup_abandoned(stores: Stores) -> None:
    d = stores.new()
    w = await d.new_writer("old")
    await w.write(os.urandom(6 * MiB))
    await w.flush()
    state = w.state()
    await w.close()
    assert await d.cleanup_abandoned(timedelta(hours=1)) == 0  # still fresh: kept
    w = await d.resume_writer("old", state)
    assert w.size == 6 * MiB
    await w.close()
    assert await d.cleanup_abandoned(timedelta(0)) >= 1
    with pytest.raises(PathNotFound):
        await d.resume_writer("old", state)
    assert await d.list("uploads") == []
