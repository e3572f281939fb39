"""The registry client the fault tests act as: plain HTTP, digests checked on every byte.

Like docker and skopeo, it retries an idempotent GET once when the connection breaks (a node died
under it); it never retries an upload request blindly — it asks the session where to resume.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from ..clients.ocigen import MANIFEST_ACCEPT, Image, sha256
from ..registry.test_hostile import patch_chunk as patch_chunk  # the protocol tests' PATCH

RETRYABLE = (httpx.TransportError,)


class Refused(AssertionError):
    """The registry answered with an unexpected status."""

    def __init__(self, r: httpx.Response) -> None:
        super().__init__(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
        self.status = r.status_code


def expect(r: httpx.Response, status: int) -> httpx.Response:
    if r.status_code != status:
        raise Refused(r)
    return r


@dataclass
class Counters:
    """What the clients went through (reported by the tests, thread-safe)."""

    retries: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def retried(self, why: str) -> None:
        with self._lock:
            self.retries += 1
            self.errors.append(why)


def get_verified(
    http: httpx.Client,
    path: str,
    digest: str,
    counters: Counters,
    headers: dict[str, str] | None = None,
    pace: float = 0.0,
    on_stream: Callable[[], None] | None = None,
) -> tuple[bytes, str]:
    """GET *path* and check the body against *digest*; one retry on a broken connection.
    *pace* seconds of sleep per 64 KiB read make a slow client; *on_stream* is called once
    1 MiB of the body has arrived (the transfer is under way). Returns (body, the X-Moorage-Node that served it)."""
    for attempt in (1, 2):
        try:
            with http.stream("GET", path, headers=headers) as r:
                if r.status_code != 200:
                    r.read()
                    raise Refused(r)
                node = r.headers.get("x-moorage-node", "?")
                h = hashlib.sha256()
                parts = []
                for chunk in r.iter_bytes(1 << 16):
                    if on_stream is not None and len(parts) == 16:
                        on_stream()
                    h.update(chunk)
                    parts.append(chunk)
                    if pace:
                        threading.Event().wait(pace)
            body = b"".join(parts)
            if "sha256:" + h.hexdigest() != digest:
                raise AssertionError(f"GET {path}: body digest differs from {digest}")
            return body, node
        except RETRYABLE as exc:
            if attempt == 2:
                raise
            counters.retried(f"GET {path}: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


def push_blob(http: httpx.Client, repo: str, data: bytes, chunk: int = 0) -> str:
    """Monolithic upload (POST ?digest=), or with *chunk* a session: POST, PATCHes, PUT."""
    digest = sha256(data)
    if not chunk:
        r = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        expect(r, 201)
        return digest
    r = expect(http.post(f"/v2/{repo}/blobs/uploads/"), 202)
    location = r.headers["location"]
    for start in range(0, len(data), chunk):
        r = expect(patch_chunk(http, location, data[start : start + chunk], start), 202)
        location = r.headers["location"]
    expect(http.put(location, params={"digest": digest}), 201)
    return digest


def push_image(http: httpx.Client, repo: str, tag: str, image: Image, chunk: int = 0) -> None:
    for blob in [image.config, *image.layers]:
        push_blob(http, repo, blob.data, chunk)
    r = http.put(
        f"/v2/{repo}/manifests/{tag}",
        content=image.manifest.data,
        headers={"Content-Type": image.manifest.media_type},
    )
    expect(r, 201)
    assert r.headers.get("docker-content-digest") == image.digest


def pull_image(
    http: httpx.Client,
    repo: str,
    ref: str,
    image: Image,
    counters: Counters,
    pace: float = 0.0,
    on_stream: Callable[[], None] | None = None,
) -> list[str]:
    """Pull manifest and blobs, checking every digest; returns the nodes that served blobs."""
    manifest, _ = get_verified(
        http,
        f"/v2/{repo}/manifests/{ref}",
        image.digest,
        counters,
        headers={"Accept": MANIFEST_ACCEPT},
    )
    doc = json.loads(manifest)
    nodes = []
    for desc in [doc["config"], *doc["layers"]]:
        _, node = get_verified(
            http,
            f"/v2/{repo}/blobs/{desc['digest']}",
            desc["digest"],
            counters,
            pace=pace,
            on_stream=on_stream,
        )
        nodes.append(node)
    return nodes


def upload_offset(http: httpx.Client, location: str) -> int:
    """The committed size of an upload session (GET on its Location: 204 + Range)."""
    r = expect(http.get(location), 204)
    end = int(r.headers["range"].rsplit("-", 1)[1])
    return end + 1 if end else 0  # "0-0" is how an empty session is reported


def paced(data: bytes, piece: int, on_piece: int, action: threading.Event) -> Iterator[bytes]:
    """Yield *data* in pieces; after piece number *on_piece*, set *action* and wait for it to be
    cleared (the test kills a node there, mid-body)."""
    for i in range(0, len(data), piece):
        yield data[i : i + piece]
        if i // piece == on_piece:
            action.set()
            while action.is_set():
                threading.Event().wait(0.01)
