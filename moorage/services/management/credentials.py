"""Robot accounts and personal access tokens."""

from __future__ import annotations

from typing import Any

from ...auth import admin
from ...auth.passwords import hash_secret, new_secret
from ...auth.pat import PAT_SCOPES, expiry
from ...db import access_queries as aq
from ...db import management_queries as mq
from ...db import session_queries as sq
from ..catalog import check_limit, decode_cursor, page_of
from ..errors import Conflict, Denied, Invalid, Missing
from ..models import (
    AccessToken,
    AccessTokenWithSecret,
    Page,
    Robot,
    RobotAccess,
    RobotWithSecret,
)
from .base import AdminService, Caller, _text


class CredentialAdmin(AdminService):
    # --- robots -----------------------------------------------------------------------------

    async def _namespace_admin(self, c: Caller, namespace: str) -> None:
        """Robots of a namespace are managed by its organization's admins, or by the user
        whose personal namespace it is (and system administrators)."""
        admin.validate_username(namespace, "namespace")
        p = c.principal
        if p.token_scopes is not None or not p.may_use_api(write=True) or p.kind != "user":
            raise Denied("this credential may not manage robot accounts")
        if p.is_admin or p.name == namespace:
            return
        # One answer whether the namespace is another user's, an organization the caller
        # does not administer, or nothing at all: which organizations exist is not told.
        refused = Denied(
            f"robots of {namespace} are managed by its owner or organization admins only"
        )
        async with self.ctx.engine.connect() as conn:
            is_org = await aq.org_by_name(conn, namespace) is not None
        if not is_org:
            raise refused
        try:
            await self._org_admin(c, namespace)
        except Denied:
            raise refused from None

    @staticmethod
    def _no_token_minting(c: Caller) -> None:
        """A robot secret is a credential: like tokens, personal access tokens cannot mint
        them (else a narrow or later revoked token leaves a wider robot behind)."""
        if c.principal.pat_scopes is not None:
            raise Denied("personal access tokens cannot create robot secrets; log in instead")

    async def list_robots(
        self, c: Caller, namespace: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[Robot]:
        n = check_limit(limit)
        await self._namespace_admin(c, namespace)
        async with self.ctx.engine.connect() as conn:
            rows = await mq.list_robots(conn, namespace, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[Robot](items=[_robot(r) for r in items], next_cursor=nxt)

    async def all_robots(
        self,
        c: Caller,
        namespace: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Robot]:
        """Every robot account, or those of one namespace (system administrators)."""
        n = check_limit(limit)
        self._sysadmin_read(c)
        if namespace is not None:
            admin.validate_username(namespace, "namespace")
        async with self.ctx.engine.connect() as conn:
            rows = await mq.list_robots(conn, namespace, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[Robot](items=[_robot(r) for r in items], next_cursor=nxt)

    async def robot(self, c: Caller, namespace: str, name: str) -> Robot:
        await self._namespace_admin(c, namespace)
        async with self.ctx.engine.connect() as conn:
            row = await mq.robot_full(conn, f"{namespace}+{name}")
        if row is None:
            raise Missing(f"no robot {namespace}+{name}")
        return _robot(row)

    async def create_robot(
        self,
        c: Caller,
        namespace: str,
        name: str,
        access: Any,
        *,
        description: str = "",
        expires_in_days: int | None = None,
    ) -> RobotWithSecret:
        await self._namespace_admin(c, namespace)
        self._no_token_minting(c)
        description = _text(description, "description")
        if expires_in_days is not None and not (
            isinstance(expires_in_days, int) and 1 <= expires_in_days <= 3650
        ):
            raise Invalid("expires_in_days", "expires_in_days is 1 to 3650")
        async with self._tx() as conn:
            full, secret = await admin.create_robot_in(
                conn,
                namespace,
                name,
                access,
                expires_in_days,
                c.principal.name,
                description,
            )
            row = await mq.robot_full(conn, full)
        await self._audit(
            c,
            "robot.create",
            details={"robot": full, "access": row.access, "expires_in_days": expires_in_days},
        )
        return RobotWithSecret(**_robot(row).model_dump(), secret=secret)

    async def update_robot(
        self, c: Caller, namespace: str, name: str, changes: dict[str, Any]
    ) -> Robot:
        await self._namespace_admin(c, namespace)
        values: dict[str, Any] = {}
        if "description" in changes:
            values["description"] = _text(changes["description"], "description")
        if "access" in changes:
            values["access"] = admin.validate_robot_access(namespace, changes["access"])
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            if values:
                await mq.update_robot(conn, row.id, values)
            row = await mq.robot_full(conn, row.name)
        if values:
            await self._audit(
                c, "robot.update", details={"robot": row.name, "fields": sorted(values)}
            )
        return _robot(row)

    @staticmethod
    async def _robot_row(conn: Any, namespace: str, name: str) -> Any:
        row = await mq.robot_full(conn, f"{namespace}+{name}")
        if row is None:
            raise Missing(f"no robot {namespace}+{name}")
        return row

    async def regenerate_robot_secret(
        self, c: Caller, namespace: str, name: str
    ) -> RobotWithSecret:
        """A new secret (shown once); the old one stops working at once. Also un-revokes."""
        await self._namespace_admin(c, namespace)
        self._no_token_minting(c)
        secret = new_secret()
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            await mq.new_robot_secret(conn, row.id, hash_secret(secret))
            row = await mq.robot_full(conn, row.name)
        await self._audit(c, "robot.regenerate", details={"robot": row.name})
        return RobotWithSecret(**_robot(row).model_dump(), secret=secret)

    async def revoke_robot(self, c: Caller, namespace: str, name: str) -> None:
        await self._namespace_admin(c, namespace)
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            await aq.revoke_robot(conn, row.name)
        await self._audit(c, "robot.revoke", details={"robot": row.name})

    async def delete_robot(self, c: Caller, namespace: str, name: str) -> None:
        await self._namespace_admin(c, namespace)
        async with self._tx() as conn:
            row = await self._robot_row(conn, namespace, name)
            await mq.delete_robot(conn, row.id)
        await self._audit(c, "robot.delete", details={"robot": row.name})

    # --- personal access tokens -------------------------------------------------------------

    def _token_owner(self, c: Caller, username: str, write: bool) -> None:
        p = c.principal
        if p.pat_scopes is not None and write:
            raise Denied("personal access tokens cannot manage personal access tokens")
        self._self_or_admin(c, username, write)

    async def list_tokens(
        self, c: Caller, username: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[AccessToken]:
        n = check_limit(limit)
        self._token_owner(c, username, write=False)
        after = decode_cursor(cursor)
        if after is not None and not after.isdecimal():
            raise Invalid("cursor", "cursor is not one this server issued")
        async with self.ctx.engine.connect() as conn:
            uid = (await admin.user_in(conn, username)).id
            rows = await sq.user_tokens(conn, uid, int(after) if after else None, n + 1)
        items, nxt = page_of(rows, [str(r.id) for r in rows], n)
        return Page[AccessToken](items=[_token(r) for r in items], next_cursor=nxt)

    async def create_token(
        self,
        c: Caller,
        username: str,
        name: str,
        scopes: list[str] | None = None,
        expires_in_days: int | None = None,
    ) -> AccessTokenWithSecret:
        """A new token for the user themselves (administrators cannot mint tokens for others:
        a token acts as its owner)."""
        self._token_owner(c, username, write=True)
        if c.principal.name != username:
            raise Denied("tokens are created by their owner only")
        admin.validate_username(name, "name")
        scopes = list(PAT_SCOPES) if scopes is None else scopes
        if not isinstance(scopes, list) or not scopes or any(s not in PAT_SCOPES for s in scopes):
            raise Invalid("scopes", f"scopes is a non-empty list of {', '.join(PAT_SCOPES)}")
        if expires_in_days is not None and not (
            isinstance(expires_in_days, int) and 1 <= expires_in_days <= 3650
        ):
            raise Invalid("expires_in_days", "expires_in_days is 1 to 3650")
        async with self.ctx.engine.connect() as conn:
            uid = (await admin.user_in(conn, username)).id
            if await sq.token_name_taken(conn, uid, name):
                raise Conflict(f"you already have a token named {name}")
        token, row = await self.access.pats.create(
            uid, name, sorted(set(scopes)), expiry(expires_in_days)
        )
        await self._audit(
            c,
            "token.create",
            details={"user": username, "token": name, "prefix": row.prefix, "scopes": row.scopes},
        )
        return AccessTokenWithSecret(**_token(row).model_dump(), token=token)

    async def delete_token(self, c: Caller, username: str, token_id: int) -> None:
        """Revoke and remove a token (the owner or a system administrator)."""
        self._token_owner(c, username, write=True)
        async with self._tx() as conn:
            uid = (await admin.user_in(conn, username)).id
            row = await sq.token_by_id(conn, uid, token_id)
            if row is None:
                raise Missing(f"no token {token_id} of {username}")
            await sq.delete_token(conn, uid, token_id)
        await self._audit(
            c, "token.delete", details={"user": username, "token": row.name, "prefix": row.prefix}
        )


def _robot(r: Any) -> Robot:
    access = []
    for entry in r.access or []:
        acts = [a for a in entry.get("actions", []) if a in admin.ROBOT_ACTIONS]
        access.append(
            RobotAccess(
                repository=entry.get("repository"),
                organization=entry.get("organization"),
                actions=acts,
            )
        )
    return Robot(
        name=r.name,
        namespace=r.namespace,
        description=r.description or "",
        access=access,
        expires_at=mq.aware(r.expires_at),
        revoked_at=mq.aware(r.revoked_at),
        created_by=r.created_by,
        created_at=mq.aware(r.created_at),
        last_used_at=mq.aware(r.last_used_at),
    )


def _token(r: sq.TokenRow) -> AccessToken:
    return AccessToken(
        id=r.id,
        name=r.name,
        prefix=r.prefix,
        scopes=r.scopes,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        created_at=r.created_at,
        last_used_at=r.last_used_at,
    )
