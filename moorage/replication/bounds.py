"""Bounds on what a peer registry may send us, and the helpers that enforce them.

A replication peer is as hostile as any network input: a manifest or a tag list may be huge or
nested a million levels deep, a header may be megabytes long. Responses are read with a byte cap
(never ``response.read()`` unbounded) and JSON nesting is checked before :func:`json.loads`, which
would otherwise recurse until Python's stack limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PeerProtocolError

if TYPE_CHECKING:
    import httpx

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on peer responses. Defaults fit every real registry we know of.

    ``max_manifest_bytes``: Distribution and Moorage refuse manifests over 4 MiB on push.
    ``max_json_bytes``: tag lists, catalogs, referrer indexes and token responses (one page).
    ``max_pages``/``max_entries``: paginated listings (tags, catalog).
    ``max_header_bytes``: each header we parse (WWW-Authenticate, Link, Location, Range).
    """

    max_manifest_bytes: int = 4 * MiB
    max_json_bytes: int = 16 * MiB
    max_json_depth: int = 64
    max_header_bytes: int = 8192
    max_pages: int = 10_000
    max_entries: int = 1_000_000
    max_index_children: int = 4096
    max_index_depth: int = 4


# A JSON string token, or one structural bracket. Strings are matched whole so that brackets
# inside them are not counted; the regex engine does the scan at C speed.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def json_depth(data: bytes) -> int:
    """Maximum nesting depth of arrays/objects in *data* (which need not be valid JSON)."""
    depth = best = 0
    for m in _TOKENS.finditer(data):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > best:
                best = depth
        elif c in (b"]", b"}"):
            depth -= 1
    return best


def load_json(data: bytes, limits: Limits, what: str) -> Any:
    """Parse *data* as UTF-8 JSON after checking its size and nesting; raise
    :class:`PeerProtocolError` naming *what* on any problem."""
    if len(data) > limits.max_json_bytes:
        raise PeerProtocolError(
            f"{what} is {len(data)} bytes; the limit is {limits.max_json_bytes}"
        )
    if json_depth(data) > limits.max_json_depth:
        raise PeerProtocolError(f"{what} is nested deeper than {limits.max_json_depth} levels")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PeerProtocolError(f"{what} is not valid JSON: {str(exc)[:200]}") from None


async def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """Read a streamed response body, failing as soon as it passes *limit* bytes."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise PeerProtocolError(f"{what} is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_raw():
        total += len(chunk)
        if total > limit:
            raise PeerProtocolError(f"{what} is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def header(response: httpx.Response, name: str, limits: Limits) -> str | None:
    """A response header we are going to parse, refused when longer than the bound."""
    value: str | None = response.headers.get(name)
    if value is not None and len(value) > limits.max_header_bytes:
        raise PeerProtocolError(f"{name} header is longer than {limits.max_header_bytes} bytes")
    return value
