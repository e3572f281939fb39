"""Users and the web UI's login sessions."""

from __future__ import annotations

from typing import Any

from ...auth import admin
from ...auth.passwords import hash_password
from ...auth.pat import looks_like_pat
from ...auth.service import ANONYMOUS, AuthFailed, LockedOut, Principal
from ...auth.sessions import Session
from ...db import management_queries as mq
from ..catalog import check_limit, decode_cursor, page_of
from ..errors import Conflict, Denied, Invalid, Missing
from ..models import (
    Page,
    Robot,
    User,
)
from .base import AdminService, Caller, _optional_text
from .credentials import _robot as robot_model


class UserAdmin(AdminService):
    # --- web sessions (the UI's login form) -------------------------------------------------

    async def login(
        self, username: str, password: str, client_addr: str, user_agent: str | None
    ) -> tuple[str, Session]:
        """Check a user's password (with the registry's lockout) and open a web session:
        (cookie value for SESSION_COOKIE, session). Robots and tokens cannot open sessions.
        Raises AuthFailed / LockedOut / Unavailable (moorage.auth.service). Audited."""

        anonymous = Caller(ANONYMOUS, client_addr, user_agent)
        try:
            if "+" in username or looks_like_pat(password):
                raise AuthFailed("web sessions are for users and their passwords")
            principal = await self.access.login(username, password, client_addr)
        except AuthFailed:
            await self._audit(
                anonymous,
                "login.failed",
                result="failure",
                details={"username": username[:200], "via": "web"},
            )
            raise
        assert principal.id is not None
        cookie, session = await self.sessions.create(principal.id, client_addr, user_agent)
        await self._audit(
            Caller(principal, client_addr, user_agent), "login", details={"via": "web"}
        )
        return cookie, session

    async def open_session(
        self, principal: Principal, client_addr: str, user_agent: str | None, via: str
    ) -> tuple[str, Session]:
        """A web session for a user a single sign-on provider vouched for (moorage/ui/oidc.py):
        (cookie value, session). Audited as a login *via* that provider."""
        if principal.kind != "user" or principal.id is None:
            raise AuthFailed("web sessions are for users")
        cookie, session = await self.sessions.create(principal.id, client_addr, user_agent)
        await self._audit(Caller(principal, client_addr, user_agent), "login", details={"via": via})
        return cookie, session

    async def login_refused(
        self, client_addr: str, user_agent: str | None, via: str, reason: str, who: str = ""
    ) -> None:
        """Audit a single sign-on that did not open a session."""
        await self._audit(
            Caller(ANONYMOUS, client_addr, user_agent),
            "login.failed",
            result="failure",
            details={"via": via, "reason": reason[:300], "username": who[:200]},
        )

    async def logout(self, c: Caller, cookie_value: str) -> None:
        if await self.sessions.delete(cookie_value):
            await self._audit(c, "logout", details={"via": "web"})

    # --- users ------------------------------------------------------------------------------

    async def list_users(
        self,
        c: Caller,
        query: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[User]:
        self._sysadmin_read(c)
        n = check_limit(limit)
        if query is not None and len(query) > 64:
            raise Invalid("q", "q is at most 64 characters")
        async with self.ctx.engine.connect() as conn:
            rows = await mq.list_users(conn, query or None, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.username for r in rows], n)
        return Page[User](items=[_user(r) for r in items], next_cursor=nxt)

    async def user(self, c: Caller, username: str) -> User:
        self._self_or_admin(c, username, write=False)
        async with self.ctx.engine.connect() as conn:
            row = await mq.user_full(conn, username)
        if row is None:
            raise Missing(f"no user {username}")
        return _user(row)

    async def create_user(
        self,
        c: Caller,
        username: str,
        password: str | None,
        *,
        email: str | None = None,
        display_name: str | None = None,
        is_admin: bool = False,
    ) -> User:
        self._sysadmin(c)
        email = _optional_text(email, "email", 255)
        display_name = _optional_text(display_name, "display_name", 255)
        if password is None:
            raise Invalid("password", "password is required")
        async with self._tx() as conn:
            await admin.create_user_in(
                conn, username, password, is_admin=is_admin, email=email, display_name=display_name
            )
            row = await mq.user_full(conn, username)
        await self._audit(c, "user.create", details={"user": username, "is_admin": is_admin})
        return _user(row)

    async def update_user(self, c: Caller, username: str, changes: dict[str, Any]) -> User:
        """Profile fields (email, display_name) by the user or an admin; is_admin, disabled and
        password (without the old one) by a system administrator only."""
        is_admin = self._self_or_admin(c, username, write=True)
        values: dict[str, Any] = {}
        for key in ("email", "display_name"):
            if key in changes:
                values[key] = _optional_text(changes[key], key, 255)
        for key in ("is_admin", "disabled"):
            if key in changes:
                if not is_admin:
                    raise Denied(f"only a system administrator may change {key}")
                if not isinstance(changes[key], bool):
                    raise Invalid(key, f"{key} is true or false")
                values[key] = changes[key]
        if "password" in changes:
            if not is_admin or username == c.principal.name:
                raise Denied("change your own password with the old one (POST .../password)")
            admin.validate_password(changes["password"])
            values["password_hash"] = hash_password(changes["password"])
        async with self._tx() as conn:
            row = await admin.user_in(conn, username)
            if row.id == c.principal.id and (
                values.get("is_admin") is False or values.get("disabled") is True
            ):
                raise Conflict(
                    "you cannot remove your own administrator rights or disable yourself"
                )
            if "password_hash" in values and row.source != "local":
                raise Conflict("a directory (LDAP) user's password is kept by the directory")
            if values:
                await mq.update_user(conn, row.id, values)
            details: dict[str, Any] = {}
            if "disabled" in values or "password_hash" in values:
                # Disabling ends everything; re-enabling must not revive the tokens issued
                # before the disabling; a reset password voids what the old one obtained,
                # personal access tokens included. Robots the account made are not its
                # credentials: they are listed for review (GET /users/{u}/robots).
                details["tokens_revoked"] = await mq.end_credentials(conn, row.id)
                details["robots_to_review"] = [
                    r.name for r in await mq.robots_to_review(conn, username)
                ][:100]
            full = await mq.user_full(conn, username)
        if values:
            fields = sorted(k if k != "password_hash" else "password" for k in values)
            await self._audit(
                c, "user.update", details={"user": username, "fields": fields, **details}
            )
        return _user(full)

    async def robots_to_review(self, c: Caller, username: str) -> Page[Robot]:
        """Robots the user created (in any namespace) and those of their personal namespace:
        after a recovery, what someone holding the account may have left behind. Each is
        revoked or deleted through its namespace's robot endpoints."""
        self._self_or_admin(c, username, write=False)
        async with self.ctx.engine.connect() as conn:
            await admin.user_in(conn, username)
            rows = await mq.robots_to_review(conn, username)
        return Page[Robot](items=[robot_model(r) for r in rows], next_cursor=None)

    async def change_password(self, c: Caller, username: str, old: str, new: str) -> None:
        """A user changes their own password, proving the old one; their other sessions and
        every token issued for the old password end (the session making the change stays)."""
        if self._self_or_admin(c, username, write=True) and c.principal.name != username:
            raise Denied("set another user's password with PATCH /users/{username}")
        if not isinstance(old, str) or not old:
            raise Invalid("old_password", "old_password is required")
        admin.validate_password(new, "new_password")
        async with self.ctx.engine.connect() as conn:
            row = await admin.user_in(conn, username)
        if row.source != "local":
            raise Conflict("a directory (LDAP) user's password is kept by the directory")
        # Checked as a login (counted, locked out): else a session or an api:write token
        # could guess the password here without limit.
        try:
            if looks_like_pat(old):
                raise AuthFailed("a token is not a password")
            await self.access.login(username, old, c.client_addr or "-")
        except AuthFailed:
            raise Invalid("old_password", "the old password is wrong") from None
        except LockedOut:
            raise Denied("too many failed attempts; try again later") from None
        async with self._tx() as conn:
            await mq.update_user(conn, row.id, {"password_hash": hash_password(new)})
            revoked = await mq.end_credentials(conn, row.id, keep_session=c.session_id)
        await self._audit(
            c,
            "user.update",
            details={"user": username, "fields": ["password"], "tokens_revoked": revoked},
        )

    async def delete_user(self, c: Caller, username: str) -> None:
        self._sysadmin(c)
        async with self._tx() as conn:
            row = await admin.user_in(conn, username)
            if row.id == c.principal.id:
                raise Conflict("you cannot delete your own account")
            if await mq.namespace_has_repositories(conn, username):
                raise Conflict(f"{username} still has repositories; delete them first")
            await mq.delete_user(conn, row.id, username)
        await self._audit(c, "user.delete", details={"user": username})


def _user(r: Any) -> User:
    return User(
        username=r.username,
        email=r.email,
        display_name=r.display_name,
        is_admin=bool(r.is_admin),
        source=r.source,
        disabled=bool(r.disabled),
        created_at=mq.aware(r.created_at),
        last_login_at=mq.aware(r.last_login_at),
    )
