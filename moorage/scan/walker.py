"""Reading one layer: a push parser over its compressed bytes, fed chunk by chunk as the blob
streams out of storage, that never writes to disk.

The layer is attacker-supplied. What bounds it:

- compression: gzip (several members), zstd or none, sniffed from the first bytes; the
  decompressed total is capped (``max_layer_bytes``) and so is the ratio of decompressed to
  compressed bytes past the first MiB (``max_ratio``) — a compression bomb stops the layer
  with an error, it is never inflated;
- tar headers: ustar, GNU long names (``L``/``K``, capped at 64 KiB) and PAX (``x``, capped);
  a header whose checksum is wrong ends the layer with an error;
- paths are normalised inside the image root: ``..`` never climbs out, absolute paths are made
  relative; links are never followed (symlinks and hard links to a wanted path only shadow
  what a lower layer had there);
- entries are counted (``max_entries``); only the members an analyzer wants are kept in
  memory, each at most ``max_member`` bytes (larger ones are recorded as errors and skipped).

The result is a :class:`LayerFiles`: what became of each wanted file (the caller's ``on_file``
runs as soon as a file is complete, so at most one is in memory; a hard link to a file of the
same layer gets the same result at its own path), the paths this layer removes (whiteouts
``.wh.<name>``, opaque directories ``.wh..wh..opq``, and wanted paths replaced by something
that is not a regular file), and the errors met.
"""

from __future__ import annotations

import posixpath
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class LayerError(Exception):
    """The layer cannot be read further (corrupt, or past a limit)."""


@dataclass(frozen=True)
class Limits:
    max_member: int = 64 << 20  # one file read into memory
    max_total_kept: int = 4 << 30  # all files read into memory from one layer (one at a time)
    max_layer_bytes: int = 64 << 30  # decompressed bytes of one layer
    max_ratio: int = 2000  # decompressed / compressed, past the first MiB (gzip tops at ~1030)
    max_entries: int = 2_000_000
    max_name: int = 64 << 10  # GNU long names, PAX records


# A decision on a member: None (skip it), "read" (keep it whole), "elf" (keep it only if it
# starts with the ELF magic and is executable).
Want = Callable[[str, int, int], str | None]


@dataclass
class LayerFiles:
    files: dict[str, Any] = field(
        default_factory=dict
    )  # path -> on_file's result (bytes by default)
    removed: list[str] = field(default_factory=list)  # paths (and everything under them)
    opaque: list[str] = field(default_factory=list)  # directories whose lower contents go
    errors: list[str] = field(default_factory=list)
    entries: int = 0


def clean_path(name: str) -> str:
    """A member name as a path relative to the image root ('' for the root itself)."""
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def _octal(field_: bytes) -> int:
    if field_ and field_[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field_, "big", signed=False) & ~(0x80 << (8 * (len(field_) - 1)))
        return value
    text = field_.rstrip(b"\x00 ").lstrip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError("malformed tar header number") from None


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise LayerError("malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise LayerError("malformed PAX header")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


class TarParser:
    """Parses a tar stream fed in chunks of any size."""

    def __init__(
        self,
        want: Want,
        limits: Limits,
        result: LayerFiles,
        on_file: Callable[[str, bytes], Any] | None = None,
    ) -> None:
        self.want = want
        # what becomes of a kept file, at once (its bytes are then dropped: at most one file
        # is in memory); by default the bytes themselves
        self.on_file = on_file or (lambda _path, data: data)
        self.relink: Callable[[Any, str, str], Any] = _relink_default
        self.limits = limits
        self.result = result
        self.buf = b""
        self.state = "header"
        self.remaining = 0  # data bytes of the current member still to come
        self.padding = 0
        self.kind = ""  # what to do with the data: skip | keep | elf | meta
        self.meta_type = b""
        self.path = ""
        self.data = bytearray()
        self.long_name: str | None = None
        self.long_link: str | None = None
        self.pax: dict[str, str] = {}
        self.kept = 0
        self.zero_blocks = 0
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        data = self.buf + chunk if self.buf else chunk
        i, n = 0, len(data)
        while not self.done:
            if self.state == "header":
                if n - i < 512:
                    break
                block = bytes(data[i : i + 512])
                i += 512
                self._header(block)
                continue
            if self.remaining:
                if i >= n:
                    break
                take = min(self.remaining, n - i)
                if self.kind != "skip":
                    self._data(data[i : i + take])
                i += take
                self.remaining -= take
                if self.remaining:
                    break
                self._member_end()
            if self.padding:
                take = min(self.padding, n - i)
                i += take
                self.padding -= take
                if self.padding:
                    break
            self.state = "header"
        self.buf = bytes(data[i:]) if not self.done else b""

    def _data(self, piece: bytes) -> None:
        self.data += piece
        if self.kind == "elf" and len(self.data) >= 4 and not self.data.startswith(b"\x7fELF"):
            self.kind = "skip"
            self.data = bytearray()

    def _member_end(self) -> None:
        kind, data = self.kind, bytes(self.data)
        self.data = bytearray()
        self.kind = "skip"
        if kind == "meta":
            if self.meta_type == b"L":
                self.long_name = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
            elif self.meta_type == b"K":
                self.long_link = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
            elif self.meta_type == b"x":
                self.pax = _pax(data)
        elif kind in ("keep", "elf"):
            if kind == "elf" and not data.startswith(b"\x7fELF"):
                return
            self.result.files[self.path] = self.on_file(self.path, data)
            self.kept += len(data)

    def _header(self, block: bytes) -> None:
        if block == b"\x00" * 512:
            self.zero_blocks += 1
            if self.zero_blocks >= 2:
                self.done = True
            return
        self.zero_blocks = 0
        try:
            stored = _octal(block[148:156])
        except LayerError:
            stored = -1
        computed = sum(block[:148]) + 256 + sum(block[156:])
        if stored != computed:
            raise LayerError("not a tar archive (header checksum mismatch)")
        typeflag = block[156:157]
        size = _octal(block[124:136])
        if size < 0:
            raise LayerError("negative member size")
        self.remaining = size
        self.padding = (-size) % 512
        self.state = "data"
        self.kind = "skip"
        if typeflag in (b"L", b"K", b"x", b"g"):
            if size > self.limits.max_name:
                raise LayerError("tar extended header too large")
            self.kind = "meta" if typeflag != b"g" else "skip"
            self.meta_type = typeflag
            if size == 0:
                self._member_end()
            return
        self.result.entries += 1
        if self.result.entries > self.limits.max_entries:
            raise LayerError(f"more than {self.limits.max_entries} entries")
        name = block[0:100].split(b"\x00", 1)[0].decode("utf-8", "replace")
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\x00", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = prefix + "/" + name
        if self.long_name is not None:
            name = self.long_name
        name = self.pax.get("path", name)
        if "size" in self.pax:
            try:
                size = int(self.pax["size"])
            except ValueError:
                raise LayerError("malformed PAX size") from None
            self.remaining = size
            self.padding = (-size) % 512
        link = block[157:257].split(b"\x00", 1)[0].decode("utf-8", "replace")
        if self.long_link is not None:
            link = self.long_link
        link = self.pax.get("linkpath", link)
        self.long_name = self.long_link = None
        self.pax = {}
        mode = _octal(block[100:108])
        path = clean_path(name)
        self._entry(path, typeflag, size, mode, link)

    def _entry(self, path: str, typeflag: bytes, size: int, mode: int, link: str = "") -> None:
        base = posixpath.basename(path)
        parent = posixpath.dirname(path)
        if base == OPAQUE:
            self.result.opaque.append(parent)
            return
        if base.startswith(WHITEOUT):
            self.result.removed.append(posixpath.join(parent, base[len(WHITEOUT) :]))
            return
        if not path:
            return
        regular = typeflag in (b"0", b"\x00", b"7")
        decision = self.want(path, size, mode)
        if not regular:
            target = clean_path(link) if typeflag == b"1" else ""
            if target and target in self.result.files:
                # a hard link to a kept file of this layer: the same contents at this path too
                self.result.removed.append(path)
                self.result.files[path] = self.relink(self.result.files[target], target, path)
            elif decision is not None and typeflag != b"5":
                # a link or device where a lower layer may have had a wanted file: it is gone
                self.result.removed.append(path)
            return
        if decision is None:
            return
        # It replaces what a lower layer had at its path, even if it is not kept below.
        self.result.removed.append(path)
        if size > self.limits.max_member:
            if decision == "read":
                self.result.errors.append(
                    f"{path}: {size} bytes, over the {self.limits.max_member} limit"
                )
            return
        if self.kept + size > self.limits.max_total_kept:
            self.result.errors.append(f"{path}: layer read limit reached")
            return
        self.path = path
        self.kind = "keep" if decision == "read" else "elf"
        self.data = bytearray()
        if size == 0:
            self._member_end()
            self.state = "header"


def _relink_default(value: Any, _target: str, _path: str) -> Any:
    return value


class Decompressor:
    """Sniffs the compression from the first bytes and inflates chunk by chunk, within
    limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.obj: Any = None
        self.kind = ""
        self.head = b""
        self.compressed = 0
        self.out = 0

    def _start(self, head: bytes) -> None:
        if head.startswith(b"\x1f\x8b"):
            self.kind = "gzip"
            self.obj = zlib.decompressobj(wbits=31)
        elif head.startswith(b"\x28\xb5\x2f\xfd"):
            import zstandard

            self.kind = "zstd"
            self.obj = zstandard.ZstdDecompressor().decompressobj()
        else:
            self.kind = "none"

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Inflated pieces of at most a few MiB each (so a bomb is caught before it fills
        memory)."""
        if self.obj is None and not self.kind:
            self.head += chunk
            if len(self.head) < 4:
                return
            chunk, self.head = self.head, b""
            self._start(chunk)
        if self.kind == "none":
            self.compressed += len(chunk)
            self._count(len(chunk))
            yield chunk
            return
        step = 64 << 10 if self.kind == "gzip" else 4 << 10
        for i in range(0, len(chunk), step):
            piece = chunk[i : i + step]
            self.compressed += len(piece)
            if self.kind == "gzip":
                yield from self._gzip(piece)
            else:
                yield from self._zstd(piece)

    def _zstd(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self.obj.decompress(data)
            except Exception as e:  # zstandard.ZstdError
                raise LayerError(f"zstd: {e}") from None
            self._count(len(out))
            yield out
            data = b""
            if self.obj.eof:
                data = self.obj.unused_data
                import zstandard

                self.obj = zstandard.ZstdDecompressor().decompressobj()

    def _gzip(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self.obj.decompress(data, 8 << 20)
            except zlib.error as e:
                raise LayerError(f"gzip: {e}") from None
            self._count(len(out))
            yield out
            if self.obj.unconsumed_tail:
                data = self.obj.unconsumed_tail
            elif self.obj.eof and self.obj.unused_data.strip(b"\x00"):
                data = self.obj.unused_data  # another gzip member
                self.obj = zlib.decompressobj(wbits=31)
            else:
                data = b""

    def _count(self, n: int) -> None:
        self.out += n
        if self.out > self.limits.max_layer_bytes:
            raise LayerError(f"layer inflates past {self.limits.max_layer_bytes} bytes")
        if self.out > (1 << 20) and self.out > self.compressed * self.limits.max_ratio:
            raise LayerError(
                f"compression ratio over {self.limits.max_ratio}:1 (a compression bomb?)"
            )

    def finish(self) -> bytes:
        if self.head:  # under 4 bytes in all
            self.kind = "none"
            head, self.head = self.head, b""
            return head
        return b""


class LayerReader:
    """Feed it the layer blob's chunks; ``finish()`` returns what was found. Errors never
    escape: a layer that cannot be read further keeps what was read before, with the error."""

    def __init__(
        self,
        want: Want,
        limits: Limits | None = None,
        on_file: Callable[[str, bytes], Any] | None = None,
        relink: Callable[[Any, str, str], Any] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.result = LayerFiles()
        self.decompressor = Decompressor(self.limits)
        self.tar = TarParser(want, self.limits, self.result, on_file)
        if relink is not None:
            self.tar.relink = relink
        self.failed = False

    def feed(self, chunk: bytes) -> None:
        if self.failed or self.tar.done:
            return
        try:
            for piece in self.decompressor.feed(chunk):
                self.tar.feed(piece)
                if self.tar.done:
                    return
        except LayerError as e:
            self.failed = True
            self.result.errors.append(f"layer: {e}")

    def finish(self) -> LayerFiles:
        if not self.failed:
            try:
                self.tar.feed(self.decompressor.finish())
            except LayerError as e:
                self.result.errors.append(f"layer: {e}")
                self.failed = True
            if (
                not self.failed
                and not self.tar.done
                and (self.tar.state != "header" or self.tar.buf)
            ):
                self.result.errors.append("layer: truncated tar archive")
        return self.result
