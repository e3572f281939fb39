"""The token realm, links and cookie flags come from the configured external URL
(``http.base_url``) or from a trusted proxy's headers (``http.trusted_proxies``), never from a
Host header or forwarded headers a client chose (issue 11). SQLite: the backend plays no part.
"""

from __future__ import annotations

import re

import httpx

from tests.conftest import ADMIN_PASSWORD, MoorageServer, own_auth_server

LOGIN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def realm(r: httpx.Response) -> str:
    m = re.search(r'realm="([^"]*)"', r.headers["www-authenticate"])
    assert m, r.headers
    return m[1]


def ui_login(server: MoorageServer, headers: dict[str, str]) -> httpx.Response:
    """Sign in through the login form; returns the answer that sets the session cookie."""
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as c:
        form = c.get("/login")
        m = LOGIN_CSRF.search(form.text)
        assert m, form.text
        # Sent by hand: a Secure cookie is not sent back over plain HTTP by a client's jar
        # (a browser reaches the TLS proxy).
        cookie = "; ".join(
            v.split(";", 1)[0] for k, v in form.headers.multi_items() if k == "set-cookie"
        )
        data = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": m[1]}
        c.cookies.clear()
        r = c.post("/login", data=data, headers={"Cookie": cookie})
        assert r.status_code == 303, r.text
        return r


def session_cookie_secure(r: httpx.Response) -> bool:
    cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie" and "session" in v]
    assert cookies, r.headers
    return all("secure" in c.lower() for c in cookies)


def test_base_url_fixes_realm_links_and_secure_cookies() -> None:
    with own_auth_server(MOORAGE_HTTP_BASE_URL="https://registry.example.test") as srv:
        evil = {"Host": "evil.example", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil"}
        r = httpx.get(f"{srv.url}/v2/", headers=evil, timeout=60)
        assert r.status_code == 401
        assert realm(r) == "https://registry.example.test/auth/token"
        # Served over plain HTTP by a TLS proxy: the cookie is Secure all the same.
        assert session_cookie_secure(ui_login(srv, {}))


def test_without_settings_forwarded_headers_are_ignored_and_the_host_is_checked() -> None:
    with own_auth_server() as srv:
        r = httpx.get(
            f"{srv.url}/v2/",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
            timeout=60,
        )
        assert realm(r) == f"http://{srv.host}/auth/token"
        injected = httpx.get(f"{srv.url}/v2/", headers={"Host": 'x",error="y'}, timeout=60)
        assert injected.status_code == 401
        assert realm(injected) == f"http://{srv.host}/auth/token"
        assert injected.headers["www-authenticate"].count('"') == 4  # realm and service only
        assert not session_cookie_secure(ui_login(srv, {"X-Forwarded-Proto": "https"}))


def test_a_trusted_proxy_forwards_scheme_and_host() -> None:
    with own_auth_server(MOORAGE_HTTP_TRUSTED_PROXIES="127.0.0.1") as srv:
        fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.test"}
        r = httpx.get(f"{srv.url}/v2/", headers=fwd, timeout=60)
        assert realm(r) == "https://registry.example.test/auth/token"
        assert session_cookie_secure(ui_login(srv, fwd))
