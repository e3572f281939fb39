"""OpenID Connect single sign-on, relying-party side: the authorization-code flow with PKCE
(S256), ``state`` and ``nonce``; discovery; the provider's keys (JWKS) fetched and cached; ID
token validation; the groups claim for mapping to teams.

The web UI and the CLI's device of choice (phase 2) call :meth:`OIDCClient.begin` to send the
user to the provider, keep the returned :class:`AuthorizationRequest` server-side (never in a
cookie the browser can edit), and call :meth:`OIDCClient.complete` with the callback's query
parameters to get a validated :class:`Identity`.

What is checked, and why:
- ``state`` (compared in constant time) ties the callback to the browser that started the login
  (CSRF); ``iss`` in the callback, when the provider sends it (RFC 9207), must be ours (mix-up).
- The code is exchanged with the PKCE verifier (RFC 7636): a stolen code is useless.
- The ID token's signature is verified with the provider's published keys, with the algorithm
  pinned to the asymmetric ones the provider announces (never ``none``, never HMAC with a public
  key as secret); ``iss`` equals the configured issuer exactly, ``aud`` contains our client id
  (``azp`` too when there are several audiences), ``exp``/``iat`` are checked with a small
  leeway, ``nonce`` equals the one we sent (replay of an old token).
- Everything fetched is size-bounded, JSON-shape-checked, and reached over HTTPS (plain HTTP
  only for a loopback issuer, as in tests).

JOSE is joserfc's (no hand-written signature or JWK code here).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from .config import OIDCConfig as OIDCConfig

ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "Ed25519",
    }
)
MAX_DOCUMENT = 256 * 1024  # discovery document, JWKS, token response
MAX_KEYS = 50
MAX_GROUPS = 500
MAX_GROUP_LENGTH = 255
JWKS_REFRESH_MIN_INTERVAL = 60.0  # an unknown kid refetches the keys at most this often


class OIDCError(Exception):
    """Login cannot complete; ``message`` is safe to show the user (no token content)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    id_token_algorithms: frozenset[str]
    iss_parameter_supported: bool


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """What the server keeps between :meth:`OIDCClient.begin` and the callback."""

    url: str  # send the browser here
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Identity:
    issuer: str
    subject: str
    username: str
    email: str | None
    name: str | None
    groups: tuple[str, ...]
    claims: Mapping[str, Any]
    id_token: str
    access_token: str | None


def pkce_pair(verifier: str | None = None) -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636 §4.1–4.2."""
    verifier = verifier or secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(url: object, what: str) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        raise OIDCError(f"the provider's {what} is missing or invalid")
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url
    raise OIDCError(f"the provider's {what} must use https")


def groups_from_claims(claims: Mapping[str, Any], claim: str = "groups") -> tuple[str, ...]:
    """The user's groups: a list of strings (or one string) at *claim*, which may be a dotted
    path into nested objects. Non-strings, empty and over-long names are dropped; the count is
    bounded; order kept, duplicates removed."""
    value: Any = claims
    for part in claim.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ()
        value = value[part]
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    out: dict[str, None] = {}
    for item in items[: MAX_GROUPS * 2]:
        if isinstance(item, str) and 0 < len(item) <= MAX_GROUP_LENGTH and item.isprintable():
            out.setdefault(item, None)
        if len(out) >= MAX_GROUPS:
            break
    return tuple(out)


class OIDCClient:
    """One provider. Thread-unsafe but task-safe: share one per process."""

    def __init__(self, config: OIDCConfig, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        _check_url(config.issuer, "issuer")
        self._http = http or httpx.AsyncClient(timeout=config.http_timeout, follow_redirects=False)
        self._own_http = http is None
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._keys_at = float("-inf")
        self._forced_at = float("-inf")  # last refetch asked for by an unknown key id
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # --- provider documents ---------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._http.stream("GET", url, headers={"Accept": "application/json"}) as r:
                body = await _read_bounded(r, what)
        except httpx.HTTPError as exc:
            raise OIDCError(
                f"cannot reach the provider for its {what}: {type(exc).__name__}"
            ) from None
        if r.status_code != 200:
            raise OIDCError(f"the provider answered {r.status_code} for its {what}")
        return _json_object(body, what)

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is not None:
            return self._metadata
        issuer = self.config.issuer
        doc = await self._get_json(
            issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document"
        )
        if doc.get("issuer") != issuer:
            raise OIDCError("the discovery document names another issuer")
        algs = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        allowed = frozenset(a for a in algs if isinstance(a, str)) & ASYMMETRIC_ALGORITHMS
        if not allowed:
            raise OIDCError("the provider signs ID tokens with no algorithm Moorage accepts")
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OIDCError("the provider does not support PKCE with S256")
        userinfo = doc.get("userinfo_endpoint")
        self._metadata = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=_check_url(
                doc.get("authorization_endpoint"), "authorization endpoint"
            ),
            token_endpoint=_check_url(doc.get("token_endpoint"), "token endpoint"),
            jwks_uri=_check_url(doc.get("jwks_uri"), "jwks_uri"),
            userinfo_endpoint=_check_url(userinfo, "userinfo endpoint") if userinfo else None,
            id_token_algorithms=allowed,
            iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported")
            is True,
        )
        return self._metadata

    async def keys(self, refresh: bool = False) -> KeySet:
        """The provider's signing keys, cached ``jwks_cache_seconds``; *refresh* refetches them
        (at most once a minute: an attacker's unknown kid must not hammer the provider)."""
        async with self._lock:
            now = time.monotonic()
            stale = now - self._keys_at > self.config.jwks_cache_seconds
            forced = refresh and now - self._forced_at > JWKS_REFRESH_MIN_INTERVAL
            if self._keys is not None and not stale and not forced:
                return self._keys
            if forced:
                self._forced_at = now
            meta = await self.metadata()
            doc = await self._get_json(meta.jwks_uri, "keys (JWKS)")
            raw = doc.get("keys")
            if not isinstance(raw, list) or not raw or len(raw) > MAX_KEYS:
                raise OIDCError("the provider's JWKS has no usable keys")
            usable = [
                k
                for k in raw
                if isinstance(k, dict)
                and k.get("use", "sig") == "sig"
                and k.get("kty") in ("RSA", "EC", "OKP")  # never a symmetric key
            ]
            try:
                self._keys = KeySet.import_key_set({"keys": usable})
            except (JoseError, ValueError, TypeError, KeyError):
                raise OIDCError("the provider's JWKS cannot be read") from None
            self._keys_at = time.monotonic()
            return self._keys

    # --- the flow ---------------------------------------------------------------------------------

    async def begin(self, redirect_uri: str | None = None, **extra: str) -> AuthorizationRequest:
        """A fresh authorization request (state, nonce, PKCE verifier) and the URL to send the
        user to. *extra* adds parameters such as ``prompt=login`` or ``login_hint``."""
        meta = await self.metadata()
        redirect = redirect_uri or self.config.redirect_uri
        if not redirect:
            raise OIDCError("no redirect URI configured (auth.oidc.redirect_uri)")
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        scopes = ["openid", *(s for s in self.config.scopes if s != "openid")]
        params = {
            **extra,
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        sep = "&" if urlsplit(meta.authorization_endpoint).query else "?"
        url = f"{meta.authorization_endpoint}{sep}{urlencode(params)}"
        return AuthorizationRequest(url, state, nonce, verifier, redirect)

    async def complete(
        self, request: AuthorizationRequest, params: Mapping[str, str], max_age: float = 600.0
    ) -> Identity:
        """Finish a login from the callback's query parameters."""
        meta = await self.metadata()
        if time.time() - request.created_at > max_age:
            raise OIDCError("the login took too long; start again")
        state = params.get("state") or ""
        if not hmac.compare_digest(state.encode(), request.state.encode()):
            raise OIDCError("the login response does not belong to this login (state)")
        iss = params.get("iss")
        if iss is not None and iss != meta.issuer:
            raise OIDCError("the login response comes from another issuer")
        if meta.iss_parameter_supported and iss is None:
            raise OIDCError("the login response lacks the issuer (iss) the provider promised")
        if "error" in params:
            raise OIDCError(f"the provider refused the login: {params['error'][:100]}")
        code = params.get("code")
        if not code or len(code) > 4096:
            raise OIDCError("the login response has no code")
        tokens = await self._exchange(meta, code, request)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise OIDCError("the provider returned no ID token")
        claims = await self.validate_id_token(id_token, request.nonce)
        access = tokens.get("access_token")
        return self._identity(claims, id_token, access if isinstance(access, str) else None)

    async def _exchange(
        self, meta: ProviderMetadata, code: str, request: AuthorizationRequest
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier,
        }
        auth: httpx.BasicAuth | None = None
        if self.config.client_secret:
            # client_secret_basic: RFC 6749 §2.3.1 form-encodes id and secret first.
            auth = httpx.BasicAuth(
                quote(self.config.client_id, safe=""), quote(self.config.client_secret, safe="")
            )
        else:
            form["client_id"] = self.config.client_id
        try:
            async with self._http.stream(
                "POST",
                meta.token_endpoint,
                data=form,
                auth=auth,
                headers={"Accept": "application/json"},
            ) as r:
                body = await _read_bounded(r, "token response")
        except httpx.HTTPError as exc:
            raise OIDCError(
                f"cannot reach the provider's token endpoint: {type(exc).__name__}"
            ) from None
        doc = _json_object(body, "token response")
        if r.status_code != 200:
            err = doc.get("error")
            raise OIDCError(
                f"the provider refused the code: {str(err)[:100] if err else r.status_code}"
            )
        return doc

    async def validate_id_token(self, token: str, nonce: str | None) -> dict[str, Any]:
        """The ID token's claims, after the checks of OpenID Connect Core §3.1.3.7."""
        if len(token) > 64 * 1024 or token.count(".") != 2:
            raise OIDCError("the ID token is malformed")
        try:
            header = extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise OIDCError("the ID token is malformed") from None
        meta = await self.metadata()
        alg = header.get("alg")
        if alg not in meta.id_token_algorithms:
            raise OIDCError(
                f"the ID token is signed with an algorithm not accepted ({str(alg)[:20]})"
            )
        keys = await self.keys()
        kid = header.get("kid")
        if isinstance(kid, str) and not _has_kid(keys, kid):
            keys = await self.keys(refresh=True)  # the provider may have rotated its keys
        try:
            decoded = jwt.decode(token, keys, algorithms=[alg])
        except JoseError:
            raise OIDCError("the ID token's signature does not verify") from None
        except (ValueError, TypeError):
            raise OIDCError("the ID token is malformed") from None
        claims = dict(decoded.claims)
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": meta.issuer},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        registry = jwt.JWTClaimsRegistry(leeway=self.config.leeway_seconds, **options)
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise OIDCError(f"the ID token is not valid: {type(exc).__name__}") from None
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.config.client_id not in audiences:
            raise OIDCError("the ID token was issued for another client")
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise OIDCError("the ID token's authorized party is another client")
        if "azp" in claims and claims["azp"] != self.config.client_id:
            raise OIDCError("the ID token's authorized party is another client")
        return claims

    def _identity(
        self, claims: Mapping[str, Any], id_token: str, access_token: str | None
    ) -> Identity:
        def text(name: str) -> str | None:
            v = claims.get(name)
            return v if isinstance(v, str) and 0 < len(v) <= 255 else None

        subject = str(claims["sub"])
        username = text(self.config.username_claim) or text("email") or subject
        return Identity(
            issuer=str(claims["iss"]),
            subject=subject,
            username=username,
            email=text("email"),
            name=text("name"),
            groups=groups_from_claims(claims, self.config.groups_claim),
            claims=claims,
            id_token=id_token,
            access_token=access_token,
        )


def _has_kid(keys: KeySet, kid: str) -> bool:
    try:
        keys.get_by_kid(kid)
    except (JoseError, ValueError):
        return False
    return True


async def _read_bounded(r: httpx.Response, what: str) -> bytes:
    declared = r.headers.get("content-length")
    if declared and declared.isdecimal() and int(declared) > MAX_DOCUMENT:
        raise OIDCError(f"the provider's {what} is too large")
    body = bytearray()
    async for chunk in r.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOCUMENT:
            raise OIDCError(f"the provider's {what} is too large")
    return bytes(body)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise OIDCError(f"the provider's {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise OIDCError(f"the provider's {what} is not a JSON object")
    return doc
