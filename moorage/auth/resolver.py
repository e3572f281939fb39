"""From a request to a Principal: the one resolver the REST API and the web UI share.

Accepted, in this order: an ``Authorization`` header (Basic user/robot/personal access token,
Bearer JWT from /auth/token or Bearer personal access token), else the session cookie. A session
authenticates safe requests as they are; a state-changing request (anything but GET, HEAD,
OPTIONS) made with a session must also carry the session's CSRF token — the ``X-CSRF-Token``
header, or (UI forms) the ``csrf_token`` form field the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from .service import ANONYMOUS, AccessService, Principal
from .sessions import CSRF_HEADER, SESSION_COOKIE, Session, SessionStore, csrf_matches

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CSRFRejected(Exception):
    """A state-changing request made with a session cookie lacks the session's CSRF token."""


@dataclass(frozen=True, slots=True)
class Resolved:
    principal: Principal
    session: Session | None = None  # set when the session cookie authenticated the caller
    via: str = "anonymous"  # anonymous | session | basic | bearer


def client_addr(conn: HTTPConnection) -> str:
    return (conn.client.host if conn.client else "-") or "-"


class PrincipalResolver:
    def __init__(self, access: AccessService, sessions: SessionStore) -> None:
        self.access = access
        self.sessions = sessions

    async def resolve(self, conn: HTTPConnection) -> Resolved:
        """Who is calling. Raises AuthFailed / LockedOut / Unavailable (from AccessService) for
        bad credentials in the header; an unknown or expired cookie is simply anonymous."""
        cached = conn.scope.get("moorage.resolved")
        if isinstance(cached, Resolved):
            return cached
        header = conn.headers.get("authorization")
        if header:
            principal = await self.access.from_authorization(header, client_addr(conn))
            scheme = header.partition(" ")[0].lower()
            resolved = Resolved(principal, None, scheme)
        else:
            session = await self.sessions.lookup(conn.cookies.get(SESSION_COOKIE))
            if session is None:
                resolved = Resolved(ANONYMOUS)
            else:
                principal = Principal("user", session.username, session.user_id, session.is_admin)
                resolved = Resolved(principal, session, "session")
        conn.scope["moorage.resolved"] = resolved
        return resolved

    @staticmethod
    def check_csrf(
        resolved: Resolved, method: str, headers_token: str | None, form_token: str | None = None
    ) -> None:
        """Raise CSRFRejected when a session-authenticated state-changing request does not
        carry the session's token (header or form field). Other callers pass untouched:
        browsers never attach Authorization headers on their own."""
        if resolved.session is None or method.upper() in SAFE_METHODS:
            return
        if csrf_matches(resolved.session, headers_token) or csrf_matches(
            resolved.session, form_token
        ):
            return
        raise CSRFRejected("missing or wrong CSRF token")

    async def resolve_checked(
        self, conn: HTTPConnection, method: str, form_token: str | None = None
    ) -> Resolved:
        """``resolve`` then ``check_csrf`` (header ``X-CSRF-Token`` or *form_token*)."""
        resolved = await self.resolve(conn)
        self.check_csrf(resolved, method, conn.headers.get(CSRF_HEADER), form_token)
        return resolved
