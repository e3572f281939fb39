"""The NDB and BerkeleyDB containers of rpm databases. Debian's rpm cannot write either, so
the tests lay out the real header blobs of tests/data/scan/rpmdb.sqlite (written by rpm)
the way rpm's NDB backend (lib/backend/ndb/rpmpkg.c: a 4096-byte slot page of "Slot"
entries, blobs "BlbS" at 16-byte blocks) and a BerkeleyDB hash database (meta page, a hash
page of key/value items, values on overflow pages) store them."""

from __future__ import annotations

import struct

from moorage.scan import rpmdb
from moorage.scan.analyzers import analyze

from .layers import DATA

BLOBS = list(rpmdb.sqlite_blobs((DATA / "rpmdb.sqlite").read_bytes()))
EXPECTED = [("libfoo", "2:1.0-1.el9"), ("hello", "2.12.1-3.el9")]


def ndb(blobs: list[bytes]) -> bytes:
    page = bytearray(4096)
    struct.pack_into("<4sIII", page, 0, b"RpmP", 0, 1, 1)  # magic, version, generation, pages
    out = bytearray(page)
    blocks = []
    for i, blob in enumerate(blobs, start=1):
        blkoff = len(out) // 16
        body = struct.pack("<4sIII", b"BlbS", i, 1, len(blob)) + blob
        body += b"\0" * ((-len(body)) % 16)
        out += body
        blocks.append((i, blkoff, len(body) // 16))
    for n, (i, blkoff, blkcnt) in enumerate(blocks):
        struct.pack_into("<4sIII", out, 16 * (n + 2), b"Slot", i, blkoff, blkcnt)
    return bytes(out)


def bdb(blobs: list[bytes], pagesize: int = 512) -> bytes:
    pages: list[bytearray] = []
    meta = bytearray(pagesize)
    struct.pack_into("<III", meta, 12, 0x061561, 9, pagesize)
    meta[25] = 8
    pages.append(meta)
    hash_page = bytearray(pagesize)
    pages.append(hash_page)
    items: list[bytes] = []
    for i, blob in enumerate(blobs, start=1):
        items.append(b"\x01" + struct.pack("<I", i))  # key: the package number
        first = len(pages)
        chunk = pagesize - 26
        parts = [blob[k : k + chunk] for k in range(0, len(blob), chunk)]
        for j, part in enumerate(parts):
            p = bytearray(pagesize)
            nxt = first + j + 1 if j + 1 < len(parts) else 0
            struct.pack_into("<IIIHH", p, 8, first + j, 0, nxt, 0, len(part))
            p[25] = 7  # P_OVERFLOW
            p[26 : 26 + len(part)] = part
            pages.append(p)
        items.append(struct.pack("<B3xII", 3, first, len(blob)))  # H_OFFPAGE
    struct.pack_into("<H", hash_page, 20, len(items))
    hash_page[25] = 13  # P_HASH
    end = pagesize
    for n, item in enumerate(items):
        end -= len(item)
        hash_page[end : end + len(item)] = item
        struct.pack_into("<H", hash_page, 26 + 2 * n, end)
    return b"".join(pages)


def names(path: str, data: bytes) -> list[tuple[str, str]]:
    record = analyze(path, data)
    assert record["errors"] == []
    return [(p["name"], p["version"]) for p in record["packages"]]


def test_ndb_packages_db() -> None:
    assert names("var/lib/rpm/Packages.db", ndb(BLOBS)) == EXPECTED


def test_berkeleydb_packages() -> None:
    assert names("var/lib/rpm/Packages", bdb(BLOBS)) == EXPECTED


def test_broken_containers_are_errors() -> None:
    for path, data in (
        ("var/lib/rpm/Packages.db", ndb(BLOBS)[:5000]),
        ("var/lib/rpm/Packages", b"\0" * 4096),
        ("var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\0" + b"\xff" * 200),
    ):
        record = analyze(path, data)
        assert record["packages"] == [] and len(record["errors"]) == 1, (path, record)
