"""rpm databases read without rpm: the header blob (rpm's documented "header structure":
index entries then a data store) and the containers that hold one blob per package —
``rpmdb.sqlite`` (table ``Packages(hnum, blob)``), NDB ``Packages.db`` and BerkeleyDB hash
``Packages``.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH, SOURCERPM = 1000, 1001, 1002, 1003, 1014, 1022, 1044
TYPE_INT32, TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING = 4, 6, 8, 9
MAX_INDEX = 100_000
MAX_PACKAGES = 100_000


class RpmError(Exception):
    pass


@dataclass(frozen=True)
class RpmHeader:
    name: str
    version: str
    release: str
    epoch: int | None
    arch: str
    license: str
    sourcerpm: str


def parse_header(blob: bytes) -> RpmHeader:
    """A header blob as the databases store it (no leading magic): il, dl, il index entries
    (tag, type, offset, count; big-endian), then dl bytes of data."""
    if len(blob) < 8:
        raise RpmError("header too short")
    il, dl = struct.unpack_from(">ii", blob, 0)
    if il < 1 or il > MAX_INDEX or dl < 0 or 8 + il * 16 + dl > len(blob):
        raise RpmError("malformed header")
    store = 8 + il * 16
    values: dict[int, str | int] = {}
    for i in range(il):
        tag, typ, offset, count = struct.unpack_from(">iiii", blob, 8 + i * 16)
        if tag not in (NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH, SOURCERPM):
            continue
        if offset < 0 or offset >= dl:
            raise RpmError(f"tag {tag}: offset out of range")
        at = store + offset
        if typ in (TYPE_STRING, TYPE_I18NSTRING, TYPE_STRING_ARRAY):
            end = blob.find(b"\x00", at, store + dl)
            if end < 0:
                raise RpmError(f"tag {tag}: unterminated string")
            values[tag] = blob[at:end].decode("utf-8", "replace")
        elif typ == TYPE_INT32 and count >= 1 and at + 4 <= store + dl:
            values[tag] = struct.unpack_from(">i", blob, at)[0]

    def text(tag: int) -> str:
        v = values.get(tag, "")
        return v if isinstance(v, str) else str(v)

    if not text(NAME) or not text(VERSION):
        raise RpmError("header without name or version")
    epoch = values.get(EPOCH)
    return RpmHeader(
        text(NAME),
        text(VERSION),
        text(RELEASE),
        epoch if isinstance(epoch, int) else None,
        text(ARCH),
        text(LICENSE),
        text(SOURCERPM),
    )


def sqlite_blobs(data: bytes) -> Iterator[bytes]:
    conn = sqlite3.connect(":memory:")
    try:
        try:
            if data[18:20] == b"\x02\x02":
                # WAL mode: an in-memory copy must say rollback journal to open (read only)
                data = data[:18] + b"\x01\x01" + data[20:]
            conn.deserialize(data)
            rows = conn.execute("SELECT blob FROM Packages ORDER BY hnum LIMIT ?", (MAX_PACKAGES,))
            for (blob,) in rows:
                if isinstance(blob, bytes):
                    yield blob
        except sqlite3.Error as e:
            raise RpmError(f"sqlite: {e}") from None
    finally:
        conn.close()


NDB_MAGIC = b"RpmP"
NDB_BLOB_MAGIC = b"BlbS"


def ndb_blobs(data: bytes) -> Iterator[bytes]:
    """rpm's NDB ``Packages.db``: a header (magic "RpmP", version, generation, slot pages),
    slot pages of 16-byte slots (pkgidx, blkoff, blkcnt), and blobs (magic "BlbS", pkgidx,
    generation, length, then the header blob) at blkoff * 16."""
    if len(data) < 32 or data[:4] != NDB_MAGIC:
        raise RpmError("not an NDB Packages.db")
    slot_npages = struct.unpack_from("<I", data, 12)[0]
    page = 4096
    end = min(len(data), slot_npages * page)
    seen = 0
    # The first 2 slots of page 0 are taken by the file header.
    for off in range(32, end, 16):
        magic = data[off : off + 4]
        if magic != b"Slot":
            continue
        pkgidx, blkoff, blkcnt = struct.unpack_from("<III", data, off + 4)
        if pkgidx == 0:
            continue
        at = blkoff * 16
        if at + 16 > len(data) or data[at : at + 4] != NDB_BLOB_MAGIC:
            raise RpmError(f"NDB slot {pkgidx}: no blob at {at}")
        length = struct.unpack_from("<I", data, at + 12)[0]
        if at + 16 + length > len(data) or length > blkcnt * 16:
            raise RpmError(f"NDB blob {pkgidx}: length out of range")
        yield data[at + 16 : at + 16 + length]
        seen += 1
        if seen > MAX_PACKAGES:
            return


def bdb_blobs(data: bytes) -> Iterator[bytes]:
    """A BerkeleyDB hash database (rpm < 4.16 ``Packages``): walk its hash pages and gather
    each value (a header blob, kept on overflow pages when large)."""
    if len(data) < 512:
        raise RpmError("not a BerkeleyDB file")
    magic_le = struct.unpack_from("<I", data, 12)[0]
    magic_be = struct.unpack_from(">I", data, 12)[0]
    if magic_le == 0x061561:
        e = "<"
    elif magic_be == 0x061561:
        e = ">"
    else:
        raise RpmError("not a BerkeleyDB hash database")
    pagesize = struct.unpack_from(e + "I", data, 20)[0]
    if pagesize < 512 or pagesize > 65536 or pagesize & (pagesize - 1):
        raise RpmError("BerkeleyDB: bad page size")
    npages = len(data) // pagesize
    seen = 0
    for pgno in range(1, npages):
        page = data[pgno * pagesize : (pgno + 1) * pagesize]
        if page[25] != 13:  # P_HASH pages hold the key/value pairs
            continue
        entries = struct.unpack_from(e + "H", page, 20)[0]
        offsets = [struct.unpack_from(e + "H", page, 26 + 2 * i)[0] for i in range(entries)]
        for i in range(1, entries, 2):  # values are the odd items
            off = offsets[i]
            if off >= pagesize:
                continue
            kind = page[off]
            if kind == 3:  # H_OFFPAGE: first overflow page and total length
                first, total = struct.unpack_from(e + "II", page, off + 4)
                blob = _bdb_overflow(data, e, pagesize, first, total)
            elif kind == 1:  # H_KEYDATA: inline value up to the previous item's offset
                end = offsets[i - 1] if i >= 1 else pagesize
                blob = page[off + 1 : end]
            else:
                continue
            if len(blob) >= 8:
                yield blob
                seen += 1
                if seen > MAX_PACKAGES:
                    return


def _bdb_overflow(data: bytes, e: str, pagesize: int, pgno: int, total: int) -> bytes:
    out = bytearray()
    hops = 0
    while pgno and len(out) < total:
        hops += 1
        if hops > 1_000_000 or (pgno + 1) * pagesize > len(data):
            raise RpmError("BerkeleyDB: broken overflow chain")
        page = data[pgno * pagesize : (pgno + 1) * pagesize]
        nxt = struct.unpack_from(e + "I", page, 16)[0]
        length = struct.unpack_from(e + "H", page, 22)[0]  # hf_offset holds the used length
        out += page[26 : 26 + length]
        pgno = nxt
    return bytes(out[:total])
