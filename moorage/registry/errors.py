"""The distribution-spec error codes and the JSON error body every /v2 failure carries."""

from __future__ import annotations

import json
from typing import Any

# code → HTTP status (distribution-spec "Error Codes", Distribution's errcode registry)
STATUS: dict[str, int] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "TAG_INVALID": 400,
    "RANGE_INVALID": 416,
    "UNAVAILABLE": 503,
    "UNKNOWN": 500,
}

DEFAULT_MESSAGES: dict[str, str] = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "manifest references a manifest or blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown to registry",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "the operation is unsupported",
    "TOOMANYREQUESTS": "too many requests",
    "TAG_INVALID": "invalid tag",
    "RANGE_INVALID": "invalid content range",
    "UNAVAILABLE": "service temporarily unavailable; retry",
    "UNKNOWN": "unknown error",
}


class RegistryError(Exception):
    """An error answered with the spec's JSON body: ``{"errors": [{code, message, detail}]}``."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or DEFAULT_MESSAGES.get(code, code))
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(code, code)
        self.detail = detail
        self.status = status or STATUS.get(code, 400)
        self.headers = headers or {}

    def body(self) -> bytes:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return json.dumps({"errors": [err]}).encode()
