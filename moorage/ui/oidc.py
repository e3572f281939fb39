"""Single sign-on with an OpenID Connect provider (``auth.oidc``): ``GET /auth/oidc/login``
sends the browser to the provider (authorization-code flow with PKCE, state, nonce);
``GET /auth/oidc/callback`` finishes: the code is exchanged, the ID token validated
(moorage/auth/oidc.py), the account found or created and its teams mapped from its groups
(moorage/auth/oidc_accounts.py), and a web session opened as after a password sign-in.

Between the two requests the login's secrets (state, nonce, PKCE verifier, where to return)
stay with the browser that started it, in a cookie sealed with AES-GCM under a key every node
derives from the shared token-signing key: the browser can neither read nor change it, any node
can finish the login, and the callback's ``state`` must match it (a login started elsewhere
cannot be completed in this browser). The cookie is HttpOnly, SameSite=Lax (it must come back
on the provider's top-level redirect), limited to /auth/oidc and ten minutes, and deleted when
used.

The start is a link, not a form: the UI's CSP ``form-action 'self'`` would stop a form whose
answer redirects to another origin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..auth.oidc import AuthorizationRequest, OIDCClient, OIDCError
from ..auth.oidc_accounts import SignInRefused, sign_in
from ..auth.sessions import set_session_cookie
from ..db import access_queries as aq
from .web import see_other

if TYPE_CHECKING:
    from .app import WebUI

log = logging.getLogger("moorage.ui")
COOKIE = "moorage_oidc"
COOKIE_PATH = "/auth/oidc"
MAX_AGE = 600
CALLBACK = "/auth/oidc/callback"
START = "/auth/oidc/login"
MAX_PARAM = 4096
_AD = b"moorage oidc login v1"


class OIDCLogin:
    def __init__(self, ui: WebUI, client: OIDCClient) -> None:
        self.ui = ui
        self.client = client
        self.config = ui.access.config.oidc
        self._aead: AESGCM | None = None

    def routes(self) -> list[Route]:
        return [
            Route(START, self.start, methods=["GET"]),
            Route(CALLBACK, self.callback, methods=["GET"]),
        ]

    @property
    def label(self) -> str:
        return self.config.display_name

    # --- the sealed cookie -----------------------------------------------------------------------

    async def _key(self) -> AESGCM:
        if self._aead is None:
            async with self.ui.ctx.engine.connect() as conn:
                keys = await aq.signing_keys_all(conn)
            if not keys:
                raise RuntimeError("no signing key yet")
            material = keys[0].private_pem.encode()
            self._aead = AESGCM(hashlib.sha256(b"moorage-ui-oidc-login\0" + material).digest())
        return self._aead

    async def _seal(self, data: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        sealed = (await self._key()).encrypt(nonce, json.dumps(data).encode(), _AD)
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    async def _open(self, value: str | None) -> dict[str, Any] | None:
        if not value or len(value) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii"))
            data = json.loads((await self._key()).decrypt(raw[:12], raw[12:], _AD))
        except (InvalidTag, ValueError, UnicodeError):
            return None
        return data if isinstance(data, dict) else None

    # --- the two requests ------------------------------------------------------------------------

    def _redirect_uri(self, request: Request) -> str:
        if self.config.redirect_uri:
            return self.config.redirect_uri
        base = self.ui.ctx.config.http.base_url or f"{request.url.scheme}://{request.url.netloc}"
        return base.rstrip("/") + CALLBACK

    async def start(self, request: Request) -> Response:
        from .app import safe_next

        try:
            req = await self.client.begin(self._redirect_uri(request))
        except OIDCError as exc:
            log.warning("OpenID sign-in cannot start: %s", exc.message)
            return await self._refused(request, "The sign-in provider cannot be reached.", 503)
        sealed = await self._seal(
            {
                "state": req.state,
                "nonce": req.nonce,
                "verifier": req.code_verifier,
                "redirect": req.redirect_uri,
                "next": safe_next(request.query_params.get("next")),
                "at": req.created_at,
            }
        )
        response = RedirectResponse(req.url, 303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE,
            sealed,
            max_age=MAX_AGE,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        client = (request.client.host if request.client else "-") or "-"
        agent = request.headers.get("user-agent", "")[:512]
        data = await self._open(request.cookies.get(COOKIE))
        if data is None or time.time() - float(data.get("at", 0)) > MAX_AGE:
            return await self._refused(
                request, "This sign-in expired or was started in another browser. Try again.", 400
            )
        params = {k: v[:MAX_PARAM] for k, v in request.query_params.items() if len(k) <= 64}
        pending = AuthorizationRequest(
            url="",
            state=str(data.get("state", "")),
            nonce=str(data.get("nonce", "")),
            code_verifier=str(data.get("verifier", "")),
            redirect_uri=str(data.get("redirect", "")),
            created_at=float(data.get("at", 0)),
        )
        management = self.ui.management
        try:
            identity = await self.client.complete(pending, params, max_age=MAX_AGE)
        except OIDCError as exc:
            await management.login_refused(client, agent, "oidc", exc.message)
            return await self._refused(request, f"Sign-in failed: {exc.message}.", 401)
        try:
            principal = await sign_in(self.ui.access, self.config, identity)
        except SignInRefused as exc:
            await management.login_refused(client, agent, "oidc", str(exc), identity.username)
            return await self._refused(request, f"Sign-in refused: {exc}.", 403)
        cookie, _session = await management.open_session(principal, client, agent, "oidc")
        response = see_other(str(data.get("next") or "/"))
        secure = request.url.scheme == "https"
        set_session_cookie(response, cookie, secure, int(self.ui.sessions.lifetime.total_seconds()))
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response

    async def _refused(self, request: Request, message: str, status: int) -> Response:
        response = await self.ui.login_page(request, message, "", status)
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response
