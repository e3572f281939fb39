"""Repository name and tag grammar from the OCI distribution-spec."""

from __future__ import annotations

import re

# <name> path components: lowercase alphanumerics separated by '.', '_', '__' or one or more '-'.
NAME_RE = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z"
)
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")

# Distribution limits the full name to 255 characters (so that hostname + name fits references).
MAX_NAME_LENGTH = 255


def valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LENGTH and NAME_RE.match(name) is not None


def valid_tag(tag: str) -> bool:
    return TAG_RE.match(tag) is not None


def namespace_of(name: str) -> str:
    """The first path component (the organization or user that owns the repository)."""
    return name.split("/", 1)[0] if "/" in name else ""
