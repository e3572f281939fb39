"""Authorization decisions for the registry protocol: the one place that says who may do what.

Handlers ask ``await policy.check(request, repository, actions)`` before touching a repository,
and ``await policy.allowed(...)`` where a refusal must degrade quietly (a cross-repository mount
from a source the caller cannot read falls back to a normal upload, revealing nothing).

Identities, roles and tokens arrive with the access-control work; until then the registry runs
open (every request is anonymous and allowed), which `moorage serve` announces in its log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request

PULL = "pull"
PUSH = "push"
DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    kind: str = "anonymous"  # anonymous | user | robot


ANONYMOUS = Principal("anonymous")


class AccessPolicy(Protocol):
    async def allowed(
        self, request: Request, repository: str, actions: tuple[str, ...]
    ) -> bool: ...

    async def check(self, request: Request, repository: str, actions: tuple[str, ...]) -> None:
        """Raise a RegistryError (UNAUTHORIZED/DENIED) when not allowed."""

    async def check_catalog(self, request: Request) -> None: ...

    async def can_list(self, request: Request, repository: str) -> bool: ...


class OpenAccess:
    """Everything allowed: the registry before access control is configured."""

    async def allowed(self, request: Request, repository: str, actions: tuple[str, ...]) -> bool:
        return True

    async def check(self, request: Request, repository: str, actions: tuple[str, ...]) -> None:
        return None

    async def check_catalog(self, request: Request) -> None:
        return None

    async def can_list(self, request: Request, repository: str) -> bool:
        return True
