"""LDAP authentication: check a username and password against a directory, and read its groups.

``LDAPAuthenticator.authenticate(username, password)`` does what a careful directory client does:

1. An empty password (or username) is refused before anything is sent. A simple bind with a DN
   and no password is an *unauthenticated* bind (RFC 4513 §5.1.2): many servers answer it with
   success, as anonymous, so "the bind succeeded" would mean nothing.
2. Bind as the service account (``bind_dn``; anonymous if unset) and search ``user_base_dn`` with
   ``user_filter``, the username escaped per RFC 4515 (``*``, ``(``, ``)``, ``\\`` and NUL become
   ``\\2a``, ``\\28``, ``\\29``, ``\\5c``, ``\\00``), so no username can widen or restructure the
   filter. Exactly one entry must match: none or several is a refusal.
3. Bind, on a connection of its own, as that entry's DN with the password: that is the password
   check. Unknown and ambiguous users get a bind of the same cost against a DN that cannot exist,
   so the three failures look alike from outside (same answer, similar time).
4. Search ``group_base_dn`` (if set) with ``group_filter`` as the service account; ``{user_dn}``
   and ``{username}`` (the directory's own spelling of the username) are escaped the same way.
   Group names (``group_name_attribute``, else the DN) map to Moorage teams via
   ``group_team_map``.

Outcomes: an ``LDAPIdentity``, or ``None`` for bad credentials, unknown or ambiguous user — never
saying which. When the directory cannot be used (unreachable, timeout, TLS failure or
certificate mismatch, service account refused, search base missing, server busy) it raises
``LDAPUnavailable``, so the caller answers 503 rather than "wrong password" — and never
synchronizes team memberships from a half-answered group search.

Transport: ``ldaps://`` (TLS from the first byte) or ``ldap://`` with ``start_tls`` (the StartTLS
extended operation before any bind; a server that refuses it is an error, never a fallback to
clear text). Certificates are verified by the standard library (``ssl.create_default_context``)
against ``ca_file`` (or the system store) and the host name in ``url``, unless ``verify_tls`` is
false. The CA file is read when the authenticator is built: restart after changing it.
Referrals are never followed (they would carry the service account's credentials elsewhere).

ldap3 is synchronous; every authentication runs in a worker thread (``asyncio.to_thread``) with
its own connections, each network operation bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from .ldap_config import PLACEHOLDER_RE, LDAPConfig, parse_ldap_url  # settings: apart from ldap3

log = logging.getLogger("moorage.auth.ldap")

# Longest username or password sent to the directory; longer ones are refused outright.
MAX_USERNAME_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024

# Bind result codes that mean "these credentials are refused" (RFC 4511 §A.1): wrong password,
# no such DN (the entry vanished since the search), account locked/disabled/expired (servers use
# 49, 53 or 19 for those), or this account may not bind. Any other bind result means the
# directory is not usable (busy, unavailable, confidentiality required...).
_REFUSED_BIND_CODES = frozenset({19, 32, 48, 49, 50, 53})
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4


def escape_filter_value(value: str) -> str:
    """Escape an assertion value for an LDAP search filter (RFC 4515 §3).

    Every character that has a meaning in the filter grammar — ``*`` (wildcard), ``(`` and ``)``
    (structure), ``\\`` (escape) and NUL — becomes ``\\XX``; the rest is sent as UTF-8.
    """
    return "".join(f"\\{ord(ch):02x}" if ch in "\\*()\x00" else ch for ch in value)


def render_filter(template: str, *, username: str, user_dn: str = "") -> str:
    """Substitute the escaped values for ``{username}`` / ``{user_dn}`` in one pass."""
    values = {"username": escape_filter_value(username), "user_dn": escape_filter_value(user_dn)}
    return PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def _normalize_dn(dn: str) -> str | None:
    try:
        rdns = parse_dn(dn, escape=False, strip=True)
    except LDAPException:
        return None
    return ",".join(f"{attr.strip().lower()}={value.strip().lower()}" for attr, value, _ in rdns)


class LDAPUnavailable(Exception):
    """The directory could not be used to decide (answer 503, not 401)."""


# Not frozen, so that it satisfies auth.service.DirectoryIdentity (a Protocol of plain attributes).
@dataclass(slots=True)
class LDAPIdentity:
    username: str  # as the directory spells it (username_attribute)
    dn: str
    email: str | None
    display_name: str | None
    groups: list[str] = field(default_factory=list)  # group names (or DNs), sorted
    teams: list[tuple[str, str]] = field(default_factory=list)  # (org, team), sorted


def _first(attrs: Mapping[str, list[bytes]], name: str) -> str | None:
    """First value of *name* (case-insensitive), decoded as UTF-8; None when absent."""
    wanted = name.lower()
    for key, values in attrs.items():
        if key.lower() == wanted or key.lower().startswith(wanted + ";"):
            for raw in values:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                if text:
                    return text
    return None


def _values(attrs: Mapping[str, list[bytes]], name: str) -> list[str]:
    wanted = name.lower()
    out: list[str] = []
    for key, values in attrs.items():
        if key.lower() == wanted:
            out.extend(
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
            )
    return out


class _StdlibTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 is untyped
    """TLS for ldap3 done by the standard library: chain *and* host name checked by OpenSSL.

    ldap3's own Tls verifies nothing unless told (CERT_NONE by default) and checks host names
    itself with ``ssl.match_hostname`` — removed in Python 3.12, where ldap3 falls back to a
    2015 backport that rejects IP addresses. Here the context (``create_default_context``:
    CERT_REQUIRED, check_hostname, TLS >= 1.2) and ``server_hostname`` do both, the same way on
    every Python, for LDAPS and for StartTLS (ldap3 calls ``wrap_socket`` in both cases).
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(validate=context.verify_mode)
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        # On a failed handshake the SSLSocket closes itself (and the socket it took over).
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._server_hostname,
        )


class LDAPAuthenticator:
    def __init__(self, config: LDAPConfig) -> None:
        self.config = config
        self._scheme, self._host, self._port = parse_ldap_url(config.url)
        self._tls: _StdlibTls | None = None
        if self._scheme == "ldaps" or config.start_tls:
            if config.ca_file and not os.path.isfile(config.ca_file):
                raise ValueError(f"auth.ldap.ca_file {config.ca_file!r} does not exist")
            context = ssl.create_default_context(cafile=config.ca_file)
            if not config.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = _StdlibTls(context, self._host)
        elif config.enabled:
            log.warning(
                "auth.ldap: %s without start_tls: passwords are sent to the directory in clear",
                config.url,
            )
        self._team_by_name: dict[str, tuple[str, str]] = {}
        self._team_by_dn: dict[str, tuple[str, str]] = {}
        for group, target in config.group_team_map.items():
            org, team = target.split("/", 1)
            dn = _normalize_dn(group) if "=" in group else None
            if dn:
                self._team_by_dn[dn] = (org, team)
            else:
                self._team_by_name[group.strip().casefold()] = (org, team)

    async def authenticate(self, username: str, password: str) -> LDAPIdentity | None:
        """The directory identity for these credentials; None when they are refused.

        Raises LDAPUnavailable when the directory cannot be reached or used.
        """
        if not username or not password:
            return None  # an empty password would be an unauthenticated (anonymous) bind
        if len(username) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            return None
        return await asyncio.to_thread(self._authenticate_sync, username, password)

    # --- synchronous part (runs in a worker thread) -------------------------------------------

    def _server(self) -> ldap3.Server:
        return ldap3.Server(
            self._host,
            port=self._port,
            use_ssl=self._scheme == "ldaps",
            tls=self._tls,
            get_info=ldap3.NONE,
            connect_timeout=self.config.timeout,
        )

    def _open(self, user: str | None, password: str | None) -> tuple[ldap3.Connection, int]:
        """Connect (+ StartTLS) and bind; return the connection and the bind result code."""
        conn = ldap3.Connection(
            self._server(),
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SYNC,
            read_only=True,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: it must be an int.
            receive_timeout=max(1, math.ceil(self.config.timeout)),
            raise_exceptions=False,
            auto_referrals=False,
            auto_escape=False,  # values are escaped here, exactly once
        )
        try:
            conn.open()
            if self.config.start_tls and self._scheme == "ldap":
                # ldap3 may return False without raising; never continue in clear text.
                if not conn.start_tls() or not conn.tls_started:
                    raise LDAPUnavailable(
                        f"StartTLS with {self.config.url} failed: {conn.last_error}"
                    )
            conn.bind()
        except BaseException:
            self._close(conn)
            raise
        return conn, int(conn.result.get("result", -1))

    @staticmethod
    def _close(conn: ldap3.Connection) -> None:
        try:
            conn.unbind()
        except Exception:  # closing is best effort
            pass
        # After a failed open, StartTLS or receive, ldap3 can leave the socket open.
        sock = getattr(conn, "socket", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _authenticate_sync(self, username: str, password: str) -> LDAPIdentity | None:
        try:
            return self._authenticate_directory(username, password)
        except LDAPUnavailable:
            raise
        except (LDAPException, OSError) as exc:
            raise LDAPUnavailable(f"LDAP error with {self.config.url}: {exc}") from exc
        except Exception as exc:
            # ldap3 has rough edges (struct.error, TypeError on odd replies): fail closed, loudly.
            log.error("ldap: unexpected error with %s", self.config.url, exc_info=True)
            raise LDAPUnavailable(f"LDAP error with {self.config.url}: {exc!r}") from exc

    def _authenticate_directory(self, username: str, password: str) -> LDAPIdentity | None:
        cfg = self.config
        service, code = self._open(cfg.bind_dn, cfg.bind_password)
        try:
            if code != _SUCCESS:
                raise LDAPUnavailable(
                    f"service account bind to {cfg.url} refused: "
                    f"{service.result.get('description')} ({code})"
                )
            entry = self._find_user(service, username)
            user_dn = str(entry.get("dn") or "") if entry is not None else ""
            if entry is None or not user_dn:
                # The same work as a real check, so that unknown and ambiguous users cannot be
                # told from a wrong password by the time the answer takes.
                self._check_password(
                    f"cn={uuid.uuid4().hex},{cfg.user_base_dn}", password, decoy=True
                )
                return None
            if not self._check_password(user_dn, password):
                log.info("ldap: bind refused for %r", user_dn)
                return None
            attrs: Mapping[str, list[bytes]] = entry.get("raw_attributes") or {}
            canonical = self._canonical_username(attrs)
            if canonical is None:
                log.warning(
                    "ldap: %r has no %s attribute; refusing the login",
                    user_dn,
                    cfg.username_attribute,
                )
                return None
            groups = self._find_groups(service, user_dn, canonical)
            return LDAPIdentity(
                username=canonical,
                dn=user_dn,
                email=_first(attrs, cfg.email_attribute),
                display_name=_first(attrs, cfg.display_name_attribute),
                groups=sorted({name for name, _ in groups}),
                teams=self._teams(groups),
            )
        finally:
            self._close(service)

    def _search(
        self,
        conn: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        size_limit: int,
    ) -> tuple[int, list[dict[str, Any]]]:
        conn.search(
            search_base=base,
            search_filter=search_filter,
            search_scope=ldap3.SUBTREE,
            attributes=attributes,
            size_limit=size_limit,
            time_limit=max(1, math.ceil(self.config.timeout)),
            dereference_aliases=ldap3.DEREF_NEVER,
        )
        code = int(conn.result.get("result", -1))
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise LDAPUnavailable(
                f"search of {base!r} failed: {conn.result.get('description')} ({code})"
            )
        entries = [r for r in (conn.response or []) if r.get("type") == "searchResEntry"]
        return code, entries

    def _find_user(self, conn: ldap3.Connection, username: str) -> dict[str, Any] | None:
        cfg = self.config
        search_filter = render_filter(cfg.user_filter, username=username)
        attributes = sorted(
            {cfg.username_attribute, cfg.email_attribute, cfg.display_name_attribute}
        )
        # Two entries are enough to know the name is ambiguous.
        code, entries = self._search(conn, cfg.user_base_dn, search_filter, attributes, 2)
        if code == _SIZE_LIMIT_EXCEEDED or len(entries) > 1:
            log.warning(
                "ldap: %r matches several entries under %r; refused", username, cfg.user_base_dn
            )
            return None
        if not entries:
            log.debug("ldap: no entry for %r under %r", username, cfg.user_base_dn)
            return None
        return entries[0]

    def _check_password(self, dn: str, password: str, decoy: bool = False) -> bool:
        """Bind as *dn*; a *decoy* bind (to a DN that cannot exist) only spends the time."""
        if not dn or not password:  # never an unauthenticated or anonymous bind
            return False
        conn, code = self._open(dn, password)
        try:
            if decoy:
                return False
            if code == _SUCCESS:
                return True
            if code in _REFUSED_BIND_CODES:
                return False
            raise LDAPUnavailable(
                f"bind to {self.config.url} failed: {conn.result.get('description')} ({code})"
            )
        finally:
            self._close(conn)

    def _canonical_username(self, attrs: Mapping[str, list[bytes]]) -> str | None:
        """The entry's username as the directory spells it: the first value, whatever alias
        (multi-valued uid) or case was typed, so that one entry is always one Moorage user."""
        values = [v for v in _values(attrs, self.config.username_attribute) if v]
        return values[0] if values else None

    def _find_groups(
        self, conn: ldap3.Connection, user_dn: str, username: str
    ) -> list[tuple[str, str]]:
        """(name, DN) of every group the user is in."""
        cfg = self.config
        if not cfg.group_base_dn:
            return []
        search_filter = render_filter(cfg.group_filter, username=username, user_dn=user_dn)
        code, entries = self._search(
            conn, cfg.group_base_dn, search_filter, [cfg.group_name_attribute], 0
        )
        if code == _SIZE_LIMIT_EXCEEDED:
            # A partial group list would silently drop team memberships.
            raise LDAPUnavailable(f"group search for {user_dn!r} hit the server's size limit")
        groups: list[tuple[str, str]] = []
        for entry in entries:
            dn = str(entry.get("dn") or "")
            name = _first(entry.get("raw_attributes") or {}, cfg.group_name_attribute) or dn
            if name:
                groups.append((name, dn))
        return groups

    def _teams(self, groups: list[tuple[str, str]]) -> list[tuple[str, str]]:
        teams: set[tuple[str, str]] = set()
        for name, dn in groups:
            by_name = self._team_by_name.get(name.strip().casefold())
            if by_name:
                teams.add(by_name)
            norm = _normalize_dn(dn) if dn else None
            by_dn = self._team_by_dn.get(norm) if norm else None
            if by_dn:
                teams.add(by_dn)
        return sorted(teams)
