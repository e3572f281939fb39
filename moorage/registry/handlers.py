"""The /v2 protocol (OCI distribution-spec v1.1, Docker Registry HTTP API V2).

Thin by design: parse and validate the request, ask the access policy, call a service, shape the
response. Rules live in the services and in moorage.oci.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlencode

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from ..audit import PULL_ACTIONS, Action, AuditEvent, AuditLog
from ..audit.events import SharedDetails
from ..auth.policy import DELETE, PULL, PUSH, AccessPolicy, RBACPolicy
from ..oci import mediatypes as mt
from ..oci.digest import Digest, InvalidDigest
from ..oci.manifest import MEDIA_TYPE_RE
from ..oci.names import valid_name, valid_tag
from ..services import errors as se
from ..services.blobs import BlobService
from ..services.context import ServiceContext
from ..services.manifests import ManifestService, parse_accept
from ..services.pullthrough import PullThrough
from ..services.rules import Requester
from ..services.uploads import ContentRange, UploadService, parse_content_range
from .errors import RegistryError

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
_DIGITS = re.compile(r"[0-9]{1,40}")
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)\Z")),
    ("uploads", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?\Z")),
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]+)\Z")),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)\Z")),
    ("tags", re.compile(r"^/v2/(?P<name>.+)/tags/list\Z")),
    ("referrers", re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)\Z")),
]

_ALLOWED_METHODS = {
    "manifest": ("GET", "HEAD", "PUT", "DELETE"),
    "uploads": ("POST",),
    "upload": ("GET", "PATCH", "PUT", "DELETE"),
    "blob": ("GET", "HEAD", "DELETE"),
    "tags": ("GET",),
    "referrers": ("GET",),
    "base": ("GET", "HEAD"),
    "catalog": ("GET",),
}


def _error_from_service(exc: se.ServiceError) -> RegistryError:
    if isinstance(exc, se.TooLarge):
        return RegistryError("SIZE_INVALID", exc.message, exc.detail, status=413)
    if isinstance(exc, se.RangeInvalid):
        return RegistryError(
            "RANGE_INVALID",
            exc.message,
            exc.detail,
            headers={"Range": _range_header(exc.current_size)},
        )
    if isinstance(exc, se.TooManyRequests):
        return RegistryError(
            exc.code, exc.message, exc.detail, headers={"Retry-After": str(exc.retry_after)}
        )
    return RegistryError(exc.code, exc.message, exc.detail)


def _range_header(size: int) -> str:
    # Distribution reports 0-0 for an empty upload.
    return f"0-{max(size - 1, 0)}"


def _parse_digest(value: str, code: str = "DIGEST_INVALID") -> Digest:
    try:
        return Digest.parse(value)
    except InvalidDigest as exc:
        raise RegistryError(code, f"invalid digest: {exc}") from None


def _json(
    data: object,
    status: int = 200,
    headers: dict[str, str] | None = None,
    media_type: str = "application/json",
) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def _pagination(request: Request, max_entries: int) -> tuple[int, str | None]:
    n_raw = request.query_params.get("n")
    last = request.query_params.get("last") or None
    n = max_entries
    if n_raw is not None and n_raw != "":
        if not _DIGITS.fullmatch(n_raw) or len(n_raw) > 9:
            raise RegistryError("UNSUPPORTED", "n must be a non-negative integer", status=400)
        n = min(int(n_raw), max_entries)
    if last is not None and (len(last) > 255 or not last.isprintable()):
        raise RegistryError("UNSUPPORTED", "last must be a printable name or tag", status=400)
    return n, last


# Bytes a pusher chose, served on the web UI's origin: a browser opening them downloads them
# (never renders them) and, should it render anyway, runs nothing.
DOWNLOAD_ONLY = {
    "Content-Disposition": "attachment",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _next_link(path: str, n: int, last: str, extra: dict[str, str] | None = None) -> str:
    params = {"n": str(n), "last": last} | (extra or {})
    return f'<{path}?{urlencode(params)}>; rel="next"'


_EVERY_RESPONSE = (
    (API_VERSION_HEADER[0].lower().encode("latin-1"), API_VERSION_HEADER[1].encode("latin-1")),
    (b"x-content-type-options", b"nosniff"),
)

_STATUS_DETAILS: dict[int, SharedDetails] = {}


def _status_details(status: int) -> SharedDetails:
    """An audit record's ``{"status": N}``, one read-only copy per status (its canonical JSON
    encoded once, not once per record)."""
    details = _STATUS_DETAILS.get(status)
    if details is None:
        details = _STATUS_DETAILS[status] = SharedDetails({"status": status})
    return details


def _shared(value: str | None) -> str | None:
    """One copy of a string that many queued audit records repeat (repository, digest, client
    address, user agent): ~750 bytes a queued pull record become ~270."""
    return sys.intern(value) if value else value


# Blobs up to this size are answered as one body rather than streamed (registry/handlers.py
# blob_get): their bytes are read whole, in one reader-thread hop when no crowd of readers is
# streaming at the same time.
WHOLE_BODY_MAX = 256 << 10


class RegistryAPI:
    """An ASGI app serving /v2."""

    def __init__(
        self, ctx: ServiceContext, policy: AccessPolicy, audit: AuditLog | None = None
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.audit = audit
        self.blobs = BlobService(ctx)
        self.uploads = UploadService(ctx)
        self.manifests = ManifestService(ctx)
        self.base_url = (ctx.config.http.base_url or "").rstrip("/")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except RegistryError as exc:
            response = Response(
                exc.body(),
                status_code=exc.status,
                headers=exc.headers,
                media_type="application/json",
            )
        except se.ServiceError as exc:
            err = _error_from_service(exc)
            response = Response(
                err.body(),
                status_code=err.status,
                headers=err.headers,
                media_type="application/json",
            )
        except ClientDisconnect:
            return
        # Appended as raw header lines (no handler sets them; MutableHeaders would scan the
        # list for each). Content under /v2 is whatever a pusher uploaded, on the UI's origin:
        # a browser must never sniff it into HTML or script (nosniff).
        response.raw_headers.extend(_EVERY_RESPONSE)
        if self.audit is not None:
            if (
                response.status_code >= 400
                # 401/429/503: the policy tried the credentials already (and counted a failure)
                and response.status_code not in (401, 403, 429, 503)
                and "moorage.route" in scope
                and "moorage.principal" not in scope
            ):
                await self._identify(request)
            self._record(request, response)
        await response(scope, receive, send)

    async def _identify(self, request: Request) -> None:
        """Authenticate a request refused before the policy looked at it (a malformed name,
        reference or digest), so that its audit record names the caller who sent it rather
        than ``anonymous``. Credentials that fail stay unidentified (audited as a failed
        login by the refusal audit when the answer was 401)."""
        if not request.headers.get("authorization") or not isinstance(self.policy, RBACPolicy):
            return
        with contextlib.suppress(RegistryError):
            await self.policy.principal(request)

    def _record(self, request: Request, response: Response) -> None:
        """One audit record per push, pull and delete (allowed or refused)."""
        route = request.scope.get("moorage.route")
        if route is None or self.audit is None:
            return
        kind, params = route
        action = _audit_action(kind, request.method, params, request.query_params, response)
        if action is None:
            return
        status = response.status_code
        result: Literal["success", "failure", "denied"] = (
            "success" if status < 400 else "denied" if status in (401, 403) else "failure"
        )
        if action in PULL_ACTIONS and result != "success" and status == 404:
            return  # a miss, not an action (clients probe before pushing)
        if result == "denied":
            return  # counted with every other refusal (moorage/audit/refusals.py)
        scope = request.scope
        principal = scope.get("moorage.principal")
        ref = params.get("ref", "")
        digest = (
            # A manifest read names what it served (a pull by tag: the tag's digest then).
            scope.get("moorage.digest")
            or response.headers.get("docker-content-digest")
            or params.get("digest")
            or (ref if ":" in ref else None)
            or request.query_params.get("digest")
            or request.query_params.get("mount")
        )
        client = scope.get("client")
        # The records wait in the audit queue (up to audit.queue_size of them under a burst of
        # pulls): the strings a burst repeats are shared, not one copy per request.
        self.audit.record_nowait(
            AuditEvent(
                action,
                actor=getattr(principal, "name", "anonymous"),
                actor_type=getattr(principal, "kind", "anonymous"),
                result=result,
                repository=_shared(params.get("name")),
                tag=_shared(ref) if ref and ":" not in ref else None,
                digest=_shared(digest[:200]) if digest else None,
                client_addr=_shared(client[0]) if client else None,
                user_agent=_shared(request.headers.get("user-agent")),
                details=_status_details(status),
            )
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def dispatch(self, request: Request) -> Response:
        path: str = request.scope["path"]
        method = request.method
        if path in ("/v2", "/v2/"):
            self._method(method, "base")
            await self.policy.check_base(request)
            return _json({}, headers={})
        if path in ("/v2/_catalog", "/v2/_catalog/"):
            self._method(method, "catalog")
            return await self.catalog(request)
        for kind, pattern in _ROUTES:
            m = pattern.match(path)
            if m is None:
                continue
            params = m.groupdict()
            name = params["name"]
            if not valid_name(name):
                raise RegistryError(
                    "NAME_INVALID",
                    "repository name must be lowercase path components of [a-z0-9] separated "
                    "by '.', '_', '__' or '-', 255 characters at most",
                    detail={"name": name[:300]},
                )
            self._method(method, kind)
            ns = request.query_params.get("ns")
            pt = self.ctx.pull_through
            if ns and pt is not None and method in ("GET", "HEAD"):
                # containerd's mirror requests name the registry they stand in for (?ns=):
                # a cache organization of that registry answers them.
                routed = await pt.route(name, ns)
                if routed is not None:
                    params["name"] = routed
            request.scope["moorage.route"] = (kind, params)
            handler: Callable[..., Awaitable[Response]] = getattr(self, f"{kind}_{method.lower()}")
            return await handler(request, **params)
        raise RegistryError("NAME_UNKNOWN", "no such endpoint", status=404)

    @staticmethod
    def _method(method: str, kind: str) -> None:
        allowed = _ALLOWED_METHODS[kind]
        if method not in allowed:
            raise RegistryError(
                "UNSUPPORTED",
                f"method {method} is not allowed here",
                status=405,
                headers={"Allow": ", ".join(allowed)},
            )

    def _requester(self, request: Request, repository: str) -> Requester:
        """The caller as the content rules see it (services/rules.py); ``may`` asks the same
        access policy as the request's own check, for the same repository."""
        principal = request.scope.get("moorage.principal")
        policy = self.policy

        async def may(action: str) -> bool:
            return await policy.allowed(request, repository, (action,))

        return Requester(
            getattr(principal, "name", "anonymous"),
            getattr(principal, "kind", "anonymous"),
            bool(getattr(principal, "is_admin", False)),
            may,
        )

    # --- catalog and tags -------------------------------------------------------------------

    async def catalog(self, request: Request) -> Response:
        await self.policy.check_catalog(request)
        limit = self.ctx.config.registry.catalog_max_entries
        n, last = _pagination(request, limit)
        # One query filtered by what the caller may read (as /api/v1/repositories): no
        # per-repository checks, and the Link header appears only when more *visible*
        # repositories follow.
        scope = await self.policy.list_scope(request)
        names = await self.manifests.catalog(last, n + 1, scope) if n else []
        headers = {}
        if len(names) > n:
            names = names[:n]
            headers["Link"] = _next_link("/v2/_catalog", n, names[-1])
        return _json({"repositories": names}, headers=headers)

    async def tags_get(self, request: Request, name: str) -> Response:
        await self.policy.check(request, name, (PULL,))
        limit = self.ctx.config.registry.catalog_max_entries
        n, last = _pagination(request, limit)
        tags = await self.manifests.tags(name, last, n + 1) if n else []
        headers = {}
        if len(tags) > n:
            tags = tags[:n]
            headers["Link"] = _next_link(f"/v2/{name}/tags/list", n, tags[-1])
        return _json({"name": name, "tags": tags}, headers=headers)

    # --- manifests --------------------------------------------------------------------------

    @staticmethod
    def _reference(ref: str) -> str:
        if ":" in ref:
            return str(_parse_digest(ref))
        if not valid_tag(ref):
            raise RegistryError(
                "TAG_INVALID",
                "tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
                detail={"tag": ref[:200]},
            )
        return ref

    @classmethod
    def _existing_reference(cls, ref: str) -> str:
        """A reference to read or delete: one that is neither a valid tag nor a valid digest
        names a manifest that cannot exist, so it is unknown (404 MANIFEST_UNKNOWN, as CNCF
        Distribution and the conformance suite expect); only a PUT refuses it as invalid."""
        try:
            return cls._reference(ref)
        except RegistryError:
            raise RegistryError(
                "MANIFEST_UNKNOWN",
                "manifest unknown: the reference is neither a valid tag nor a valid digest",
                detail={"reference": ref[:200]},
            ) from None

    async def manifest_get(self, request: Request, name: str, ref: str) -> Response:
        return await self._manifest_read(request, name, ref, head=False)

    async def manifest_head(self, request: Request, name: str, ref: str) -> Response:
        return await self._manifest_read(request, name, ref, head=True)

    async def _manifest_read(self, request: Request, name: str, ref: str, head: bool) -> Response:
        await self.policy.check(request, name, (PULL,))
        reference = self._existing_reference(ref)
        accept = parse_accept(request.headers.getlist("accept"))
        requester = self._requester(request, name)
        pt = self.ctx.pull_through
        if pt is not None and await pt.covers(name):
            manifest = await pt.manifest(name, reference, accept, requester)
        else:
            manifest = await self.manifests.get(name, reference, accept, requester)
        request.scope["moorage.digest"] = manifest.digest
        headers = {
            "Docker-Content-Digest": manifest.digest,
            "Content-Length": str(len(manifest.payload)),
            "ETag": f'"{manifest.digest}"',
            **DOWNLOAD_ONLY,
        }
        return Response(
            b"" if head else manifest.payload,
            headers=headers,
            media_type=manifest.media_type,
        )

    async def manifest_put(self, request: Request, name: str, ref: str) -> Response:
        reference = self._reference(ref)
        tags = _tag_params(request, reference)
        await self.policy.check(request, name, (PUSH,))
        await self._refuse_cache_push(name)
        limit = self.ctx.config.registry.max_manifest_size
        declared = request.headers.get("content-length")
        if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
            raise RegistryError(
                "SIZE_INVALID", f"manifest exceeds the {limit}-byte limit", status=413
            )
        payload = await _read_limited(request.stream(), limit)
        result = await self.manifests.put(
            name,
            reference,
            payload,
            request.headers.get("content-type"),
            self._requester(request, name),
            tags,
        )
        headers = {
            "Location": self._url(f"/v2/{name}/manifests/{result.digest}"),
            "Docker-Content-Digest": result.digest,
        }
        if result.subject:
            headers["OCI-Subject"] = result.subject
        response = Response(b"", status_code=201, headers=headers)
        if tags:
            for tag in result.tags:  # one OCI-Tag header per tag applied
                response.headers.append("OCI-Tag", tag)
        return response

    async def manifest_delete(self, request: Request, name: str, ref: str) -> Response:
        await self.policy.check(request, name, (DELETE,))
        reference = self._existing_reference(ref)
        await self.manifests.delete(name, reference, self._requester(request, name))
        return Response(b"", status_code=202)

    async def _refuse_cache_push(self, name: str) -> None:
        pt = self.ctx.pull_through
        if pt is not None and await pt.covers(name):
            raise RegistryError("DENIED", pt.push_refusal(name))

    # --- blobs ------------------------------------------------------------------------------

    async def blob_head(self, request: Request, name: str, digest: str) -> Response:
        d = _parse_digest(digest)
        await self.policy.check(request, name, (PULL,))
        try:
            size = (await self.blobs.stat(name, d)).size
        except se.BlobUnknown:
            pt = self.ctx.pull_through
            if pt is None or not await pt.covers(name):
                raise
            size = await pt.blob_size(name, d)
        return Response(
            b"",
            headers={
                "Content-Length": str(size),
                "Docker-Content-Digest": str(d),
                "Accept-Ranges": "bytes",
                "ETag": f'"{d}"',
            },
            media_type="application/octet-stream",
        )

    async def blob_get(self, request: Request, name: str, digest: str) -> Response:
        d = _parse_digest(digest)
        await self.policy.check(request, name, (PULL,))
        try:
            info = await self.blobs.stat(name, d)
        except se.BlobUnknown:
            pt = self.ctx.pull_through
            if pt is None or not await pt.covers(name):
                raise
            return await self._blob_through(pt, name, d)
        if info.inline is None:
            url = await self.blobs.presigned_url(d)
            if url is not None:
                return Response(
                    b"",
                    status_code=307,
                    headers={"Location": url, "Docker-Content-Digest": str(d)},
                )
        headers = {
            "Docker-Content-Digest": str(d),
            "Accept-Ranges": "bytes",
            "ETag": f'"{d}"',
            "Cache-Control": "max-age=31536000",
            **DOWNLOAD_ONLY,
        }
        byte_range = _parse_range(request.headers.get("range"), info.size)
        if byte_range is None:
            stream = await self.blobs.open(info)
            headers["Content-Length"] = str(info.size)
            if info.size <= WHOLE_BODY_MAX:
                # A small blob (a config, a small layer) in one body: no streaming task group
                # (Starlette runs one per streamed response, with a task that listens for the
                # client going away), at most WHOLE_BODY_MAX held per request.
                body = b"".join([chunk async for chunk in stream])
                return Response(body, headers=headers, media_type="application/octet-stream")
            return StreamingResponse(stream, headers=headers, media_type="application/octet-stream")
        start, end = byte_range
        stream = await self.blobs.open(info, start, end - start + 1)
        headers["Content-Length"] = str(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        return StreamingResponse(
            stream, status_code=206, headers=headers, media_type="application/octet-stream"
        )

    async def _blob_through(self, pt: PullThrough, name: str, d: Digest) -> Response:
        """A blob a cache repository does not hold: fetched, stored and streamed at once (the
        whole blob, whatever Range asked: a partial answer cannot be verified)."""
        size, stream = await pt.blob(name, d)
        headers = {"Docker-Content-Digest": str(d), "ETag": f'"{d}"', **DOWNLOAD_ONLY}
        if size is not None:
            headers["Content-Length"] = str(size)
        return StreamingResponse(stream, headers=headers, media_type="application/octet-stream")

    async def blob_delete(self, request: Request, name: str, digest: str) -> Response:
        d = _parse_digest(digest)
        await self.policy.check(request, name, (DELETE,))
        await self.blobs.delete(name, d)
        return Response(b"", status_code=202, headers={"Docker-Content-Digest": str(d)})

    # --- uploads ----------------------------------------------------------------------------

    def _upload_headers(self, name: str, upload_id: str, size: int) -> dict[str, str]:
        return {
            "Location": self._url(f"/v2/{name}/blobs/uploads/{upload_id}"),
            "Range": _range_header(size),
            "Docker-Upload-UUID": upload_id,
        }

    def _blob_created(self, name: str, d: Digest) -> Response:
        return Response(
            b"",
            status_code=201,
            headers={
                "Location": self._url(f"/v2/{name}/blobs/{d}"),
                "Docker-Content-Digest": str(d),
            },
        )

    async def uploads_post(self, request: Request, name: str) -> Response:
        await self.policy.check(request, name, (PULL, PUSH))
        await self._refuse_cache_push(name)
        query = request.query_params
        mount, source = query.get("mount"), query.get("from")
        if mount is not None:
            d = _parse_digest(mount)
            if (
                source
                and valid_name(source)
                and await self.policy.allowed(request, source, (PULL,))
                and await self.blobs.mount(name, d, source)
            ):
                return self._blob_created(name, d)
            # Not mountable (or not visible to the caller): an ordinary upload, no hint why.
        elif query.get("digest") is not None:
            d = _parse_digest(query["digest"])
            await self.uploads.monolithic(name, d, _body(request))
            return self._blob_created(name, d)
        status = await self.uploads.start(name, _owner(request))
        headers = self._upload_headers(name, status.id, status.size)
        headers["OCI-Chunk-Min-Length"] = "0"
        return Response(b"", status_code=202, headers=headers)

    async def upload_get(self, request: Request, name: str, id: str) -> Response:
        await self.policy.check(request, name, (PUSH,))
        _check_upload_id(id)
        status = await self.uploads.status(name, id)
        return Response(
            b"", status_code=204, headers=self._upload_headers(name, status.id, status.size)
        )

    async def upload_patch(self, request: Request, name: str, id: str) -> Response:
        await self.policy.check(request, name, (PUSH,))
        _check_upload_id(id)
        content_range = _content_range(request)
        status = await self.uploads.append(name, id, _body(request), content_range)
        return Response(
            b"", status_code=202, headers=self._upload_headers(name, status.id, status.size)
        )

    async def upload_put(self, request: Request, name: str, id: str) -> Response:
        await self.policy.check(request, name, (PUSH,))
        _check_upload_id(id)
        raw = request.query_params.get("digest")
        if raw is None:
            raise RegistryError("DIGEST_INVALID", "the digest query parameter is required")
        d = _parse_digest(raw)
        content_range = _content_range(request)
        await self.uploads.finish(name, id, d, _body(request), content_range)
        return self._blob_created(name, d)

    async def upload_delete(self, request: Request, name: str, id: str) -> Response:
        await self.policy.check(request, name, (PUSH,))
        _check_upload_id(id)
        await self.uploads.cancel(name, id)
        return Response(b"", status_code=204)

    # --- referrers --------------------------------------------------------------------------

    async def referrers_get(self, request: Request, name: str, digest: str) -> Response:
        d = _parse_digest(digest)
        await self.policy.check(request, name, (PULL,))
        artifact_type = request.query_params.get("artifactType") or None
        if artifact_type is not None and not MEDIA_TYPE_RE.match(artifact_type):
            raise RegistryError("UNSUPPORTED", "artifactType must be a media type", status=400)
        descriptors = await self.manifests.referrers(name, d, artifact_type)
        headers = {}
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
        return _json(index, headers=headers, media_type=mt.OCI_INDEX)


def _audit_action(
    kind: str, method: str, params: dict[str, str], query: Any, response: Response
) -> str | None:
    if kind == "manifest":
        if method == "GET":
            return Action.MANIFEST_PULL
        if method == "PUT":
            return Action.MANIFEST_PUSH
        if method == "DELETE":
            return Action.MANIFEST_DELETE if ":" in params.get("ref", "") else Action.TAG_DELETE
    elif kind == "blob":
        if method == "GET":
            return Action.BLOB_PULL
        if method == "DELETE":
            return Action.BLOB_DELETE
    elif kind == "uploads":
        if "mount" in query and response.status_code == 201:
            return Action.BLOB_MOUNT
        if "digest" in query or response.status_code in (401, 403):
            return Action.BLOB_PUSH
    elif kind == "upload" and method == "PUT":
        return Action.BLOB_PUSH
    return None


MAX_TAGS_PER_PUSH = 100


def _tag_params(request: Request, reference: str) -> tuple[str, ...]:
    """The ``tag`` query parameters of a manifest PUT by digest (distribution-spec: push a
    manifest by digest and tag it in one request), validated; none for a push by tag."""
    tags = request.query_params.getlist("tag")
    if not tags:
        return ()
    if ":" not in reference:
        raise RegistryError(
            "TAG_INVALID", "the tag parameter applies to a push by digest, not by tag"
        )
    if len(tags) > MAX_TAGS_PER_PUSH:
        raise RegistryError("TAG_INVALID", f"at most {MAX_TAGS_PER_PUSH} tags in one push")
    for tag in tags:
        if not valid_tag(tag):
            raise RegistryError(
                "TAG_INVALID",
                "tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
                detail={"tag": tag[:200]},
            )
    return tuple(dict.fromkeys(tags))


def _owner(request: Request) -> str | None:
    """The account an upload session counts against (None without access control)."""
    principal = request.scope.get("moorage.principal")
    if principal is None or getattr(principal, "kind", "anonymous") == "anonymous":
        return None
    return f"{principal.kind}:{principal.name}"[:255]


def _check_upload_id(upload_id: str) -> None:
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", "no such upload", status=404)


def _body(request: Request) -> AsyncIterator[bytes]:
    return request.stream()


def _content_range(request: Request) -> ContentRange | None:
    raw = request.headers.get("content-range")
    if raw is None:
        return None
    try:
        cr = parse_content_range(raw)
    except ValueError as exc:
        raise RegistryError("RANGE_INVALID", str(exc)) from None
    length = request.headers.get("content-length")
    if length is not None and (not _DIGITS.fullmatch(length) or int(length) != cr.length):
        raise RegistryError(
            "RANGE_INVALID", "Content-Length does not match Content-Range", status=416
        )
    return cr


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range → inclusive (start, end); None means the whole blob.

    Syntactically invalid or multi-part ranges are ignored (RFC 9110 allows serving the whole
    representation); a well-formed range outside the blob is answered with 416.
    """
    if not value:
        return None
    value = value.strip()
    if not value.startswith("bytes=") or "," in value or len(value) > 60:
        return None
    spec = value[len("bytes=") :].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    if (first and not _DIGITS.fullmatch(first)) or (last and not _DIGITS.fullmatch(last)):
        return None
    if first == "" and last:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - n, 0), size - 1
    if not first:
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(end, size - 1)


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(
        "RANGE_INVALID",
        "requested range is not satisfiable",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _read_limited(stream: AsyncIterator[bytes], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        if len(buf) > limit:
            raise RegistryError(
                "SIZE_INVALID", f"manifest exceeds the {limit}-byte limit", status=413
            )
    return bytes(buf)
