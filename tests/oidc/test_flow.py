"""The authorization-code flow with PKCE against a real OpenID provider (oidc-provider 9 on
loopback), driven headlessly: httpx follows the provider's redirects, posts its login and
consent forms as a browser would, and stops at the redirect to Moorage's callback; the client
then exchanges the code and validates the ID token (groups included)."""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from moorage.auth.oidc import AuthorizationRequest, OIDCClient, OIDCConfig, OIDCError

from .conftest import CLIENT_ID, CLIENT_SECRET, USERS, OpenIDProvider

FORM = re.compile(r'<form method="post" action="([^"]+)"')


def _config(op: OpenIDProvider, **kw: object) -> OIDCConfig:
    settings: dict[str, object] = {
        "issuer": op.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": op.redirect_uri,
    }
    return OIDCConfig.model_validate(settings | kw)


def browse(op: OpenIDProvider, url: str, login: str, password: str) -> dict[str, str] | str:
    """Be the user's browser: follow redirects, sign in, consent. Returns the callback's query
    parameters, or the HTML of the page the flow stopped at (a refused login)."""
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        r = browser.get(url)
        for _ in range(20):
            if r.is_redirect:
                target = urljoin(str(r.url), r.headers["location"])
                if target.startswith(op.redirect_uri):
                    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
                r = browser.get(target)
                continue
            assert r.status_code == 200, (r.status_code, r.text[:500])
            action = FORM.search(r.text)
            if action is None:
                return r.text
            form_url = urljoin(str(r.url), action.group(1))
            if action.group(1).endswith("/login"):
                if "Invalid login" in r.text:
                    return r.text
                r = browser.post(form_url, data={"login": login, "password": password})
            else:
                r = browser.post(form_url, data={})
        raise AssertionError("the login did not finish")


async def _login(
    client: OIDCClient, op: OpenIDProvider, user: str
) -> tuple[AuthorizationRequest, dict[str, str]]:
    request = await client.begin()
    params = browse(op, request.url, user, str(USERS[user]["password"]))
    assert isinstance(params, dict), params
    return request, params


async def test_code_flow_gives_a_validated_identity_with_groups(provider: OpenIDProvider) -> None:
    client = OIDCClient(_config(provider))
    try:
        request = await client.begin()
        query = parse_qs(urlsplit(request.url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["response_type"] == ["code"] and "openid" in query["scope"][0].split()
        assert query["state"] == [request.state] and query["nonce"] == [request.nonce]
        params = browse(provider, request.url, "alice", "alice-password-1")
        assert isinstance(params, dict) and set(params) >= {"code", "state", "iss"}
        identity = await client.complete(request, params)
    finally:
        await client.aclose()
    assert identity.issuer == provider.issuer
    assert identity.subject == "alice" and identity.username == "alice"
    assert identity.email == "alice@example.com" and identity.name == "Alice Example"
    assert identity.groups == ("platform", "moorage-admins")
    assert identity.claims["aud"] == CLIENT_ID and identity.claims["nonce"] == request.nonce
    assert identity.access_token


async def test_user_without_groups_and_a_refused_password(provider: OpenIDProvider) -> None:
    client = OIDCClient(_config(provider))
    try:
        request, params = await _login(client, provider, "bob")
        identity = await client.complete(request, params)
        assert identity.username == "bob" and identity.groups == ()
        refused = browse(provider, (await client.begin()).url, "alice", "wrong-password")
        assert isinstance(refused, str) and "Invalid login or password" in refused
    finally:
        await client.aclose()


async def test_callback_checks(provider: OpenIDProvider) -> None:
    client = OIDCClient(_config(provider))
    try:
        request, params = await _login(client, provider, "alice")
        with pytest.raises(OIDCError, match="state"):
            await client.complete(request, {**params, "state": "forged"})
        with pytest.raises(OIDCError, match="another issuer"):
            await client.complete(request, {**params, "iss": "https://evil.example.com"})
        with pytest.raises(OIDCError, match="lacks the issuer"):
            await client.complete(request, {k: v for k, v in params.items() if k != "iss"})
        with pytest.raises(OIDCError, match="refused the login: access_denied"):
            await client.complete(
                request, {"state": request.state, "iss": provider.issuer, "error": "access_denied"}
            )
        # PKCE is enforced end to end: the provider refuses the code with another verifier.
        with pytest.raises(OIDCError, match="refused the code"):
            await client.complete(replace(request, code_verifier="x" * 64), params)
        # The nonce we sent must come back (the provider signs the one of this login).
        request2, params2 = await _login(client, provider, "alice")
        with pytest.raises(OIDCError, match="not valid"):
            await client.complete(replace(request2, nonce="another-nonce"), params2)
        # A code is good once.
        request3, params3 = await _login(client, provider, "alice")
        assert (await client.complete(request3, params3)).subject == "alice"
        with pytest.raises(OIDCError, match="refused the code"):
            await client.complete(request3, params3)
        # Too old a login request.
        with pytest.raises(OIDCError, match="too long"):
            await client.complete(replace(request3, created_at=request3.created_at - 3600), params3)
    finally:
        await client.aclose()


async def test_wrong_client_secret_and_wrong_issuer(provider: OpenIDProvider) -> None:
    bad = OIDCClient(_config(provider, client_secret="not-the-secret-0000000"))
    try:
        request, params = await _login(bad, provider, "alice")
        with pytest.raises(OIDCError, match="refused the code"):
            await bad.complete(request, params)
    finally:
        await bad.aclose()
    other = OIDCClient(_config(provider, issuer=provider.issuer + "/"))
    try:
        with pytest.raises(OIDCError, match="another issuer"):
            await other.begin()
    finally:
        await other.aclose()


async def test_keys_are_cached(provider: OpenIDProvider) -> None:
    """One JWKS fetch serves many logins; forced refreshes (an unknown key id) refetch at most
    once a minute."""
    fetched: list[str] = []

    async def count(request: httpx.Request) -> None:
        fetched.append(request.url.path)

    http = httpx.AsyncClient(timeout=30, event_hooks={"request": [count]})
    client = OIDCClient(_config(provider), http)
    try:
        for _ in range(2):
            request, params = await _login(client, provider, "alice")
            await client.complete(request, params)
        assert fetched.count("/jwks") == 1
        await client.keys(refresh=True)
        await client.keys(refresh=True)
    finally:
        await http.aclose()
    assert fetched.count("/jwks") == 2
    assert fetched.count("/.well-known/openid-configuration") == 1
