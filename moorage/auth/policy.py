"""Authorization decisions for the registry protocol: the one place that says who may do what.

Handlers ask ``await policy.check(request, repository, actions)`` before touching a repository,
and ``await policy.allowed(...)`` where a refusal must degrade quietly (a cross-repository mount
from a source the caller cannot read falls back to a normal upload, revealing nothing).

:class:`RBACPolicy` is the real one; :class:`OpenAccess` allows everything and exists only for
``moorage serve --no-auth`` (local development and benchmarks), which says so loudly in the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request

from ..db.catalog_queries import ReadScope
from ..proxies import external_origin
from ..registry.errors import RegistryError
from .config import AuthConfig
from .scopes import DELETE, PULL, PUSH
from .service import AccessService, AuthFailed, LockedOut, Principal
from .service import Unavailable as AuthUnavailable

__all__ = ["DELETE", "PULL", "PUSH", "AccessPolicy", "OpenAccess", "RBACPolicy"]


class AccessPolicy(Protocol):
    async def allowed(
        self, request: Request, repository: str, actions: tuple[str, ...]
    ) -> bool: ...

    async def check(self, request: Request, repository: str, actions: tuple[str, ...]) -> None:
        """Raise a RegistryError (UNAUTHORIZED/DENIED) when not allowed."""

    async def check_base(self, request: Request) -> None: ...

    async def check_catalog(self, request: Request) -> None: ...

    async def can_list(self, request: Request, repository: str) -> bool: ...

    async def list_scope(self, request: Request) -> ReadScope | None:
        """What the caller may list in /v2/_catalog (None: everything)."""


class OpenAccess:
    """Everything allowed: the registry before access control is configured."""

    async def allowed(self, request: Request, repository: str, actions: tuple[str, ...]) -> bool:
        return True

    async def check(self, request: Request, repository: str, actions: tuple[str, ...]) -> None:
        return None

    async def check_base(self, request: Request) -> None:
        return None

    async def check_catalog(self, request: Request) -> None:
        return None

    async def can_list(self, request: Request, repository: str) -> bool:
        return True

    async def list_scope(self, request: Request) -> ReadScope | None:
        return None


class RBACPolicy:
    """Access control for /v2: identities, roles, robot scopes and bearer tokens.

    Anonymous callers refused an action get 401 with a Bearer challenge naming the scope they
    need (what docker, podman, skopeo and helm expect); authenticated callers get 403.
    """

    def __init__(
        self,
        access: AccessService,
        config: AuthConfig,
        on_login_failure: Callable[[Request], Awaitable[None]] | None = None,
    ) -> None:
        self.access = access
        self.config = config
        self.on_login_failure = on_login_failure

    async def principal(self, request: Request) -> Principal:
        cached = request.scope.get("moorage.principal")
        if isinstance(cached, Principal):
            return cached
        client = (request.client.host if request.client else "-") or "-"
        try:
            principal = await self.access.from_authorization(
                request.headers.get("authorization"), client
            )
        except AuthFailed:
            if self.on_login_failure is not None:
                await self.on_login_failure(request)
            raise RegistryError(
                "UNAUTHORIZED",
                "authentication failed",
                headers={"WWW-Authenticate": self.challenge(request, None)},
            ) from None
        except LockedOut as exc:
            raise RegistryError(
                "TOOMANYREQUESTS", str(exc), headers={"Retry-After": str(exc.retry_after)}
            ) from None
        except AuthUnavailable:
            raise RegistryError(
                "UNAVAILABLE", "the directory service is unavailable; retry", status=503
            ) from None
        request.scope["moorage.principal"] = principal
        return principal

    def challenge(self, request: Request, scope: str | None) -> str:
        # auth.realm, else this server's /auth/token at its external URL (http.base_url, or
        # as a trusted proxy forwarded it; a malformed Host never reaches the header).
        realm = self.config.realm or f"{external_origin(request.scope)}/auth/token"
        value = f'Bearer realm="{realm}",service="{self.config.token.service}"'
        if scope:
            value += f',scope="{scope}"'
        return value

    async def allowed(self, request: Request, repository: str, actions: tuple[str, ...]) -> bool:
        principal = await self.principal(request)
        return set(actions) <= await self.access.allowed_actions(principal, repository)

    async def check(self, request: Request, repository: str, actions: tuple[str, ...]) -> None:
        principal = await self.principal(request)
        if set(actions) <= await self.access.allowed_actions(principal, repository):
            return
        self._refuse(request, principal, f"repository:{repository}:{','.join(actions)}")

    async def check_base(self, request: Request) -> None:
        """GET /v2/: anonymous callers are challenged so that clients log in."""
        principal = await self.principal(request)
        if principal.anonymous:
            self._refuse(request, principal, None)

    def _refuse(self, request: Request, principal: Principal, scope: str | None) -> None:
        if principal.anonymous:
            raise RegistryError(
                "UNAUTHORIZED",
                "authentication required",
                headers={"WWW-Authenticate": self.challenge(request, scope)},
            )
        raise RegistryError("DENIED", "requested access to the resource is denied")

    async def check_catalog(self, request: Request) -> None:
        principal = await self.principal(request)
        if principal.token_scopes is not None:
            if any(s.type == "registry" and s.name == "catalog" for s in principal.token_scopes):
                return
            self._refuse(request, principal, "registry:catalog:*")
        if principal.anonymous and not self.config.anonymous_access:
            self._refuse(request, principal, "registry:catalog:*")

    async def can_list(self, request: Request, repository: str) -> bool:
        principal = await self.principal(request)
        return PULL in await self.access.role_actions(principal, repository)

    async def list_scope(self, request: Request) -> ReadScope | None:
        """The caller's roles (as ``can_list``: a bearer token's registry:catalog:* lets the
        catalog be listed, its repository scopes do not narrow what the roles may read)."""
        principal = await self.principal(request)
        return await self.access.read_scope(principal, use_token=False)
