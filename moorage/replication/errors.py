"""Errors of the registry client and the copy engine.

Every failure a peer can cause is one of these, with a message fit for an execution log, and a
``transient`` flag that decides whether the copy engine retries (connection failures, 5xx, 429)
or gives up on the tag at once (a manifest the destination refuses, a digest that does not match).
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Base class. ``transient``: worth retrying later with the same inputs."""

    transient = False


class PeerUnavailable(ReplicationError):
    """The peer could not be reached or kept failing (connection errors, timeouts, 5xx, 429)."""

    transient = True


class RegistryError(ReplicationError):
    """The peer answered with an error status. ``code`` is the first OCI error code, if any."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status in (408, 429) or self.status >= 500


class Unauthorized(RegistryError):
    """401/403: credentials missing, wrong, or not allowed the action."""


class NotFound(RegistryError):
    """404 for a manifest, blob, repository or upload session."""


class DigestMismatch(ReplicationError):
    """Content does not match the digest it was asked for (or announced): never retried blindly."""


class TLSFailure(ReplicationError):
    """The TLS handshake failed (untrusted or mismatched certificate): not worth retrying."""


class PeerProtocolError(ReplicationError):
    """The peer's answer breaks the protocol or a bound (oversized, malformed, too deep)."""
