"""Builds image layers for the scan tests: tar archives (gzip, zstd or none) from a dict of
members, with the tarfile module (so the walker reads what a real tool wrote)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "scan"

# member value: bytes (a regular file, mode 0644), ("x", bytes) (executable), ("sym", target),
# ("link", target) (hard link), ("dir",)
Member = bytes | tuple[Any, ...]


def tar_bytes(members: dict[str, Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if isinstance(value, bytes):
                info.size, info.mode = len(value), 0o644
                tar.addfile(info, io.BytesIO(value))
            elif value[0] == "x":
                info.size, info.mode = len(value[1]), 0o755
                tar.addfile(info, io.BytesIO(value[1]))
            elif value[0] == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
            elif value[0] == "link":
                info.type, info.linkname = tarfile.LNKTYPE, value[1]
                tar.addfile(info)
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def layer(members: dict[str, Member], how: str = "gzip") -> bytes:
    return compress(tar_bytes(members), how)


def metadata(name: str, version: str, license_: str = "") -> bytes:
    text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if license_:
        text += f"License: {license_}\n"
    return (text + "\nA description.\n").encode()


def package_json(name: str, version: str, license_: str = "MIT") -> bytes:
    import json

    return json.dumps({"name": name, "version": version, "license": license_}).encode()
