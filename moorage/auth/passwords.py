"""Password and secret hashing, and the cache that keeps Basic auth off argon2's slow path.

Passwords: argon2id (argon2-cffi defaults: 64 MiB, t=3). Verifying costs tens of milliseconds by
design, so clients that send Basic credentials on every request would be throttled by it; a
successful verification is remembered for a short time, keyed by a keyed hash of the credentials
and bound to the stored hash (a password change invalidates it at once).

Robot secrets are 256-bit random strings: a plain SHA-256 compared in constant time is as strong
as any password hash for them, and cheap enough for every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
# Verified against when the account does not exist, so that the answer takes as long. Made on
# first use: hashing costs 64 MiB and most of a second, which start-up need not pay.
_dummy_hash: str | None = None


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


_CACHE_KEY = secrets.token_bytes(32)
_CACHE_TTL = 60.0
_cache: dict[bytes, tuple[str, float]] = {}

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify_sync(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _cache_key(username: str, password: str) -> bytes:
    return hmac.new(_CACHE_KEY, f"{username}\0{password}".encode(), hashlib.sha256).digest()


def recently_verified(stored: str | None, password: str, username: str) -> bool:
    """True when these exact credentials passed a full check against *stored* moments ago."""
    if stored is None:
        return False
    hit = _cache.get(_cache_key(username, password))
    return hit is not None and hit[1] > time.monotonic() and hmac.compare_digest(hit[0], stored)


async def verify_password(stored: str | None, password: str, username: str) -> bool:
    """Constant-effort check: a missing account (``stored`` None) costs a full verification."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    key = _cache_key(username, password)
    hit = _cache.get(key)
    now = time.monotonic()
    if (
        hit is not None
        and stored is not None
        and hit[1] > now
        and hmac.compare_digest(hit[0], stored)
    ):
        return True
    # No hit, or one for another stored hash (the password was set again, even to the same
    # text): the full check decides — a cache must never refuse a correct password.
    ok = await asyncio.to_thread(_verify_sync, stored, password)
    if ok and stored is not None:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[key] = (stored, now + _CACHE_TTL)
    return ok


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_hash: str | None, secret: str) -> bool:
    candidate = hash_secret(secret)
    return hmac.compare_digest(stored_hash or "0" * 64, candidate) and stored_hash is not None
