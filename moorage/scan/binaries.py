"""Build information embedded in executables: Go's ``.go.buildinfo`` and cargo-auditable's
``.dep-v0`` ELF sections. Only ELF is read (container images are Linux)."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

GO_MAGIC = b"\xff Go buildinf:"


class BinaryError(Exception):
    pass


def elf_sections(data: bytes, wanted: set[str]) -> dict[str, bytes]:
    """The contents of the named sections (those with file contents) of an ELF file."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise BinaryError("not ELF")
    cls, enc = data[4], data[5]
    if cls not in (1, 2) or enc not in (1, 2):
        raise BinaryError("unknown ELF class or encoding")
    e = "<" if enc == 1 else ">"
    if cls == 2:
        shoff = struct.unpack_from(e + "Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
    else:
        shoff = struct.unpack_from(e + "I", data, 0x20)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x2E)
    if shoff == 0 or shnum == 0:
        return {}
    need = 0x40 if cls == 2 else 0x28
    if shentsize < need or shnum > 65535 or shoff + shnum * shentsize > len(data):
        raise BinaryError("section headers out of range")

    def section(i: int) -> tuple[int, int, int, int]:
        at = shoff + i * shentsize
        if cls == 2:
            name, typ, _flags, _addr, off, size = struct.unpack_from(e + "IIQQQQ", data, at)
        else:
            name, typ, _flags, _addr, off, size = struct.unpack_from(e + "IIIIII", data, at)
        return name, typ, off, size

    if shstrndx >= shnum:
        raise BinaryError("bad section name table index")
    _, _, stroff, strsize = section(shstrndx)
    if stroff + strsize > len(data):
        raise BinaryError("section name table out of range")
    names = data[stroff : stroff + strsize]
    out: dict[str, bytes] = {}
    for i in range(shnum):
        name_off, typ, off, size = section(i)
        end = names.find(b"\x00", name_off)
        name = names[name_off:end].decode("latin-1") if 0 <= name_off < len(names) else ""
        if name in wanted and typ != 8:  # SHT_NOBITS has no bytes in the file
            if off + size > len(data):
                raise BinaryError(f"section {name} out of range")
            out[name] = data[off : off + size]
    return out


@dataclass
class GoBuildInfo:
    go_version: str
    path: str = ""
    main: tuple[str, str] | None = None
    deps: list[tuple[str, str, str | None]] = field(default_factory=list)  # path, ver, replaced by
    settings: dict[str, str] = field(default_factory=dict)


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BinaryError("bad varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def go_buildinfo(section: bytes) -> GoBuildInfo:
    """Go 1.18+ layout: 16-byte header (magic, pointer size, flags with bit 2 = inline
    strings), then at offset 32 the Go version and the module info, each a uvarint length and
    bytes. Older binaries (pointers to strings) are not read."""
    if not section.startswith(GO_MAGIC) or len(section) < 32:
        raise BinaryError("no Go build info")
    flags = section[15]
    if not flags & 0x2:
        raise BinaryError("Go build info before Go 1.18 (not read)")
    n, pos = _uvarint(section, 32)
    version = section[pos : pos + n].decode("utf-8", "replace")
    pos += n
    n, pos = _uvarint(section, pos)
    mod = section[pos : pos + n]
    if len(mod) >= 33 and mod[-17] == ord("\n"):
        mod = mod[16:-16]
    info = GoBuildInfo(version)
    for line in mod.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if parts[0] == "path" and len(parts) >= 2:
            info.path = parts[1]
        elif parts[0] == "mod" and len(parts) >= 3:
            info.main = (parts[1], parts[2])
        elif parts[0] == "dep" and len(parts) >= 3:
            info.deps.append((parts[1], parts[2], None))
        elif parts[0] == "=>" and len(parts) >= 3 and info.deps:
            path, ver, _ = info.deps[-1]
            if ver and parts[2] and parts[2] != "(devel)":
                info.deps[-1] = (parts[1], parts[2], None)
            else:
                info.deps[-1] = (path, ver, parts[1])
        elif parts[0] == "build" and len(parts) >= 2:
            key, _, value = parts[1].partition("=")
            info.settings[key] = value
    return info


def cargo_auditable(section: bytes, limit: int = 8 << 20) -> list[dict[str, object]]:
    """cargo-auditable's ``.dep-v0``: zlib-compressed JSON ``{"packages": [{"name",
    "version", "source", "kind", "root", "dependencies"}]}``."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(section, limit)
    except zlib.error as e:
        raise BinaryError(f".dep-v0: {e}") from None
    if d.unconsumed_tail:
        raise BinaryError(".dep-v0: over the size limit")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise BinaryError(f".dep-v0: {e}") from None
    packages = doc.get("packages") if isinstance(doc, dict) else None
    if not isinstance(packages, list):
        raise BinaryError(".dep-v0: no package list")
    return [p for p in packages if isinstance(p, dict)]
