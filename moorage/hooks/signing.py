"""Webhook signatures: ``X-Moorage-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

The timestamp is inside the signed bytes, so a receiver that checks it against its clock (the
replay window) refuses a captured delivery sent again later; the body is signed byte for byte, so
a receiver must verify the raw body before parsing it. While a secret is being rotated the sender
signs with both (two ``v1=`` entries) and a receiver accepts either of its secrets.

Receivers in other languages need only HMAC-SHA256 and a constant-time compare; :func:`verify`
is the reference (and what the test receiver uses).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence

HEADER = "X-Moorage-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300  # seconds a delivery stays acceptable (both directions: clock skew)
MAX_HEADER = 2048
MAX_SIGNATURES = 8


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale, or matches none of the secrets."""


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def compute(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    return hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(
    secrets: str | bytes | Sequence[str | bytes], body: bytes, timestamp: int | None = None
) -> str:
    """The header value for *body*: one ``v1=`` per secret (several while rotating)."""
    keys: Sequence[str | bytes] = [secrets] if isinstance(secrets, (str, bytes)) else secrets
    if not keys or len(keys) > MAX_SIGNATURES:
        raise ValueError(f"sign with 1 to {MAX_SIGNATURES} secrets")
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={ts}", *(f"{SCHEME}={compute(k, ts, body)}" for k in keys)])


def parse(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header value; other schemes are ignored (so a later
    ``v2`` can be added beside ``v1``)."""
    if not header or len(header) > MAX_HEADER:
        raise SignatureError("signature header missing or too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if key == "t":
            if (
                timestamp is not None
                or not (value.isascii() and value.isdecimal())
                or len(value) > 12
            ):
                raise SignatureError("malformed signature timestamp")
            timestamp = int(value)
        elif key == SCHEME:
            if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
                raise SignatureError("malformed v1 signature")
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("signature header needs t= and v1=")
    if len(signatures) > MAX_SIGNATURES:
        raise SignatureError("too many signatures")
    return timestamp, signatures


def verify(
    header: str | None,
    body: bytes,
    secrets: str | bytes | Iterable[str | bytes],
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a delivery; returns its timestamp, raises :class:`SignatureError` otherwise.

    Accepts when some ``v1`` equals the HMAC under some secret (constant-time comparison) and
    the timestamp is within *tolerance* seconds of *now*."""
    if header is None:
        raise SignatureError(f"no {HEADER} header")
    timestamp, signatures = parse(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("signature timestamp outside the replay window")
    keys = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
    if not keys:
        raise SignatureError("no secret to verify with")
    matched = False
    for key in keys:
        expected = compute(key, timestamp, body).encode()
        for sig in signatures:
            # Every pair is compared (no early exit): the time taken says nothing about which.
            matched |= hmac.compare_digest(expected, sig.encode())
    if not matched:
        raise SignatureError("signature does not match")
    return timestamp
