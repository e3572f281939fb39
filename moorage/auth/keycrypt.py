"""Encryption at rest of the token signing keys' private PEMs (``signing_keys.private_pem``),
and of other secrets kept in the database the same way (webhook secrets: ``seal_text`` and
``open_text`` with a context of their own bound as associated data).

With ``auth.token.key_encryption_secret`` set, a private key is stored as
``enc:v1:<base64url(nonce ‖ AES-256-GCM ciphertext)>``, the AES key derived from the secret with
HKDF-SHA256 and the row's ``kid`` bound as associated data (a ciphertext copied to another row
does not decrypt). Rows without the prefix are plaintext PEMs from before (or from a server
without a secret) and keep working; a server with a secret re-encrypts them at start.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

# cryptography is imported on first use: a server with access control off never opens a key.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
_INFO = b"moorage signing-key encryption v1"
_SALT = b"moorage.auth.token.key_encryption_secret"


class KeyDecryptionError(Exception):
    """A stored private key cannot be read with the configured secret (or without one)."""


def _aead(secret: str) -> AESGCM:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
        secret.encode("utf-8")
    )
    return AESGCM(key)


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


def encrypt_pem(secret: str, kid: str, pem: str) -> str:
    nonce = os.urandom(12)
    sealed = _aead(secret).encrypt(nonce, pem.encode(), kid.encode())
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_pem(secret: str | None, kid: str, stored: str) -> str:
    """The PEM of a stored private key (plaintext rows as they are)."""
    if not is_encrypted(stored):
        return stored
    if not secret:
        raise KeyDecryptionError(
            f"signing key {kid} is encrypted, but auth.token.key_encryption_secret "
            "(MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET) is not set"
        )
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.urlsafe_b64decode(stored[len(PREFIX) :].encode("ascii"))
        return _aead(secret).decrypt(raw[:12], raw[12:], kid.encode()).decode()
    except (InvalidTag, ValueError, UnicodeError):
        raise KeyDecryptionError(
            f"signing key {kid} cannot be decrypted with auth.token.key_encryption_secret: "
            "wrong secret (every node must share the same one)"
        ) from None


def seal_text(secret: str | None, context: str, text: str) -> str:
    """What to store for a secret *text* (encrypted when there is a key secret); *context*
    (e.g. ``webhook:<uid>``) must be given again to open it."""
    return encrypt_pem(secret, context, text) if secret else text


def open_text(secret: str | None, context: str, stored: str) -> str:
    """The text sealed by :func:`seal_text` (plaintext rows as they are)."""
    if not is_encrypted(stored):
        return stored
    if not secret:
        raise KeyDecryptionError(
            f"{context} is encrypted, but auth.token.key_encryption_secret "
            "(MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET) is not set"
        )
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.urlsafe_b64decode(stored[len(PREFIX) :].encode("ascii"))
        return _aead(secret).decrypt(raw[:12], raw[12:], context.encode()).decode()
    except (InvalidTag, ValueError, UnicodeError):
        raise KeyDecryptionError(
            f"{context} cannot be decrypted with auth.token.key_encryption_secret: wrong "
            "secret (every node must share the same one)"
        ) from None


def seal(secret: str | None, kid: str, pem: str) -> str:
    """What to store for a new key: encrypted when there is a secret."""
    return encrypt_pem(secret, kid, pem) if secret else pem
