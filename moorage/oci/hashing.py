"""Resumable content hashing.

An upload may continue on another node or after a restart, so the running hash must be
serializable. hashlib cannot export its state; OpenSSL's low-level SHA-2 contexts are plain
structs, so we drive them through ctypes (same assembly as hashlib, and ctypes releases the GIL
during each call, so hashing runs beside the event loop). The state is tagged with the layout it
came from; a node that cannot load it (other architecture, no libcrypto) re-hashes the stored
bytes instead, which is correct and only slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import platform
from typing import Protocol

_STATE_MAGIC = b"MRH1"


class Hasher(Protocol):
    algorithm: str

    def update(self, data: bytes | memoryview) -> None: ...
    def hexdigest(self) -> str: ...
    def state(self) -> bytes | None: ...


class _Ossl:
    """Bindings to libcrypto's SHA256_*/SHA512_* (stable public structs)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("crypto")
        if name is None:
            raise OSError("libcrypto not found")
        lib = ctypes.CDLL(name)
        self.funcs: dict[str, tuple[object, object, object, int, int]] = {}
        for alg, ctx_size, out_size in (("sha256", 112, 32), ("sha512", 216, 64)):
            prefix = alg.upper()
            init = getattr(lib, f"{prefix}_Init")
            update = getattr(lib, f"{prefix}_Update")
            final = getattr(lib, f"{prefix}_Final")
            init.argtypes = [ctypes.c_void_p]
            update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
            self.funcs[alg] = (init, update, final, ctx_size, out_size)
        self.layout = f"{platform.machine()}-{ctypes.sizeof(ctypes.c_long)}".encode()


try:
    _OSSL: _Ossl | None = _Ossl()
except (OSError, AttributeError):  # pragma: no cover - depends on the host
    _OSSL = None


class ResumableHasher:
    """sha256/sha512 whose state can be saved with :meth:`state` and restored later."""

    def __init__(self, algorithm: str, state: bytes | None = None) -> None:
        if _OSSL is None or algorithm not in _OSSL.funcs:
            raise RuntimeError("resumable hashing unavailable")
        self.algorithm = algorithm
        init, self._update, self._final, ctx_size, self._out_size = _OSSL.funcs[algorithm]
        self._ctx = ctypes.create_string_buffer(ctx_size)
        if state is None:
            init(self._ctx)  # type: ignore[operator]
        else:
            header = _STATE_MAGIC + algorithm.encode() + b"|" + _OSSL.layout + b"|"
            if not state.startswith(header) or len(state) != len(header) + ctx_size:
                raise ValueError("hash state from an incompatible node")
            ctypes.memmove(self._ctx, state[len(header) :], ctx_size)

    def update(self, data: bytes | memoryview) -> None:
        if not data:
            return
        buf = (
            (ctypes.c_char * len(data)).from_buffer_copy(data)
            if isinstance(data, memoryview)
            else data
        )
        self._update(self._ctx, buf, len(data))  # type: ignore[operator]

    def hexdigest(self) -> str:
        # Finalize a copy so the hasher stays usable.
        ctx = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))
        out = ctypes.create_string_buffer(self._out_size)
        self._final(out, ctx)  # type: ignore[operator]
        return out.raw.hex()

    def state(self) -> bytes | None:
        assert _OSSL is not None
        return _STATE_MAGIC + self.algorithm.encode() + b"|" + _OSSL.layout + b"|" + self._ctx.raw


class PlainHasher:
    """hashlib fallback: not resumable; a continuing node re-hashes the stored bytes."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def state(self) -> bytes | None:
        return None


def new_hasher(algorithm: str = "sha256") -> Hasher:
    try:
        return ResumableHasher(algorithm)
    except RuntimeError:
        return PlainHasher(algorithm)


def restore_hasher(algorithm: str, state: bytes | None) -> Hasher | None:
    """The hasher saved in *state*, or None when it must be rebuilt from the stored bytes."""
    if state is None:
        return None
    try:
        return ResumableHasher(algorithm, state)
    except (RuntimeError, ValueError):
        return None
