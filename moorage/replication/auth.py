"""Registry authentication pieces that need no I/O: credentials, challenges, scopes, tokens.

A registry answers an unauthenticated request with ``401`` and ``WWW-Authenticate``: either
``Basic realm=...`` (send the credentials on every request) or the Docker token flow,
``Bearer realm="https://auth.example/token",service="registry.example",scope="repository:x:pull"``:
fetch a token from the realm for the scopes the request needs, then send it as
``Authorization: Bearer``. Tokens are cached per set of scopes and refreshed before they expire.
(distribution/docs/spec/auth/token.md; RFC 7235 for the header grammar.)
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN})")
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and a password (or a personal access token / robot secret)."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer", ...
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (several challenges per value allowed).

    Unknown syntax (token68 credentials, stray characters) ends the parse of that value rather
    than raising: we only need the Basic and Bearer challenges.
    """
    out: list[Challenge] = []
    for value in values:
        pos = 0
        while pos < len(value):
            m = _SCHEME_RE.match(value, pos)
            if m is None:
                break
            scheme = m.group(1).lower()
            pos = m.end()
            params: dict[str, str] = {}
            while True:
                p = _PARAM_RE.match(value, pos)
                if p is None:
                    break
                params[p.group(1).lower()] = _unquote(p.group(2))
                pos = p.end()
            out.append(Challenge(scheme, params))
    return out


def repository_scope(name: str, *actions: str) -> str:
    """``repository:NAME:a,b`` as the token spec spells a scope."""
    return f"repository:{name}:{','.join(actions)}"


CATALOG_SCOPE = "registry:catalog:*"


@dataclass(slots=True)
class Token:
    """A bearer token and when to stop using it (monotonic clock)."""

    value: str = field(repr=False)
    refresh_at: float

    @classmethod
    def from_response(cls, value: str, expires_in: object, now: float | None = None) -> Token:
        # The spec's default lifetime is 60 s when the server does not say.
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else 60.0
        )
        lifetime = max(lifetime, 1.0)
        # Refresh a little early so that a request started now does not carry an expired token.
        margin = min(30.0, lifetime * 0.2)
        return cls(value, (time.monotonic() if now is None else now) + lifetime - margin)

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.refresh_at
