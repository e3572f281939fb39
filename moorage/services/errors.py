"""Domain errors raised by services; the protocol layer maps them to spec error codes."""

from __future__ import annotations


class ServiceError(Exception):
    code = "UNKNOWN"

    def __init__(self, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(ServiceError):
    """Generic not-found; subclasses name what."""


class BlobUnknown(NotFound):
    code = "BLOB_UNKNOWN"


class ManifestUnknown(NotFound):
    code = "MANIFEST_UNKNOWN"


class NameUnknown(NotFound):
    code = "NAME_UNKNOWN"


class UploadUnknown(NotFound):
    code = "BLOB_UPLOAD_UNKNOWN"


class UploadInvalid(ServiceError):
    code = "BLOB_UPLOAD_INVALID"


class RangeInvalid(ServiceError):
    """A chunk does not start where the upload ends (or overlaps it)."""

    code = "RANGE_INVALID"

    def __init__(self, message: str, current_size: int) -> None:
        super().__init__(message)
        self.current_size = current_size


class DigestInvalid(ServiceError):
    code = "DIGEST_INVALID"


class SizeInvalid(ServiceError):
    code = "SIZE_INVALID"


class TooLarge(ServiceError):
    code = "SIZE_INVALID"


class ManifestInvalid(ServiceError):
    code = "MANIFEST_INVALID"


class ManifestBlobUnknown(ServiceError):
    code = "MANIFEST_BLOB_UNKNOWN"


class TooManyRequests(ServiceError):
    """Retry later (``retry_after`` seconds): the session is busy with another live request, or
    a cap on open sessions is reached. Clients retry 429 with ``Retry-After``; 416 is kept for
    a wrong range only."""

    code = "TOOMANYREQUESTS"

    def __init__(self, message: str, retry_after: int = 1, detail: object = None) -> None:
        super().__init__(message, detail)
        self.retry_after = max(1, int(retry_after))


class Unavailable(ServiceError):
    """A dependency (database, store) failed; the client should retry."""

    code = "UNAVAILABLE"


# --- management (REST API and web UI) -------------------------------------------------------


class Denied(ServiceError):
    """The caller is authenticated but may not do this."""

    code = "DENIED"


class Conflict(ServiceError, ValueError):
    """The change collides with existing state (a name taken, a last admin, ...)."""

    code = "CONFLICT"


class Invalid(ServiceError, ValueError):
    """A field is malformed or out of range; ``field`` names it."""

    code = "INVALID"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field)
        self.field = field


class Missing(NotFound, ValueError):
    """A named user, organization, team, robot, token or repository does not exist."""

    code = "NOT_FOUND"
