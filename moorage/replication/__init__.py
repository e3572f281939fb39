"""Mirroring and replication: a client for other registries and an engine that copies between them.

Phase 1 (this package so far) needs no database, web app or CLI:

* :class:`RegistryClient` (``client.py``) talks to any OCI distribution / Docker V2 registry;
* :func:`copy_blob` (``transfer.py``) moves one blob, streamed, with mount and resume;
* :class:`CopyEngine` / :func:`copy_tag` (``copy.py``) copy tags with their indexes, platform
  filter, referrers and per-tag results.

Replication policies, pull-through caches and their jobs, API and UI build on these.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .auth import Credentials
    from .bounds import Limits
    from .client import (
        Manifest,
        ManifestInfo,
        RegistryClient,
        RetryPolicy,
        Timeouts,
        TLSOptions,
        docker_hub_name,
        referrers_tag,
    )
    from .copy import CopyEngine, CopyOptions, ProgressEvent, SkippedChild, TagResult, copy_tag
    from .errors import (
        DigestMismatch,
        NotFound,
        PeerProtocolError,
        PeerUnavailable,
        RegistryError,
        ReplicationError,
        TLSFailure,
        Unauthorized,
    )
    from .ratelimit import BandwidthLimiter
    from .transfer import BlobOutcome, TransferOptions, copy_blob

# Resolved on first use: the wiring module imports this package, and so does every `moorage`
# command, most of which never talk to another registry (httpx and the client cost ~0.2 s).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".auth": ("Credentials",),
        ".bounds": ("Limits",),
        ".client": (
            "Manifest",
            "ManifestInfo",
            "RegistryClient",
            "RetryPolicy",
            "Timeouts",
            "TLSOptions",
            "docker_hub_name",
            "referrers_tag",
        ),
        ".copy": (
            "CopyEngine",
            "CopyOptions",
            "ProgressEvent",
            "SkippedChild",
            "TagResult",
            "copy_tag",
        ),
        ".errors": (
            "DigestMismatch",
            "NotFound",
            "PeerProtocolError",
            "PeerUnavailable",
            "RegistryError",
            "ReplicationError",
            "TLSFailure",
            "Unauthorized",
        ),
        ".ratelimit": ("BandwidthLimiter",),
        ".transfer": (
            "BlobOutcome",
            "TransferOptions",
            "copy_blob",
        ),
    },
)

__all__ = [
    "BandwidthLimiter",
    "BlobOutcome",
    "CopyEngine",
    "CopyOptions",
    "Credentials",
    "DigestMismatch",
    "Limits",
    "Manifest",
    "ManifestInfo",
    "NotFound",
    "PeerProtocolError",
    "PeerUnavailable",
    "ProgressEvent",
    "RegistryClient",
    "RegistryError",
    "ReplicationError",
    "RetryPolicy",
    "SkippedChild",
    "TLSFailure",
    "TLSOptions",
    "TagResult",
    "Timeouts",
    "TransferOptions",
    "Unauthorized",
    "copy_blob",
    "copy_tag",
    "docker_hub_name",
    "referrers_tag",
]
