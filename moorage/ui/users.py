"""Users (administrators) and one's own account: password and personal access tokens."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from ..auth.pat import PAT_SCOPES
from .pages import (
    PageError,
    PageGroup,
    Visit,
    not_found,
)
from .web import (
    see_other,
)


class UserPages(PageGroup):
    """Users and the account page."""

    nav = (("users", "/ui/users", "Users"),)
    admin_sections = frozenset({"users"})
    done = {
        "user-created": "User created.",
        "user-saved": "User updated.",
        "password-changed": "Password changed.",
        "token-deleted": "Token deleted.",
    }

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/ui/users", self.page(self.users), methods=get),
            Route("/ui/users", self.page(self.create_user), methods=post),
            Route("/ui/users/{username}", self.page(self.update_user), methods=post),
            Route("/ui/account", self.page(self.account), methods=get),
            Route("/ui/account/password", self.page(self.change_password), methods=post),
            Route("/ui/account/tokens", self.page(self.create_token), methods=post),
            Route("/ui/account/tokens/{token}/delete", self.page(self.delete_token), methods=post),
        ]

    # --- users ------------------------------------------------------------------------------

    async def users(self, visit: Visit) -> Response:
        page = await self._service(self.management.list_users(visit.caller, limit=200))
        return self.render(
            visit,
            "users.html",
            section="users",
            users=page.items,
            form={"username": "", "email": ""},
            error="",
        )

    async def create_user(self, visit: Visit) -> Response:
        f = visit.form
        await self._change(
            self.management.create_user(
                visit.caller,
                f.get("username", "").strip(),
                f.get("password", ""),
                email=f.get("email", "").strip() or None,
                is_admin=f.get("is_admin") == "true",
            )
        )
        return see_other("/ui/users?done=user-created")

    async def update_user(self, visit: Visit) -> Response:
        changes: dict[str, Any] = {
            key: visit.form[key] == "true" for key in ("disabled", "is_admin") if key in visit.form
        }
        username = visit.request.path_params["username"]
        await self._change(self.management.update_user(visit.caller, username, changes))
        return see_other("/ui/users?done=user-saved")

    async def account(self, visit: Visit) -> Response:
        me = await self._service(self.management.user(visit.caller, visit.principal.name))
        tokens = await self._service(
            self.management.list_tokens(visit.caller, visit.principal.name, limit=200)
        )
        return self.render(
            visit,
            "account.html",
            local=me.source == "local",
            source=me.source,
            tokens=tokens.items,
            scopes=PAT_SCOPES,
        )

    async def create_token(self, visit: Visit) -> Response:
        f = visit.form
        days = f.get("expires_days", "").strip()
        if days and not days.isdecimal():
            raise PageError(400, "Not saved", "Expiry is a whole number of days.")
        me = visit.principal.name
        token = await self._change(
            self.management.create_token(
                visit.caller,
                me,
                f.get("name", "").strip(),
                [s for s in PAT_SCOPES if f.get("scope:" + s) == "on"],
                int(days) if days else None,
            )
        )
        return self.render(
            visit,
            "secret.html",
            title=f"Personal access token {token.name} created",
            lost="delete the token and create another",
            username=me,
            secret=token.token,
            back="/ui/account",
            host=self.host(visit.request),
        )

    async def delete_token(self, visit: Visit) -> Response:
        raw = visit.request.path_params["token"]
        if not raw.isdecimal() or len(raw) > 18:
            raise not_found()
        await self._change(
            self.management.delete_token(visit.caller, visit.principal.name, int(raw))
        )
        return see_other("/ui/account?done=token-deleted")

    async def change_password(self, visit: Visit) -> Response:
        f = visit.form
        await self._change(
            self.management.change_password(
                visit.caller,
                visit.principal.name,
                f.get("current_password", ""),
                f.get("new_password", ""),
            )
        )
        # The account's other sessions and tokens end with the old password; this one stays.
        return see_other("/ui/account?done=password-changed")
