"""Filesystem driver: local disk or an NFS mount.

Uploads are files under ``uploads/<id>/data``; commit fsyncs and renames into the
content-addressed path, which is atomic on POSIX filesystems (NFS included), so a reader sees the
whole blob or nothing. Blocking calls run in worker threads so that slow disks and NFS never stall
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from .base import (
    PathNotFound,
    StatInfo,
    StorageDriver,
    StorageError,
    StorageFull,
    UploadWriter,
    upload_prefix,
)

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return free heap pages to the system (glibc's malloc_trim; a no-op elsewhere)."""
    if _TRIM is not None:
        _TRIM(0)


# Streams at once below which a reader uses large reads (reader()).
_FEW_READERS = 4
_FEW_READS = 1 << 20


def _open_and_read(full: str, n: int, offset: int) -> tuple[int, bytes, int]:
    """Open *full*, read its first *n* bytes from *offset*, and its size (one call on a reader
    thread)."""
    fd = os.open(full, os.O_RDONLY)
    try:
        return fd, os.pread(fd, n, offset), os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    # After a write failed for lack of space, /readyz reports the store full for this long
    # (the failed request's bytes are dropped at once, so a probe alone would say "ok").
    FULL_MEMORY_SECONDS = 60.0

    def __init__(self, root: str, reader_threads: int = 4) -> None:
        self.root = os.path.realpath(root)
        os.makedirs(self.root, exist_ok=True)
        self.full_at: float | None = None  # monotonic time of the last ENOSPC/EDQUOT
        # Blob reads for responses run on a bounded pool of their own: a hundred parallel pulls
        # neither grow the default executor (shared with everything else) to its maximum nor
        # give each of its threads a malloc arena of its own.
        self.reader_threads = reader_threads
        self._readers: ThreadPoolExecutor | None = None

        self._active_readers = 0
        self._trim: asyncio.TimerHandle | None = None

    def _reader_pool(self) -> ThreadPoolExecutor:
        if self._readers is None:
            self._readers = ThreadPoolExecutor(self.reader_threads, "moorage-read")
        return self._readers

    def _reader_done(self, loop: asyncio.AbstractEventLoop) -> None:
        """The last response stream ended: a second later (if none started meanwhile), give the
        freed read buffers back to the system (glibc keeps freed heap pages otherwise: after a
        hundred parallel pulls the process stayed at 2.6 times its idle size)."""
        self._active_readers -= 1
        if self._active_readers:
            return
        if self._trim is not None:
            self._trim.cancel()

        def trim() -> None:
            self._trim = None
            if not self._active_readers and self._readers is not None:
                self._readers.submit(release_free_memory)

        self._trim = loop.call_later(1.0, trim)

    async def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        if self._readers is not None:
            self._readers.shutdown(wait=False)
            self._readers = None

    def note_full(self) -> None:
        self.full_at = time.monotonic()

    def _full(self, path: str) -> str:
        full = os.path.realpath(os.path.join(self.root, path))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise StorageError(f"path escapes the storage root: {path!r}")
        return full

    async def reader(
        self, path: str, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        full = self._full(path)
        loop = asyncio.get_running_loop()
        pool = self._reader_pool()
        self._active_readers += 1
        try:
            # The open and the first read in one thread hop: a small blob (a config, a small
            # layer) is then read in one hop, not three (open, read, the empty read at the end).
            n = self._read_size(chunk_size, length)
            try:
                fd, data, size = await loop.run_in_executor(pool, _open_and_read, full, n, offset)
            except FileNotFoundError:
                raise PathNotFound(path) from None
            except OSError as exc:
                raise StorageError(str(exc)) from exc
            try:
                # Blobs are written once, whole (a temporary name, then a rename): the size
                # read at the open is the size, and the stream stops with its last bytes
                # rather than with a read that finds the end.
                remaining = max(0, size - offset) if length is None else length
                pos = offset
                while data:
                    pos += len(data)
                    remaining -= len(data)
                    yield data
                    if remaining <= 0:
                        break
                    n = self._read_size(chunk_size, remaining)
                    data = await loop.run_in_executor(pool, os.pread, fd, n, pos)
            finally:
                os.close(fd)
        finally:
            self._reader_done(loop)

    def _read_size(self, chunk_size: int, remaining: int | None) -> int:
        # Few streams: large reads (a thread hop per MiB, not per 128 KiB: one 1 GiB GET ran
        # at 0.46x Distribution's speed with 128 KiB). Many streams: the caller's size,
        # re-decided at every read, so memory stays bounded by the crowd.
        few = self._active_readers <= _FEW_READERS
        size = max(_FEW_READS, chunk_size) if few else chunk_size
        return size if remaining is None else max(0, min(size, remaining))

    async def get_bytes(self, path: str) -> bytes:
        def read() -> bytes:
            with open(self._full(path), "rb") as f:
                return f.read()

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError:
            raise PathNotFound(path) from None

    async def put_bytes(self, path: str, data: bytes) -> None:
        full = self._full(path)

        def write() -> None:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            tmp = f"{full}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, full)

        await asyncio.to_thread(write)

    async def stat(self, path: str) -> StatInfo | None:
        try:
            st = await asyncio.to_thread(os.stat, self._full(path))
        except FileNotFoundError:
            return None
        return StatInfo(path, st.st_size)

    async def delete(self, path: str) -> None:
        full = self._full(path)

        def rm() -> None:
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)

        await asyncio.to_thread(rm)

    async def delete_many(self, paths: Sequence[str], concurrency: int = 16) -> None:
        """Unlinks in a few threads, many paths each (one thread hop per file would cost more
        than the unlink). Each directory is resolved once (``realpath`` per file cost more than
        the unlink: bench/gc.py); unlinking a name inside a resolved directory cannot escape
        the root (a symlink there is removed, not followed)."""
        dirs: dict[str, str] = {}
        lock = threading.Lock()

        def full_of(path: str) -> str:
            parent, leaf = os.path.split(path)
            if not parent or leaf in ("", ".", ".."):
                return self._full(path)
            with lock:
                real = dirs.get(parent)
            if real is None:
                real = self._full(parent)
                with lock:
                    dirs[parent] = real
            return os.path.join(real, leaf)

        def rm(chunk: Sequence[str]) -> None:
            for path in chunk:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full_of(path))

        # Up to *concurrency* (at most 8) threads, at least 32 paths each: unlinks wait on the
        # disk's metadata journal, so several in flight overlap those waits.
        workers = max(1, min(concurrency, 8, -(-len(paths) // 32)))
        size = max(1, -(-len(paths) // workers))
        chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
        sem = asyncio.Semaphore(workers)

        async def one(chunk: Sequence[str]) -> None:
            async with sem:
                await asyncio.to_thread(rm, chunk)

        await asyncio.gather(*(one(c) for c in chunks))

    async def delete_object(self, path: str) -> None:
        full = self._full(path)

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)

        await asyncio.to_thread(rm)

    async def list(self, prefix: str) -> list[str]:
        base = self._full(prefix)

        def walk() -> list[str]:
            out = []
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    out.append(os.path.relpath(os.path.join(dirpath, name), self.root))
            return sorted(out)

        return await asyncio.to_thread(walk)

    async def new_writer(self, upload_id: str) -> UploadWriter:
        directory = self._full(upload_prefix(upload_id))

        def create() -> int:
            os.makedirs(directory, exist_ok=True)
            return os.open(os.path.join(directory, "data"), os.O_RDWR | os.O_CREAT | os.O_TRUNC)

        fd = await asyncio.to_thread(create)
        return _FileWriter(self, directory, fd, 0)

    async def resume_writer(self, upload_id: str, state: dict[str, Any]) -> UploadWriter:
        directory = self._full(upload_prefix(upload_id))
        size = int(state.get("size", 0))

        def reopen() -> int:
            fd = os.open(os.path.join(directory, "data"), os.O_RDWR)
            # Bytes past the recorded size came from a request that never finished: drop them.
            if os.fstat(fd).st_size != size:
                if os.fstat(fd).st_size < size:
                    # Lost in an OS crash before reaching the disk: the session cannot go on.
                    os.close(fd)
                    raise FileNotFoundError("upload data is shorter than its recorded size")
                os.ftruncate(fd, size)
            return fd

        try:
            fd = await asyncio.to_thread(reopen)
        except FileNotFoundError:
            raise PathNotFound(upload_prefix(upload_id)) from None
        return _FileWriter(self, directory, fd, size)

    async def upload_exists(self, upload_id: str, state: dict[str, Any]) -> bool:
        path = os.path.join(self._full(upload_prefix(upload_id)), "data")
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return False
        return st.st_size >= int(state.get("size", 0))

    async def cleanup_abandoned(self, older_than: timedelta) -> int:
        cutoff = time.time() - older_than.total_seconds()
        uploads = self._full("uploads")

        def sweep() -> int:
            removed = 0
            try:
                names = os.listdir(uploads)
            except FileNotFoundError:
                return 0
            for name in names:
                directory = os.path.join(uploads, name)
                try:
                    newest = max(
                        [os.stat(directory).st_mtime]
                        + [
                            os.stat(os.path.join(directory, f)).st_mtime
                            for f in os.listdir(directory)
                        ]
                    )
                except OSError:
                    continue
                if newest < cutoff:
                    shutil.rmtree(directory, ignore_errors=True)
                    removed += 1
            return removed

        return await asyncio.to_thread(sweep)

    async def ping(self) -> None:
        def probe() -> None:
            path = os.path.join(self.root, f".ping-{os.getpid()}")
            try:
                with open(path, "wb") as f:
                    f.write(b"ok")
                    f.flush()  # a full disk fails here, not at close
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

        try:
            await asyncio.to_thread(probe)
        except OSError as exc:
            if exc.errno in _FULL:
                free = await asyncio.to_thread(self.free_bytes)
                raise StorageFull(
                    f"no space left on device at {self.root} ({free} bytes free): pushes "
                    "fail until space is freed (cancel stale uploads, delete images, run GC)"
                ) from exc
            raise StorageError(f"filesystem store not writable: {exc}") from exc
        if self.full_at is not None:
            ago = time.monotonic() - self.full_at
            if ago < self.FULL_MEMORY_SECONDS:
                free = await asyncio.to_thread(self.free_bytes)
                raise StorageFull(
                    f"a write failed for lack of space {ago:.0f} s ago at {self.root} "
                    f"({free} bytes free now): large pushes fail until space is freed"
                )
            self.full_at = None

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


class _FileWriter(UploadWriter):
    def __init__(self, driver: FilesystemDriver, directory: str, fd: int, size: int) -> None:
        self._driver = driver
        self._dir = directory
        self._fd: int | None = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def _fdesc(self) -> int:
        if self._fd is None:
            raise StorageError("upload writer is closed")
        return self._fd

    async def write(self, data: bytes) -> None:
        fd = self._fdesc()
        offset = self._size

        def pwrite_all() -> None:
            view = memoryview(data)
            pos = offset
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n

        try:
            await asyncio.to_thread(pwrite_all)
        except OSError as exc:
            if exc.errno in _FULL:
                self._driver.note_full()
                raise StorageFull(f"no space left in the store ({exc.strerror})") from exc
            raise
        self._size += len(data)

    def state(self) -> dict[str, Any]:
        return {"size": self._size}

    async def flush(self) -> None:
        # pwrite() has handed the bytes to the kernel: they survive this process. The fsync
        # that makes them survive power loss happens once, at commit, not after every chunk.
        self._fdesc()

    async def read_back(self, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        fd = self._fdesc()
        pos = 0
        while pos < self._size:
            data = await asyncio.to_thread(os.pread, fd, min(chunk_size, self._size - pos), pos)
            if not data:
                raise StorageError("upload data ended early")
            pos += len(data)
            yield data

    async def commit(self, final_path: str) -> None:
        fd = self._fdesc()
        final = self._driver._full(final_path)
        src = os.path.join(self._dir, "data")

        def place() -> None:
            os.fsync(fd)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            # Same digest means same bytes: replacing a concurrent twin is harmless.
            os.rename(src, final)
            dir_fd = os.open(os.path.dirname(final), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            shutil.rmtree(self._dir, ignore_errors=True)

        await asyncio.to_thread(place)
        await self.close()

    async def cancel(self) -> None:
        await self.close()
        await asyncio.to_thread(shutil.rmtree, self._dir, True)

    async def rewind(self, size: int) -> None:
        fd = self._fdesc()
        await asyncio.to_thread(os.ftruncate, fd, size)  # shrinking needs no free space
        self._size = size

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
