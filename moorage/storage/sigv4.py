"""AWS Signature Version 4 for S3 requests (header-signed requests and presigned URLs).

Only what S3 needs: the payload hash is either a real SHA-256 (small bodies) or
``UNSIGNED-PAYLOAD`` (parts streamed over TLS; the registry verifies every blob's digest itself).
Reference: https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"


def uri_encode(value: str, keep_slash: bool = False) -> str:
    """RFC 3986 encoding as SigV4 wants it (unreserved characters kept, everything else %XX)."""
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(params.items()))


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


class Signer:
    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            k = ("AWS4" + self.credentials.secret_access_key).encode()
            for part in (date, self.region, self.service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys = {date: k}  # one day's key at a time
            key = k
        return key

    def _scope(self, date: str) -> str:
        return f"{date}/{self.region}/{self.service}/aws4_request"

    def _signature(self, amz_date: str, canonical_request: str) -> str:
        date = amz_date[:8]
        to_sign = "\n".join(
            (
                _ALGORITHM,
                amz_date,
                self._scope(date),
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            )
        )
        return hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()

    def sign_headers(
        self,
        method: str,
        host: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        payload_hash: str,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Headers to add (Authorization, x-amz-date, x-amz-content-sha256, token).

        *path* is already URI-encoded; *headers* are the request's other headers, of which
        every ``x-amz-*``, ``content-md5`` and ``content-type`` one is signed."""
        amz_date = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        out = {"x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
        if self.credentials.session_token:
            out["x-amz-security-token"] = self.credentials.session_token
        signed = {"host": host}
        for k, v in {**headers, **out}.items():
            lk = k.lower()
            if lk.startswith("x-amz-") or lk in ("content-md5", "content-type"):
                signed[lk] = " ".join(str(v).split())
        names = sorted(signed)
        canonical = "\n".join(
            (
                method,
                path,
                canonical_query(params),
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                payload_hash,
            )
        )
        signature = self._signature(amz_date, canonical)
        out["Authorization"] = (
            f"{_ALGORITHM} Credential={self.credentials.access_key_id}/{self._scope(amz_date[:8])}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return out

    def presign_query(
        self,
        method: str,
        host: str,
        path: str,
        expires_in: int,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Query parameters of a presigned URL (host is the only signed header)."""
        amz_date = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        params = {
            "X-Amz-Algorithm": _ALGORITHM,
            "X-Amz-Credential": f"{self.credentials.access_key_id}/{self._scope(amz_date[:8])}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires_in),
            "X-Amz-SignedHeaders": "host",
        }
        if self.credentials.session_token:
            params["X-Amz-Security-Token"] = self.credentials.session_token
        canonical = "\n".join(
            (method, path, canonical_query(params), f"host:{host}\n", "host", UNSIGNED)
        )
        params["X-Amz-Signature"] = self._signature(amz_date, canonical)
        return params
