"""Content digests (``algorithm:hex``) as the OCI image-spec defines them.

Pure functions: parsing never touches I/O, and a parsed :class:`Digest` is always safe to use in a
storage path (the hex part is validated to be lowercase hex of the algorithm's exact length).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Registered algorithms and the length of their hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")


class InvalidDigest(ValueError):
    """The string is not a digest this registry accepts."""


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and validate; raise :class:`InvalidDigest` with a clear reason."""
        if len(value) > 200:
            raise InvalidDigest("digest too long")
        m = _DIGEST_RE.match(value)
        if m is None:
            raise InvalidDigest(f"malformed digest {value[:80]!r}")
        algorithm, hex_ = m.group(1), m.group(2)
        expected = ALGORITHMS.get(algorithm)
        if expected is None:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
        if len(hex_) != expected or not all(c in "0123456789abcdef" for c in hex_):
            raise InvalidDigest(f"{algorithm} digest must be {expected} lowercase hex characters")
        return cls(algorithm, hex_)

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def is_digest(value: str) -> bool:
    """True when *value* looks like a digest reference (``alg:...``) rather than a tag."""
    return ":" in value
