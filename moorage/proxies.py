"""Who the client is and which URL it used, behind reverse proxies (``http.trusted_proxies``)
and with an external URL (``http.base_url``).

Applied once per request, before routing, to the ASGI scope: every layer then reads the client
address (login throttling, audit, sessions), the scheme (cookies' ``Secure``) and the host
(token realm, links, the UI's pull commands) from the same place.

- From a peer listed in ``http.trusted_proxies`` only, ``X-Forwarded-For`` names the client: the
  rightmost address that is not itself a trusted proxy (addresses to its left were written by
  the client and prove nothing). ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are honoured from
  such a peer too. From any other peer they are ignored: a client cannot choose its address.
- ``http.base_url``, when set, fixes the scheme and host whatever the request says: a Host
  header chosen by the client never reaches a realm or a link.

uvicorn's own proxy-header handling (which trusts 127.0.0.1 by default) is turned off by
``moorage serve``: this is the one place that decides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# host, host:port, [v6]:port — nothing that could break out of a header or a URL.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?\Z")


def valid_host(value: str) -> bool:
    return bool(_HOST_RE.match(value))


class ExternalView:
    """Rewrites an ASGI scope's client, scheme and Host as the outside world sees them."""

    def __init__(self, trusted: list[str], base_url: str | None) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self.base_scheme: str | None = None
        self.base_host: str | None = None
        if base_url:
            parts = urlsplit(base_url)
            self.base_scheme, self.base_host = parts.scheme, parts.netloc

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def apply(self, scope: MutableMapping[str, Any]) -> None:
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        peer = (scope.get("client") or ("", 0))[0]
        if self.networks and self.trusted(peer):
            forwarded_for = _joined(headers, b"x-forwarded-for")
            if forwarded_for:
                client = self._client_from(forwarded_for)
                if client is not None:
                    scope["client"] = (client, 0)
            proto = _last(headers, b"x-forwarded-proto")
            if proto in ("http", "https"):
                scope["scheme"] = proto
            fwd_host = _last(headers, b"x-forwarded-host")
            if fwd_host and valid_host(fwd_host):
                headers = _set_host(headers, fwd_host)
        if self.base_scheme and self.base_host:
            scope["scheme"] = self.base_scheme
            headers = _set_host(headers, self.base_host)
        scope["headers"] = headers

    def _client_from(self, value: str) -> str | None:
        """The rightmost address in X-Forwarded-For that is not a trusted proxy."""
        hops = [h.strip() for h in value.split(",")][-32:]
        for hop in reversed(hops):
            try:
                ip = ipaddress.ip_address(hop)
            except ValueError:
                return None  # garbage: keep the peer's own address
            if not any(ip in net for net in self.networks):
                return str(ip)
        return str(ipaddress.ip_address(hops[0])) if hops and hops[0] else None


def _joined(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    """Every occurrence of a header, comma-joined in order (RFC 9110 list semantics)."""
    return ",".join(v.decode("latin-1") for k, v in headers if k == name)[:4096]


def _last(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    """The last (closest proxy's) element of a list header, lower-cased for protocols."""
    value = _joined(headers, name)
    return value.rsplit(",", 1)[-1].strip().lower() if value else ""


def _set_host(headers: list[tuple[bytes, bytes]], host: str) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k != b"host"] + [(b"host", host.encode("latin-1"))]


def external_origin(scope: MutableMapping[str, Any]) -> str:
    """``scheme://host[:port]`` of this request as the client addressed it (after
    :meth:`ExternalView.apply`); a malformed Host header gives way to the listening address."""
    scheme = str(scope.get("scheme") or "http")
    host = ""
    for k, v in scope.get("headers") or []:
        if k == b"host":
            host = v.decode("latin-1")
    if not valid_host(host):
        server = scope.get("server") or ("127.0.0.1", 0)
        host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
    return f"{scheme}://{host}"
