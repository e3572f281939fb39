"""``delete_many``, what GC's byte phase calls: every named object goes, in one call, whatever
the count (S3: batched DeleteObjects, 1,000 keys a request — more than one batch here), missing
ones are no error, nothing else is touched; on the filesystem no name escapes the root."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from moorage.storage.base import StorageDriver, StorageError, blob_path
from tests.storage.test_drivers import Stores, stores  # noqa: F401 - the shared fixture


def _paths(n: int, salt: str) -> list[str]:
    import hashlib

    return [
        blob_path("sha256", hashlib.sha256(f"{salt}{i}".encode()).hexdigest()) for i in range(n)
    ]


async def _put_all(d: StorageDriver, paths: list[str]) -> None:
    sem = asyncio.Semaphore(16)

    async def one(p: str) -> None:
        async with sem:
            await d.put_bytes(p, p.encode())

    await asyncio.gather(*(one(p) for p in paths))


async def test_delete_many_removes_exactly_the_named_objects(stores: Stores) -> None:  # noqa: F811
    d = stores.new()
    n = 1100 if stores.kind == "s3" else 600  # S3: past one 1,000-key DeleteObjects request
    doomed, kept = _paths(n, "doomed"), _paths(20, "kept")
    await _put_all(d, doomed + kept)
    missing = _paths(3, "never-stored")
    await d.delete_many(doomed + missing, concurrency=4)
    for p in doomed[:: max(1, n // 50)] + [doomed[-1]]:
        assert await d.stat(p) is None, p
    for p in kept:
        info = await d.stat(p)
        assert info is not None and info.size == len(p.encode())
    await d.delete_many([])  # nothing to do


async def test_filesystem_delete_many_stays_inside_the_root(tmp_path: Path) -> None:
    from moorage.storage.filesystem import FilesystemDriver

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    root = tmp_path / "store"
    d = FilesystemDriver(str(root))
    try:
        await d.put_bytes("blobs/sha256/ab/x", b"x")
        # A directory inside the root that links outside: its names are not the store's.
        os.symlink(tmp_path, root / "blobs" / "sha256" / "zz")
        with pytest.raises(StorageError):
            await d.delete_many(["blobs/sha256/zz/outside.txt"])
        with pytest.raises(StorageError):
            await d.delete_many(["../outside.txt"])
        assert outside.read_text() == "keep me"
        await d.delete_many(["blobs/sha256/ab/x"])
        assert await d.stat("blobs/sha256/ab/x") is None
    finally:
        await d.close()
