"""An async client for any OCI distribution / Docker Registry V2 registry.

Used by replication (push and pull), and later by pull-through caches, to talk to *another*
registry: Moorage, CNCF Distribution, Docker Hub, ghcr.io, quay.io, Harbor, ...

What it takes care of, so that callers only name repositories and digests:

* authentication: anonymous, Basic, and the Docker token flow (tokens fetched per set of scopes,
  cached, refreshed before expiry and after a 401);
* retries with exponential backoff and jitter on connection errors, 5xx and 429 (honouring
  ``Retry-After``) for every request whose body can be replayed;
* timeouts per connect/read/write, never a total one: a 5 GiB layer may take an hour, a peer that
  stops sending for ``read`` seconds may not;
* hostile peers: every body read is capped, JSON nesting is checked, every manifest and blob is
  verified against its digest, digests and names are validated before they go into a URL, and
  credentials are only sent to the registry's own origin (and to its token realm);
* an optional bandwidth limit shared with other clients (:class:`BandwidthLimiter`).

Blob downloads are streamed (:meth:`RegistryClient.open_blob`); uploads take async iterables so
that a copy streams source to destination without holding a layer in memory. The resumable
upload loop itself is in :mod:`moorage.replication.transfer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

from ..oci import mediatypes as mt
from ..oci.digest import Digest, InvalidDigest
from ..oci.manifest import Descriptor, ManifestError, parse_descriptor
from ..oci.names import valid_name, valid_tag
from .auth import CATALOG_SCOPE, repository_scope
from .bounds import header, load_json, read_bounded
from .errors import (
    DigestMismatch,
    NotFound,
    PeerProtocolError,
    PeerUnavailable,
    RegistryError,
    Unauthorized,
)
from .models import (
    MANIFEST_ACCEPT,
    MANIFEST_MEDIA_TYPES,
    Manifest,
    ManifestInfo,
    PingResult,
    PutResult,
    Referrers,
    RetryPolicy,
    Timeouts,
    TLSOptions,
    Upload,
    docker_hub_name,
    referrers_tag,
)
from .ratelimit import BandwidthLimiter
from .transport import (
    ERROR_BODY_LIMIT,
    Closing,
    Transport,
    content_type,
    discard,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MANIFEST_ACCEPT",
    "BlobStream",
    "Manifest",
    "ManifestInfo",
    "PingResult",
    "PutResult",
    "Referrers",
    "RegistryClient",
    "RetryPolicy",
    "TLSOptions",
    "Timeouts",
    "Upload",
    "docker_hub_name",
    "referrers_tag",
]

_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')
_RANGE = re.compile(r"^(?:bytes=)?(\d+)-(\d+)$")


def _check_name(name: str) -> str:
    if not valid_name(name):
        raise ValueError(f"invalid repository name {name[:100]!r}")
    return name


def _check_reference(ref: str) -> str:
    if ":" in ref:
        return str(Digest.parse(ref))
    if not valid_tag(ref):
        raise ValueError(f"invalid tag {ref[:100]!r}")
    return ref


class BlobStream:
    """An open blob download. Iterate :meth:`chunks` once; ``offset`` is where the bytes start
    (the requested offset, or 0 when the peer ignored the range), ``size`` the whole blob's size
    when known. With ``verify`` and offset 0 the digest is checked at the end of the stream."""

    def __init__(
        self,
        response: httpx.Response,
        digest: Digest,
        offset: int,
        size: int | None,
        verify: bool,
        limiter: BandwidthLimiter | None,
    ) -> None:
        self._response = response
        self._digest = digest
        self.offset = offset
        self.size = size
        self._verify = verify and offset == 0
        self._limiter = limiter

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        hasher = hashlib.new(self._digest.algorithm) if self._verify else None
        position = self.offset
        try:
            async for chunk in self._response.aiter_raw():
                if not chunk:
                    continue
                position += len(chunk)
                if self.size is not None and position > self.size:
                    raise PeerProtocolError(
                        f"blob {self._digest} is longer than its {self.size} bytes"
                    )
                if self._limiter is not None:
                    await self._limiter.acquire(len(chunk))
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk
        except httpx.TransportError as exc:
            raise PeerUnavailable(
                f"blob {self._digest} download broke at {position}: {exc!r}"
            ) from exc
        if self.size is not None and position != self.size:
            raise PeerUnavailable(
                f"blob {self._digest} download ended at {position} of {self.size} bytes"
            )
        if hasher is not None and hasher.hexdigest() != self._digest.hex:
            raise DigestMismatch(
                f"blob {self._digest} has digest {self._digest.algorithm}:{hasher.hexdigest()}"
            )

    async def aclose(self) -> None:
        await self._response.aclose()


class RegistryClient(Transport):
    """A client for one registry. Use as ``async with RegistryClient(...) as client:``.

    ``base_url`` is ``https://host[:port]`` (``http://`` for plain-HTTP registries);
    ``name_mapper`` rewrites repository names before they go into URLs (e.g.
    :func:`docker_hub_name`). ``auth_scheme="basic"`` sends the credentials with every request
    from the start instead of waiting for a challenge. ``transport`` is for tests that need a
    custom httpx transport.
    """

    _referrers_api: bool | None = None  # learnt on the first referrers call

    def _repo(self, name: str) -> str:
        _check_name(name)
        return _check_name(self.name_mapper(name)) if self.name_mapper else name

    # --- API ------------------------------------------------------------------------------------

    async def ping(self) -> PingResult:
        """``GET /v2/`` with authentication: checks that the URL is a registry and that the
        credentials (if any) are accepted ("check connection"). Raises on failure, except for
        a login demanded of a client without credentials (``authenticated=False``)."""
        try:
            result = await self._request("GET", "/v2/", scopes=(), what="GET /v2/", limit=65536)
        except Unauthorized:
            if self.credentials is not None:
                raise
            return PingResult(None, self._scheme, authenticated=False)
        assert result is not None
        response, _ = result
        return PingResult(response.headers.get("docker-distribution-api-version"), self._scheme)

    async def head_manifest(self, repo: str, ref: str) -> ManifestInfo | None:
        """The digest, media type and size the peer announces for *ref*, or None if absent.
        (A HEAD cannot be verified; use :meth:`get_manifest` for content.)"""
        name, ref = self._repo(repo), _check_reference(ref)
        result = await self._request(
            "HEAD",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "pull"),),
            what=f"HEAD manifest {name}:{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            missing_ok=True,
        )
        if result is None:
            return None
        response, _ = result
        announced = header(response, "docker-content-digest", self.limits)
        if announced is None:
            if ":" not in ref:
                manifest = await self.get_manifest(repo, ref)
                return ManifestInfo(manifest.digest, manifest.media_type, len(manifest.data))
            announced = ref
        try:
            digest = str(Digest.parse(announced.strip()))
        except InvalidDigest as exc:
            raise PeerProtocolError(f"HEAD manifest {name}:{ref}: {exc}") from None
        if ":" in ref and digest != ref:
            raise DigestMismatch(f"manifest {name}@{ref} announced as {digest}")
        size = response.headers.get("content-length", "")
        return ManifestInfo(digest, content_type(response), int(size) if size.isdecimal() else -1)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest's exact bytes, verified: against the digest when *ref* is one, and
        against ``Docker-Content-Digest`` when the peer sends it. Raises :class:`NotFound`."""
        name, ref = self._repo(repo), _check_reference(ref)
        result = await self._request(
            "GET",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "pull"),),
            what=f"GET manifest {name}:{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            limit=self.limits.max_manifest_bytes,
        )
        assert result is not None
        response, data = result
        expected: Digest | None = Digest.parse(ref) if ":" in ref else None
        announced = header(response, "docker-content-digest", self.limits)
        if expected is None and announced:
            try:
                expected = Digest.parse(announced.strip())
            except InvalidDigest:
                expected = None  # a malformed header: fall back to our own sha256
        algorithm = expected.algorithm if expected else "sha256"
        actual = hashlib.new(algorithm, data).hexdigest()
        if expected is not None and actual != expected.hex:
            raise DigestMismatch(
                f"manifest {name}:{ref} has digest {algorithm}:{actual}, expected {expected}"
            )
        media_type = content_type(response)
        if media_type not in MANIFEST_MEDIA_TYPES:
            # Generic or missing Content-Type: the document's own mediaType decides.
            doc = load_json(data, self.limits, f"manifest {name}:{ref}")
            declared = doc.get("mediaType") if isinstance(doc, dict) else None
            if isinstance(declared, str) and declared in MANIFEST_MEDIA_TYPES:
                media_type = declared
            elif isinstance(doc, dict):
                media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
        return Manifest(data, media_type, f"{algorithm}:{actual}")

    async def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> PutResult:
        """PUT a manifest by tag or digest; the peer must store exactly these bytes."""
        name, ref = self._repo(repo), _check_reference(ref)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ":" in ref:
            wanted = Digest.parse(ref)
            digest = f"{wanted.algorithm}:{hashlib.new(wanted.algorithm, data).hexdigest()}"
            if digest != ref:
                raise DigestMismatch(f"manifest bytes have digest {digest}, not {ref}")
        result = await self._request(
            "PUT",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "pull", "push"),),
            what=f"PUT manifest {name}:{ref}",
            headers={"Content-Type": media_type},
            content=data,
            ok=(200, 201, 202),
            limit=ERROR_BODY_LIMIT,
        )
        assert result is not None
        response, _ = result
        announced = header(response, "docker-content-digest", self.limits)
        if announced and announced.strip() != digest and announced.split(":", 1)[0] == "sha256":
            raise DigestMismatch(f"{name}:{ref} was stored as {announced.strip()}, not {digest}")
        return PutResult(digest, "oci-subject" in response.headers)

    async def delete_manifest(self, repo: str, ref: str) -> None:
        name, ref = self._repo(repo), _check_reference(ref)
        await self._request(
            "DELETE",
            f"/v2/{name}/manifests/{ref}",
            scopes=(repository_scope(name, "delete"),),
            what=f"DELETE manifest {name}:{ref}",
            ok=(200, 202, 204),
            limit=ERROR_BODY_LIMIT,
        )

    async def head_blob(self, repo: str, digest: str) -> int | None:
        """The blob's size if the repository holds it, else None."""
        name, d = self._repo(repo), Digest.parse(digest)
        url = self._url(f"/v2/{name}/blobs/{d}")
        response = await self._follow("HEAD", url, (repository_scope(name, "pull"),))
        async with contextlib.aclosing(Closing(response)):
            if response.status_code == 404:
                return None
            await self._raise_for_status(response, f"HEAD blob {name}@{d}")
            size = response.headers.get("content-length", "")
            return int(size) if size.isdecimal() else -1

    @contextlib.asynccontextmanager
    async def open_blob(
        self,
        repo: str,
        digest: str,
        *,
        offset: int = 0,
        size: int | None = None,
        verify: bool = True,
    ) -> AsyncIterator[BlobStream]:
        """Stream a blob, from *offset* if the peer honours ranges (check ``stream.offset``).
        ``size`` (from the descriptor) bounds the stream; with ``verify`` a download from 0 is
        checked against the digest when its last chunk has been read."""
        name, d = self._repo(repo), Digest.parse(digest)
        url = self._url(f"/v2/{name}/blobs/{d}")
        headers = {"Range": f"bytes={offset}-"} if offset else None
        response = await self._follow("GET", url, (repository_scope(name, "pull"),), headers)
        try:
            start = 0
            if response.status_code == 206:
                m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("content-range", ""))
                if m is None or int(m.group(1)) != offset:
                    raise PeerProtocolError(f"blob {d}: bad Content-Range for a range request")
                start = offset
            elif response.status_code != 200:
                await self._raise_for_status(response, f"GET blob {name}@{d}")
                raise RegistryError(response.status_code, f"GET blob {name}@{d}: unexpected status")
            if size is None and response.status_code == 200:
                length = response.headers.get("content-length", "")
                size = int(length) if length.isdecimal() else None
            yield BlobStream(response, d, start, size, verify, self.limiter)
        finally:
            await response.aclose()

    # --- uploads ------------------------------------------------------------------------------

    async def start_upload(
        self, repo: str, mount: str | None = None, from_repo: str | None = None
    ) -> Upload | None:
        """Open an upload session; with ``mount``/``from_repo`` try a cross-repository mount
        first. Returns None when the blob was mounted, else the session (a refused mount also
        opens one, as the spec says)."""
        name = self._repo(repo)
        scopes = [repository_scope(name, "pull", "push")]
        path = f"/v2/{name}/blobs/uploads/"
        if mount is not None and from_repo is not None:
            source = self._repo(from_repo)
            scopes.append(repository_scope(source, "pull"))
            path += f"?mount={Digest.parse(mount)}&from={source}"
        result = await self._request(
            "POST",
            path,
            scopes=tuple(scopes),
            what=f"start upload to {name}",
            ok=(201, 202),
            limit=ERROR_BODY_LIMIT,
        )
        assert result is not None
        response, _ = result
        if response.status_code == 201 and mount is not None:
            return None
        location = header(response, "location", self.limits)
        if not location:
            raise PeerProtocolError(f"start upload to {name}: no Location")
        return Upload(name, self._resolve(response.request.url, location), 0)

    def _upload_scopes(self, upload: Upload) -> tuple[str, ...]:
        return (repository_scope(upload.repo, "pull", "push"),)

    def _take_location(self, upload: Upload, response: httpx.Response) -> None:
        location = header(response, "location", self.limits)
        if location:
            upload.location = self._resolve(response.request.url, location)

    def _acknowledged(self, response: httpx.Response) -> int | None:
        value = header(response, "range", self.limits)
        m = _RANGE.match(value.strip()) if value else None
        if m is None:
            return None
        start, end = int(m.group(1)), int(m.group(2))
        # "0-0" is what Distribution says for an empty session (and for one byte): read it as
        # empty; a wrong guess only costs a refused chunk and a fresh session.
        return 0 if end == 0 else end + 1 if start == 0 else None

    async def upload_status(self, upload: Upload) -> int | None:
        """Ask the peer how many bytes of the session it holds (``GET`` on the location, its
        ``Range``); None when it no longer knows the session."""
        response = await self._send("GET", upload.location, scopes=self._upload_scopes(upload))
        async with contextlib.aclosing(Closing(response)):
            if response.status_code == 404:
                return None
            await self._raise_for_status(response, "upload status")
            self._take_location(upload, response)
            offset = self._acknowledged(response)
            if offset is None:
                raise PeerProtocolError("upload status without a usable Range header")
            upload.offset = offset
            return offset

    def _limited(self, body: AsyncIterable[bytes]) -> AsyncIterable[bytes]:
        limiter = self.limiter
        if limiter is None:
            return body

        async def gen() -> AsyncIterator[bytes]:
            async for chunk in body:
                await limiter.acquire(len(chunk))
                yield chunk

        return gen()

    async def upload_chunk(self, upload: Upload, body: AsyncIterable[bytes], length: int) -> None:
        """PATCH *length* bytes at the session's offset (``Content-Range``); on success the
        session's location and acknowledged offset advance. Not retried (the body is a stream):
        on failure ask :meth:`upload_status` where to go on from."""
        start = upload.offset
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{start}-{start + length - 1}",
        }
        response = await self._send(
            "PATCH",
            upload.location,
            scopes=self._upload_scopes(upload),
            headers=headers,
            content=self._limited(body),
        )
        async with contextlib.aclosing(Closing(response)):
            if response.status_code == 404:
                raise NotFound(404, "upload session is gone")
            await self._raise_for_status(response, "upload chunk")
            self._take_location(upload, response)
            acknowledged = self._acknowledged(response)
            upload.offset = start + length if acknowledged is None else acknowledged

    async def finish_upload(
        self,
        upload: Upload,
        digest: str,
        body: AsyncIterable[bytes] | bytes | None = None,
        length: int = 0,
    ) -> None:
        """The closing ``PUT ?digest=``, optionally carrying the last *length* bytes."""
        d = Digest.parse(digest)
        url = upload.location.copy_merge_params({"digest": str(d)})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        content: AsyncIterable[bytes] | bytes = b""
        if isinstance(body, bytes):
            content = body
        elif body is not None:
            content = self._limited(body)
        response = await self._send(
            "PUT", url, scopes=self._upload_scopes(upload), headers=headers, content=content
        )
        async with contextlib.aclosing(Closing(response)):
            if response.status_code == 404:
                raise NotFound(404, "upload session is gone")
            await self._raise_for_status(response, f"finish upload of {d}")
            announced = header(response, "docker-content-digest", self.limits)
            if announced and announced.strip() != str(d):
                raise DigestMismatch(f"the peer stored {announced.strip()} for {d}")
            upload.offset += length

    async def cancel_upload(self, upload: Upload) -> None:
        """Best effort: the peer's purge reclaims the session anyway."""
        with contextlib.suppress(Exception):
            response = await self._send(
                "DELETE", upload.location, scopes=self._upload_scopes(upload)
            )
            await discard(response)

    async def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a small blob in one request pair (POST, PUT with the body); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        upload = await self.start_upload(repo)
        assert upload is not None
        await self.finish_upload(upload, digest, data, len(data))
        return digest

    # --- listings -------------------------------------------------------------------------------

    async def _paginate(
        self, path: str, key: str, scopes: tuple[str, ...], page_size: int | None, what: str
    ) -> list[str]:
        out: list[str] = []
        next_path: str | None = path + (f"?n={page_size}" if page_size else "")
        pages = 0
        while next_path is not None:
            pages += 1
            if pages > self.limits.max_pages:
                raise PeerProtocolError(f"{what}: more than {self.limits.max_pages} pages")
            result = await self._request("GET", next_path, scopes=scopes, what=what)
            assert result is not None
            response, body = result
            doc = load_json(body, self.limits, what)
            items = doc.get(key) if isinstance(doc, dict) else None
            if items is None:
                items = []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise PeerProtocolError(f"{what}: '{key}' is not a list of strings")
            out.extend(items)
            if len(out) > self.limits.max_entries:
                raise PeerProtocolError(f"{what}: more than {self.limits.max_entries} entries")
            next_path = self._next_page(response, path)
        return out

    def _next_page(self, response: httpx.Response, path: str) -> str | None:
        link = header(response, "link", self.limits)
        m = _LINK_NEXT.search(link) if link else None
        if m is None:
            return None
        url = self._resolve(response.request.url, m.group(1))
        # Follow only to the same endpoint on the same registry.
        base_path = self.base_url.path.rstrip("/")
        if not self._same_origin(url) or url.path != base_path + path:
            raise PeerProtocolError(f"pagination link {m.group(1)[:100]!r} leaves the endpoint")
        return url.raw_path.decode("ascii")[len(base_path) :]

    async def tags(self, repo: str, page_size: int | None = None) -> list[str]:
        """Every tag of the repository (all pages). Raises :class:`NotFound`."""
        name = self._repo(repo)
        return await self._paginate(
            f"/v2/{name}/tags/list",
            "tags",
            (repository_scope(name, "pull"),),
            page_size,
            f"tags of {name}",
        )

    async def catalog(self, page_size: int | None = None) -> list[str]:
        """Every repository name the peer lists (``/v2/_catalog``, all pages)."""
        return await self._paginate(
            "/v2/_catalog", "repositories", (CATALOG_SCOPE,), page_size, "catalog"
        )

    async def referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> Referrers:
        """Referrers of *digest*: the OCI 1.1 referrers API when the peer has it, else the
        referrers tag schema (``sha256-<hex>`` tag holding an index)."""
        name, d = self._repo(repo), Digest.parse(digest)
        if self._referrers_api is not False:
            url = self._url(f"/v2/{name}/referrers/{d}")
            response = await self._send(
                "GET",
                url,
                scopes=(repository_scope(name, "pull"),),
                headers={"Accept": mt.OCI_INDEX},
            )
            async with contextlib.aclosing(Closing(response)):
                if response.status_code == 200:
                    self._referrers_api = True
                    body = await read_bounded(response, self.limits.max_manifest_bytes, "referrers")
                    found = self._descriptors(body, f"referrers of {d}")
                    filtered = [
                        x for x in found if not artifact_type or x.artifact_type == artifact_type
                    ]
                    return Referrers(filtered, "api")
                if response.status_code not in (404, 400, 405, 501):
                    await self._raise_for_status(response, f"referrers of {d}")
                # A router's 404 (not an OCI error body) means: no referrers API at all.
                if not content_type(response).endswith("json"):
                    self._referrers_api = False
        try:
            index = await self.get_manifest(repo, referrers_tag(str(d)))
        except NotFound:
            return Referrers([], "none")
        found = self._descriptors(index.data, f"referrers tag of {d}")
        filtered = [x for x in found if not artifact_type or x.artifact_type == artifact_type]
        return Referrers(filtered, "tag", index)

    def _descriptors(self, body: bytes, what: str) -> list[Descriptor]:
        doc = load_json(body, self.limits, what)
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if manifests is None:
            return []
        if not isinstance(manifests, list) or len(manifests) > self.limits.max_index_children:
            raise PeerProtocolError(
                f"{what}: 'manifests' is not a list of at most "
                f"{self.limits.max_index_children} descriptors"
            )
        try:
            return [parse_descriptor(m, f"{what}[{i}]") for i, m in enumerate(manifests)]
        except ManifestError as exc:
            raise PeerProtocolError(str(exc)) from None
