"""Signed bearer tokens (the Docker registry token protocol) and their keys.

Keys live in the database so that every node signs and verifies alike. At first start an ES256
key is generated; ``moorage admin rotate-keys`` adds a new one and marks the old as superseded:
it keeps verifying for ``auth.token.key_overlap`` seconds, so tokens issued just before a
rotation stay valid until they expire.

Verification pins everything: the key by ``kid`` and the algorithm to that key's own (an ES256
key verifies ES256 only: ``none``, HMAC and RS256-on-an-EC-key are refused, whatever the header
says), issuer, audience, ``exp``/``nbf``/``iat`` (with a small leeway), and a ``jti``. Every
failure, whatever the library raises, is an :class:`InvalidToken` (401), never a 500.

Tokens name their account by kind, id and name, carry its credential epoch (``ver``) and its
creation time (``ct``, microseconds): a later account of the same name (and, on an old SQLite
database, the same id) was created at another time, so the tokens of a deleted account never
pass for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import access_queries as aq
from ..db.engine import SETUP_LOCK_KEY, reader, serialize
from ..db.queries import now
from .config import TokenConfig
from .keycrypt import decrypt_pem, is_encrypted, seal
from .scopes import Scope

ALLOWED_ALGORITHMS = ["ES256", "RS256"]
LEEWAY_SECONDS = 30
KEY_REFRESH_SECONDS = 5


class InvalidToken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    kind: str  # user | robot | anonymous
    principal_id: int | None
    access: tuple[Scope, ...]
    jti: str
    token_type: str = "access"  # access | refresh
    expires_at: float = 0.0
    pat_id: int | None = None  # issued for this personal access token (private claim)
    # The account's credential epoch when issued (private claim; 0 for tokens that predate it).
    version: int = 0
    # The account's creation time (aq.account_stamp); None in tokens that predate the claim.
    created: int | None = None
    issued_at: float = 0.0  # iat


@dataclass
class _KeySet:
    signing_kid: str | None = None
    signing_key: Any = None
    verify: dict[str, tuple[Any, str]] = field(default_factory=dict)  # kid -> (key, algorithm)
    loaded_at: float = 0.0


# PyJWT and cryptography (about 8 MiB resident) are imported on first use: a server with access
# control off (``--no-auth``) never signs nor verifies a token.


def generate_es256() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class TokenService:
    def __init__(
        self,
        write_engine: AsyncEngine,
        *,
        issuer: str,
        service: str,
        lifetime: int,
        refresh_lifetime: int,
        key_overlap: int,
        key_secret: str | None = None,
    ) -> None:
        self.engine = write_engine
        self._read = reader(write_engine)  # built once: the same pool, never the write lock
        self.key_secret = key_secret
        self.issuer = issuer
        self.service = service
        self.lifetime = lifetime
        self.refresh_lifetime = refresh_lifetime
        self.key_overlap = key_overlap
        self._keys = _KeySet()
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, write_engine: AsyncEngine, t: TokenConfig) -> TokenService:
        return cls(
            write_engine,
            issuer=t.issuer,
            service=t.service,
            lifetime=t.lifetime,
            refresh_lifetime=t.refresh_lifetime,
            key_overlap=t.key_overlap,
            key_secret=t.key_encryption_secret,
        )

    async def ensure_key(self) -> None:
        """Create the first signing key if there is none, and with a key encryption secret,
        encrypt the keys stored in plaintext (idempotent across nodes). Raises
        keycrypt.KeyDecryptionError when a stored key does not decrypt with the secret."""
        async with self.engine.begin() as conn:
            await serialize(conn, SETUP_LOCK_KEY)  # else two nodes starting together make two
            if not await self._seal_stored(conn):
                await self._add_key(conn)
        await self._reload()

    async def _seal_stored(self, conn: Any) -> int:
        """Check that every stored key decrypts with this secret (KeyDecryptionError if not),
        and encrypt the plaintext ones when there is a secret. Returns how many there are."""
        rows = await aq.signing_keys_all(conn)
        for row in rows:
            pem = decrypt_pem(self.key_secret, row.kid, row.private_pem)
            if self.key_secret and not is_encrypted(row.private_pem):
                await aq.set_signing_key_private(conn, row.kid, seal(self.key_secret, row.kid, pem))
        return len(rows)

    async def _add_key(self, conn: Any) -> str:
        kid = uuid.uuid4().hex[:16]
        private, public = generate_es256()
        await aq.add_signing_key(conn, kid, "ES256", seal(self.key_secret, kid, private), public)
        return kid

    async def rotate(self) -> str:
        async with self.engine.begin() as conn:
            # A wrong secret here would store a key no node could read.
            await serialize(conn, SETUP_LOCK_KEY)
            await self._seal_stored(conn)
            kid = await self._add_key(conn)
        await self._reload()
        return kid

    async def _reload(self) -> None:
        async with self._read.connect() as conn:
            rows = await aq.signing_keys_all(conn)
        from cryptography.hazmat.primitives import serialization

        ks = _KeySet(loaded_at=time.monotonic())
        cutoff = now() - timedelta(seconds=self.key_overlap)
        for row in rows:
            if row.superseded_at is None:
                ks.signing_kid = row.kid
                pem = decrypt_pem(self.key_secret, row.kid, row.private_pem)
                ks.signing_key = serialization.load_pem_private_key(pem.encode(), None)
            if row.superseded_at is None or row.superseded_at > cutoff:
                public = serialization.load_pem_public_key(row.public_pem.encode())
                ks.verify[row.kid] = (public, row.algorithm)
        self._keys = ks

    async def _keyset(self, kid: str | None = None) -> _KeySet:
        ks = self._keys
        # Another node (or `moorage admin rotate-keys`) may have rotated: look every few seconds.
        stale = time.monotonic() - ks.loaded_at > KEY_REFRESH_SECONDS
        if ks.signing_key is None or stale or (kid is not None and kid not in ks.verify):
            async with self._lock:
                # Another node may have rotated; an unknown kid triggers at most one reload
                # per second so a flood of forged kids cannot hammer the database.
                if time.monotonic() - self._keys.loaded_at > 1 or self._keys.signing_key is None:
                    await self._reload()
            ks = self._keys
        return ks

    async def issue(
        self,
        subject: str,
        kind: str,
        principal_id: int | None,
        access: list[Scope],
        token_type: str = "access",
        pat_id: int | None = None,
        version: int = 0,
        created: int | None = None,
    ) -> tuple[str, int]:
        ks = await self._keyset()
        if ks.signing_key is None or ks.signing_kid is None:
            raise RuntimeError("no signing key")
        lifetime = self.lifetime if token_type == "access" else self.refresh_lifetime
        issued = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": issued + lifetime,
            "nbf": issued - 1,
            "iat": issued,
            "jti": uuid.uuid4().hex,
            "access": [s.to_claim() for s in access],
            "moorage": {"kind": kind, "id": principal_id, "typ": token_type},
        }
        if pat_id is not None:
            claims["moorage"]["pat"] = pat_id
        if version:
            claims["moorage"]["ver"] = version
        if created is not None:
            claims["moorage"]["ct"] = created
        import jwt

        token = jwt.encode(
            claims, ks.signing_key, algorithm="ES256", headers={"kid": ks.signing_kid}
        )
        return token, lifetime

    async def verify(self, token: str, token_type: str = "access") -> TokenClaims:
        if len(token) > 8192:
            raise InvalidToken("token too long")
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALLOWED_ALGORITHMS or not isinstance(kid, str):
            raise InvalidToken("token algorithm or key id not accepted")
        ks = await self._keyset(kid)
        entry = ks.verify.get(kid)
        if entry is None:
            raise InvalidToken("unknown or retired signing key")
        key, key_alg = entry
        if alg != key_alg:
            # PyJWT would try an RSA verification with an EC key (and raise TypeError).
            raise InvalidToken("token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key_alg],
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
            )
        except (jwt.PyJWTError, TypeError, ValueError, KeyError) as exc:
            raise InvalidToken(f"token verification failed: {type(exc).__name__}") from None
        meta = claims.get("moorage") or {}
        if not isinstance(meta, dict) or meta.get("typ", "access") != token_type:
            raise InvalidToken("wrong token type")
        access: list[Scope] = []
        for entry in claims.get("access") or []:
            if not isinstance(entry, dict):
                raise InvalidToken("malformed access claim")
            actions = entry.get("actions") or []
            if not isinstance(actions, list):
                raise InvalidToken("malformed access claim")
            access.append(
                Scope(str(entry.get("type")), str(entry.get("name")), frozenset(map(str, actions)))
            )
        pid, pat, ver = meta.get("id"), meta.get("pat"), meta.get("ver", 0)
        created = meta.get("ct")
        if pat is not None and (not isinstance(pat, int) or isinstance(pat, bool)):
            raise InvalidToken("malformed pat claim")
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise InvalidToken("malformed ver claim")
        if created is not None and (not isinstance(created, int) or isinstance(created, bool)):
            raise InvalidToken("malformed ct claim")
        return TokenClaims(
            subject=str(claims["sub"]),
            kind=str(meta.get("kind", "user")),
            principal_id=pid if isinstance(pid, int) else None,
            access=tuple(access),
            jti=str(claims["jti"]),
            token_type=token_type,
            expires_at=float(claims["exp"]),
            pat_id=pat,
            version=ver,
            created=created,
            issued_at=float(claims["iat"]),
        )

    async def public_jwks(self) -> dict[str, Any]:
        import jwt

        ks = await self._keyset()
        keys = []
        for kid, (key, alg) in ks.verify.items():
            if alg != "ES256":
                continue
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
            jwk.update({"kid": kid, "use": "sig", "alg": alg})
            keys.append(jwk)
        return {"keys": keys}
