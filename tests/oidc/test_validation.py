"""ID token validation and provider-document checks, case by case. The real provider
(test_flow.py) only ever signs good tokens; here a loopback HTTP server publishes a discovery
document and a JWKS for keys this test generates (joserfc), so that the test can sign the bad
ones: expired, for another audience or issuer, with ``alg: none`` or HMAC, with a key the
provider does not publish, rotated keys, hostile documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import RSAKey

from moorage.auth.oidc import OIDCClient, OIDCConfig, OIDCError, groups_from_claims, pkce_pair

CLIENT = "moorage"
NONCE = "n-0S6_WzA2Mj"


class DocServer:
    """Serves JSON documents by path on loopback; documents can be swapped while it runs."""

    def __init__(self) -> None:
        self.docs: dict[str, bytes] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.hits.append(self.path)
                body = outer.docs.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, keys: list[RSAKey], **discovery: Any) -> None:
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            **discovery,
        }
        self.docs["/.well-known/openid-configuration"] = json.dumps(doc).encode()
        self.docs["/jwks"] = json.dumps({"keys": [k.as_dict(private=False) for k in keys]}).encode()


@pytest.fixture(scope="module")
def shared() -> Iterator[DocServer]:
    server = DocServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def op(shared: DocServer) -> DocServer:
    """The module's document server, emptied for this test."""
    shared.docs.clear()
    shared.hits.clear()
    return shared


def _key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


KEY = _key("k1")


def _claims(op: DocServer, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": op.issuer,
        "sub": "alice",
        "aud": CLIENT,
        "exp": now + 300,
        "iat": now,
        "nonce": NONCE,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(
    claims: dict[str, Any], key: Any = KEY, alg: str = "RS256", kid: str | None = "k1"
) -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, claims, key, algorithms=[alg])


def _client(op: DocServer, **kw: Any) -> OIDCClient:
    return OIDCClient(
        OIDCConfig(
            issuer=op.issuer,
            client_id=CLIENT,
            redirect_uri="http://127.0.0.1:9/cb",
            leeway_seconds=5,
            **kw,
        )
    )


async def test_a_good_token_passes(op: DocServer) -> None:
    op.publish([KEY])
    client = _client(op)
    claims = await client.validate_id_token(_sign(_claims(op)), NONCE)
    assert claims["sub"] == "alice"
    claims = await client.validate_id_token(
        _sign(_claims(op, aud=[CLIENT, "other"], azp=CLIENT)), NONCE
    )
    assert claims["azp"] == CLIENT
    await client.aclose()


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"exp": int(time.time()) - 60}, "not valid"),
        ({"exp": None}, "not valid"),
        ({"iss": "https://evil.example.com"}, "not valid"),
        ({"aud": "another-client"}, "another client"),
        ({"aud": ["another-client", "x"]}, "another client"),
        ({"aud": [CLIENT, "other"]}, "authorized party"),  # several audiences need azp
        ({"aud": [CLIENT, "other"], "azp": "other"}, "authorized party"),
        ({"nonce": "replayed-nonce"}, "not valid"),
        ({"nonce": None}, "not valid"),
        ({"sub": None}, "not valid"),
    ],
)
async def test_bad_claims_are_refused(op: DocServer, over: dict[str, Any], why: str) -> None:
    op.publish([KEY])
    client = _client(op)
    with pytest.raises(OIDCError, match=why):
        await client.validate_id_token(_sign(_claims(op, **over)), NONCE)
    await client.aclose()


async def test_algorithm_and_key_attacks(op: DocServer) -> None:
    op.publish([KEY])
    client = _client(op)
    claims = _claims(op)
    payload = jwt.encode({"alg": "RS256"}, claims, KEY).split(".")[1]
    unsigned = "eyJhbGciOiJub25lIn0." + payload + "."
    with pytest.raises(OIDCError, match="algorithm not accepted"):
        await client.validate_id_token(unsigned, NONCE)

    # HMAC with the public key's PEM as the "secret": the classic confusion attack (built by
    # hand: joserfc itself refuses to make such a key).
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","kid":"k1"}') + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(KEY.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(OIDCError, match="algorithm not accepted"):
        await client.validate_id_token(signing_input + "." + b64(mac), NONCE)
    # A key the provider does not publish, under the published key's id.
    with pytest.raises(OIDCError, match="does not verify"):
        await client.validate_id_token(_sign(claims, _key("k1")), NONCE)
    # An algorithm the provider supports but did not announce for ID tokens.
    with pytest.raises(OIDCError, match="algorithm not accepted"):
        other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        await client.validate_id_token(_sign(claims, other, "RS512"), NONCE)
    # Tampered payload.
    good = _sign(claims).split(".")
    evil = jwt.encode({"alg": "RS256"}, {**claims, "sub": "admin"}, KEY).split(".")[1]
    with pytest.raises(OIDCError, match="does not verify"):
        await client.validate_id_token(".".join([good[0], evil, good[2]]), NONCE)
    await client.aclose()


async def test_rotated_keys_are_fetched_once(op: DocServer) -> None:
    op.publish([KEY])
    client = _client(op)
    await client.validate_id_token(_sign(_claims(op)), NONCE)
    new = _key("k2")
    op.publish([KEY, new])
    await client.validate_id_token(_sign(_claims(op), new, kid="k2"), NONCE)  # refetched
    assert op.hits.count("/jwks") == 2
    stranger = _key("k3")  # an unknown kid again within a minute: no refetch
    with pytest.raises(OIDCError, match="does not verify"):
        await client.validate_id_token(_sign(_claims(op), stranger, kid="k3"), NONCE)
    assert op.hits.count("/jwks") == 2
    await client.aclose()


@pytest.mark.parametrize(
    ("discovery", "why"),
    [
        ({"issuer": "https://other.example.com"}, "another issuer"),
        ({"id_token_signing_alg_values_supported": ["HS256", "none"]}, "no algorithm"),
        ({"code_challenge_methods_supported": ["plain"]}, "PKCE"),
        ({"token_endpoint": "http://idp.example.com/token"}, "must use https"),
        ({"jwks_uri": None}, "jwks_uri"),
    ],
)
async def test_hostile_discovery_documents(
    op: DocServer, discovery: dict[str, Any], why: str
) -> None:
    op.publish([KEY], **discovery)
    client = _client(op)
    with pytest.raises(OIDCError, match=why):
        await client.begin()
    await client.aclose()


async def test_hostile_jwks_and_sizes(op: DocServer) -> None:
    op.publish([KEY])
    op.docs["/jwks"] = json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).encode()
    client = _client(op)
    with pytest.raises(OIDCError, match="JWKS"):
        await client.validate_id_token(_sign(_claims(op)), NONCE)
    await client.aclose()
    op.docs["/.well-known/openid-configuration"] = b" " * (300 * 1024) + b"{}"
    client = _client(op)
    with pytest.raises(OIDCError, match="too large"):
        await client.begin()
    await client.aclose()
    op.docs["/.well-known/openid-configuration"] = b"[1, 2]"
    client = _client(op)
    with pytest.raises(OIDCError, match="not a JSON object"):
        await client.begin()
    await client.aclose()


def test_issuer_must_be_https_unless_loopback() -> None:
    with pytest.raises(OIDCError, match="https"):
        OIDCClient(
            OIDCConfig(issuer="http://idp.example.com", client_id="c", redirect_uri="https://r/cb")
        )
    OIDCClient(
        OIDCConfig(issuer="https://idp.example.com", client_id="c", redirect_uri="https://r/cb")
    )


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=200))
async def test_garbage_tokens_raise_oidc_errors_only(shared: DocServer, token: str) -> None:
    shared.publish([KEY])
    # A plain-HTTP loopback client without a CA bundle: loading one per example is what made
    # this test slow, and nothing here speaks TLS.
    http = httpx.AsyncClient(verify=False)
    client = OIDCClient(
        OIDCConfig(issuer=shared.issuer, client_id=CLIENT, redirect_uri="http://127.0.0.1:9/cb"),
        http,
    )
    with pytest.raises(OIDCError):
        await client.validate_id_token(token, NONCE)
    await http.aclose()


def test_pkce_matches_rfc7636_appendix_b() -> None:
    verifier, challenge = pkce_pair("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    assert challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )


def test_groups_claim_extraction() -> None:
    assert groups_from_claims({"groups": ["a", "b", "a"]}) == ("a", "b")
    assert groups_from_claims({"groups": "solo"}) == ("solo",)
    assert groups_from_claims({"realm_access": {"roles": ["dev"]}}, "realm_access.roles") == (
        "dev",
    )
    assert groups_from_claims({"groups": [1, None, "", "x" * 300, "ok\n", "fine"]}) == ("fine",)
    assert groups_from_claims({"groups": {"not": "a list"}}) == ()
    assert groups_from_claims({}) == ()
    assert len(groups_from_claims({"groups": [f"g{i}" for i in range(10_000)]})) == 500
