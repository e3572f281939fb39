"""Hostile requests against a real server: every answer is a spec error, never a crash.

distribution-spec "Error Codes": a 4XX answer carries ``{"errors": [{"code", "message", ...}]}``
with one of the spec's codes. Whatever a client sends — traversal in names and digests, control
characters, malformed ranges, lies about lengths, garbage and gigantic bodies, other repositories'
upload ids — the registry answers with the right status and such a body: never a 500, never a
traceback or an HTML page, and nothing partial becomes visible. An autouse fixture checks the
server log after every test; the last test checks that the server is still healthy.

Requests that httpx would normalize or refuse (literal ``..`` segments, backslashes, huge
declared lengths) are written to a raw socket.

Tests marked ``xfail(strict=True, reason="bug: ...")`` pin known bugs in moorage; they send an
``X-Request-Id: knownbug-...`` so that the traceback a known bug leaves in the log is told apart
from a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import MoorageServer, image_manifest, push_blob, put_manifest, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# distribution-spec "Error Codes" (plus UNAVAILABLE/UNKNOWN, which Distribution also uses).
SPEC_CODES = {
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "TAG_INVALID",
    "RANGE_INVALID",
    "UNAVAILABLE",
    "UNKNOWN",
}

HEX = hashlib.sha256(b"moorage hostile").hexdigest()
SOME_DIGEST = f"sha256:{HEX}"


# --- helpers ------------------------------------------------------------------------------------


def known_bug() -> dict[str, str]:
    """Headers tagging a request that triggers a known (xfailed) bug."""
    return {"X-Request-Id": f"knownbug-{uuid.uuid4().hex}"}


@dataclass
class RawResponse:
    status_code: int
    headers: Mapping[str, str]  # lower-cased names
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def raw_request(
    server: MoorageServer,
    method: str,
    target: bytes | str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    send_content_length: bool = True,
) -> RawResponse:
    """One HTTP/1.1 request written byte for byte (no client-side normalization)."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {server.host}".encode()]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    if send_content_length and (body or method in ("PUT", "POST", "PATCH")):
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(data)
        received = bytearray()
        while chunk := s.recv(65536):
            received += chunk
    head, _, payload = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return RawResponse(int(status_line.split()[1]), parsed, payload)


def _dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def assert_error(
    r: httpx.Response | RawResponse, status: int | set[int], *codes: str
) -> dict[str, object]:
    """A spec error: expected status, JSON error body, a spec code (one of *codes* if given)."""
    statuses = {status} if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    assert r.status_code != 500
    content_type = r.headers.get("content-type", "")
    assert content_type.startswith("application/json"), (content_type, r.text[:300])
    assert r.headers.get("docker-distribution-api-version") == "registry/2.0"
    text = r.text
    assert "Traceback" not in text and "<html" not in text.lower()
    assert len(r.content) < 4096, "error bodies must not echo huge input back"
    body = json.loads(r.content)
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    for err in errors:
        assert isinstance(err.get("code"), str) and err["code"] in SPEC_CODES, err
        assert isinstance(err.get("message"), str) and err["message"], err
    if codes:
        assert errors[0]["code"] in codes, (errors[0], codes)
    return errors[0]  # type: ignore[no-any-return]


def assert_head_error(r: httpx.Response, status: int | set[int]) -> None:
    """HEAD: the status alone (RFC 9110: no body)."""
    statuses = {status} if isinstance(status, int) else status
    assert r.status_code in statuses, r.status_code
    assert r.content == b""


def start_upload(client: httpx.Client, repo: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return str(r.headers["Location"])


def patch_chunk(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    return client.patch(
        location,
        content=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
        },
    )


def upload_size(client: httpx.Client, location: str) -> int:
    """The upload's current size, from its status (spec: Range: 0-<end>)."""
    r = client.get(location)
    assert r.status_code == 204, r.text
    end = int(r.headers["Range"].split("-")[1])
    return 0 if end == 0 and r.headers["Range"] == "0-0" else end + 1


def blob_absent(client: httpx.Client, repo: str, digest: str) -> None:
    assert_head_error(client.head(f"/v2/{repo}/blobs/{digest}"), 404)
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def xfail_on_postgresql(
    request: pytest.FixtureRequest, backend: tuple[str, str | None], reason: str
) -> None:
    if backend[0] == "postgresql":
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.M)


def unexpected_tracebacks(log_text: str) -> list[str]:
    """Log records carrying a traceback, except those of requests tagged by known_bug()."""
    starts = [m.start() for m in _RECORD.finditer(log_text)] or [0]
    records = [log_text[a:b] for a, b in zip(starts, [*starts[1:], len(log_text)], strict=True)]
    if starts[0] > 0:
        records.insert(0, log_text[: starts[0]])
    return [r for r in records if "Traceback" in r and "[knownbug-" not in r.split("\n", 1)[0]]


@pytest.fixture(autouse=True)
def no_unexpected_traceback(server: MoorageServer) -> Iterator[None]:
    assert server.log_path is not None
    offset = server.log_path.stat().st_size
    yield
    with open(server.log_path, "rb") as f:
        f.seek(offset)
        new = f.read().decode("utf-8", "replace")
    assert not unexpected_tracebacks(new), "\n".join(unexpected_tracebacks(new))[:5000]


# --- path traversal ------------------------------------------------------------------------------


class TestPathTraversal:
    """distribution-spec <name> grammar and image-spec digest grammar: '..', '%2e%2e', encoded
    slashes, NUL and backslashes never form a valid name, tag, digest or upload id, so they are
    refused (NAME_INVALID / TAG_INVALID / DIGEST_INVALID) or unknown (404) — never a file access."""

    @pytest.mark.parametrize(
        ("method", "target", "status", "codes"),
        [
            ("GET", "/v2/../../etc/passwd/manifests/x", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a/../../etc/manifests/latest", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a/..%2f..%2fetc/blobs/" + SOME_DIGEST, 400, {"NAME_INVALID"}),
            ("GET", "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/latest", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a/%2E%2E/b/tags/list", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a/%2e%2e%2f%2e%2e%2fetc/tags/list", 400, {"NAME_INVALID"}),
            ("POST", "/v2/../x/blobs/uploads/", 400, {"NAME_INVALID"}),
            ("PUT", "/v2/a/../../x/manifests/latest", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a%00b/tags/list", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a\\..\\b/tags/list", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a%5c..%5cb/tags/list", 400, {"NAME_INVALID"}),
            ("GET", "/v2/a/blobs/sha256:..", 400, {"DIGEST_INVALID"}),
            ("GET", "/v2/a/blobs/sha256:%2e%2e", 400, {"DIGEST_INVALID"}),
            ("GET", "/v2/a/blobs/..%5c..%5cetc%5cpasswd", 400, {"DIGEST_INVALID"}),
            ("GET", "/v2/a/blobs/sha256:..%5c..%5cetc", 400, {"DIGEST_INVALID"}),
            ("GET", "/v2/a/blobs/" + SOME_DIGEST + "%00", 400, {"DIGEST_INVALID"}),
            ("GET", "/v2/a/blobs/%00", 400, {"DIGEST_INVALID"}),
            ("DELETE", "/v2/a/blobs/sha256:%2e%2e%2f%2e%2e", {400, 404}, set()),
            ("GET", "/v2/a/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd", {400, 404}, set()),
            ("GET", "/v2/a/manifests/..", 404, {"MANIFEST_UNKNOWN"}),
            ("GET", "/v2/a/manifests/%2e%2e", 404, {"MANIFEST_UNKNOWN"}),
            ("GET", "/v2/a/manifests/latest%00", 404, {"MANIFEST_UNKNOWN"}),
            ("GET", "/v2/a/manifests/..%5c..%5cx", 404, {"MANIFEST_UNKNOWN"}),
            ("GET", "/v2/a/manifests/sha256:..%5c..", 404, {"MANIFEST_UNKNOWN"}),
            ("GET", "/v2/a/manifests/..%2f..%2fetc%2fpasswd", {400, 404}, set()),
            ("GET", "/v2/a/referrers/sha256:..", 400, {"DIGEST_INVALID"}),
            ("GET", "/v2/a/blobs/uploads/..", 404, {"BLOB_UPLOAD_UNKNOWN"}),
            ("PATCH", "/v2/a/blobs/uploads/%2e%2e", 404, {"BLOB_UPLOAD_UNKNOWN"}),
            ("PUT", "/v2/a/blobs/uploads/..?digest=" + SOME_DIGEST, 404, {"BLOB_UPLOAD_UNKNOWN"}),
            ("DELETE", "/v2/a/blobs/uploads/..%5c..%5cx", 404, {"BLOB_UPLOAD_UNKNOWN"}),
            ("PATCH", "/v2/a/blobs/uploads/..%2f..%2fdata", {400, 404}, set()),
        ],
    )
    def test_traversal_is_refused(
        self,
        server: MoorageServer,
        method: str,
        target: str,
        status: int | set[int],
        codes: set[str],
    ) -> None:
        body = b"{}" if method in ("PUT", "PATCH") else b""
        r = raw_request(server, method, target, body=body)
        assert_error(r, status, *codes)

    def test_traversal_in_the_digest_of_a_push_is_refused(
        self, client: httpx.Client, repo: str
    ) -> None:
        for digest in ("sha256:../../../../tmp/x", "sha256:..%2f..%2fx", "sha256:/etc/passwd"):
            r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=b"x")
            assert_error(r, 400, "DIGEST_INVALID")
            loc = start_upload(client, repo)
            assert_error(
                client.put(loc, params={"digest": digest}, content=b"x"), 400, "DIGEST_INVALID"
            )


# --- names and tags -------------------------------------------------------------------------------


class TestNameAndTagGrammar:
    """distribution-spec: <name> is lowercase components ([a-z0-9] with '.', '_', '__', '-+'
    separators), 255 characters at most here → NAME_INVALID; a tag is
    [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} → TAG_INVALID."""

    BAD_NAMES = [
        "Upper/case",
        "library/Ubuntu",
        "a..b",
        "-a",
        "a-",
        "_a",
        "a/.b",
        "a___b",
        "caf%C3%A9",
        "a%20b",
        "a:b",
        "a@b",
        "x" * 256,
        "a/" * 130 + "a",
    ]

    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_invalid_names_on_every_endpoint(self, client: httpx.Client, name: str) -> None:
        assert_error(client.get(f"/v2/{name}/manifests/latest"), 400, "NAME_INVALID")
        assert_error(put_manifest(client, name, "latest", b"{}"), 400, "NAME_INVALID")
        assert_error(client.delete(f"/v2/{name}/manifests/latest"), 400, "NAME_INVALID")
        assert_error(client.get(f"/v2/{name}/blobs/{SOME_DIGEST}"), 400, "NAME_INVALID")
        assert_error(client.post(f"/v2/{name}/blobs/uploads/"), 400, "NAME_INVALID")
        assert_error(
            client.post(
                f"/v2/{name}/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"
            ),
            400,
            "NAME_INVALID",
        )
        assert_error(
            client.patch(f"/v2/{name}/blobs/uploads/{uuid.uuid4()}", content=b"x"),
            400,
            "NAME_INVALID",
        )
        assert_error(client.get(f"/v2/{name}/tags/list"), 400, "NAME_INVALID")
        assert_error(client.get(f"/v2/{name}/referrers/{SOME_DIGEST}"), 400, "NAME_INVALID")
        assert_head_error(client.head(f"/v2/{name}/manifests/latest"), 400)

    def test_name_length_boundary(self, client: httpx.Client) -> None:
        longest = "n" + uuid.uuid4().hex + "z" * (255 - 33)
        assert len(longest) == 255
        assert_error(client.get(f"/v2/{longest}/tags/list"), 404, "NAME_UNKNOWN")
        assert_error(client.get(f"/v2/{longest}z/tags/list"), 400, "NAME_INVALID")
        push_blob(client, longest, b"the longest name still works")

    @pytest.mark.parametrize(
        "tag",
        [
            ".hidden",
            "-flag",
            "a" * 129,
            "a" * 5000,
            "a%20b",
            "%C3%A9",
            "a+b",
            "a%00",
            "a%0Ab",
            "%0Alatest",
        ],
    )
    def test_invalid_tags(self, client: httpx.Client, repo: str, tag: str) -> None:
        payload = image_manifest(client, repo)
        assert_error(put_manifest(client, repo, tag, payload), 400, "TAG_INVALID")
        # A manifest that cannot exist is unknown to reads and deletes (only PUT says invalid).
        assert_error(client.get(f"/v2/{repo}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
        assert_error(client.delete(f"/v2/{repo}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
        assert_head_error(client.head(f"/v2/{repo}/manifests/{tag}"), 404)
        assert client.get(f"/v2/{repo}/tags/list").json().get("tags") in ([], None)

    def test_tag_length_boundary(self, client: httpx.Client, repo: str) -> None:
        payload = image_manifest(client, repo)
        assert put_manifest(client, repo, "t" * 128, payload).status_code == 201
        assert_error(put_manifest(client, repo, "t" * 129, payload), 400, "TAG_INVALID")
        assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["t" * 128]

    def test_tag_with_trailing_newline_is_invalid(self, client: httpx.Client, repo: str) -> None:
        payload = image_manifest(client, repo)
        assert_error(put_manifest(client, repo, "latest%0A", payload), 400, "TAG_INVALID")


# --- digests -------------------------------------------------------------------------------------


MALFORMED_DIGESTS = [
    "sha256:" + HEX.upper(),
    "SHA256:" + HEX,
    "sha256:" + HEX[:-1],
    "sha256:" + HEX + "0",
    "sha256:",
    "sha256",
    ":" + HEX,
    HEX,
    "sha256:" + "g" * 64,
    "sha256:%20" + HEX[1:],
    "sha256:" + HEX + "%20",
    "sha256:" + HEX + "%0D%0A",
    "sha256:" + "%C3%A9" * 32,
    "sha512:" + HEX,
    "sha256:" + "a" * 5000,
]
UNSUPPORTED_DIGESTS = [
    "md5:" + hashlib.md5(b"x").hexdigest(),
    "sha1:" + hashlib.sha1(b"x").hexdigest(),
    "sha384:" + hashlib.sha384(b"x").hexdigest(),
    "blake3:" + "a" * 64,
]


class TestDigests:
    """image-spec digests: only sha256/sha512, lowercase hex of the exact length → otherwise
    DIGEST_INVALID (400). distribution-spec "Pushing blobs": content not matching the digest is
    refused with DIGEST_INVALID and never becomes visible (HEAD 404 afterwards)."""

    @pytest.mark.parametrize("digest", MALFORMED_DIGESTS + UNSUPPORTED_DIGESTS)
    def test_malformed_or_unsupported_digest_everywhere(
        self, client: httpx.Client, repo: str, digest: str
    ) -> None:
        push_blob(client, repo, b"so the repository exists")
        assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")
        assert_head_error(client.head(f"/v2/{repo}/blobs/{digest}"), 400)
        assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")
        assert_error(client.get(f"/v2/{repo}/referrers/{digest}"), 400, "DIGEST_INVALID")
        # As a manifest reference it is neither a tag nor a digest: a manifest that cannot
        # exist (404), as in CNCF Distribution.
        assert_error(client.get(f"/v2/{repo}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
        r = client.post(f"/v2/{repo}/blobs/uploads/?digest={digest}", content=b"x")
        assert_error(r, 400, "DIGEST_INVALID")
        loc = start_upload(client, repo)
        assert_error(client.put(f"{loc}?digest={digest}", content=b"x"), 400, "DIGEST_INVALID")
        r = client.post(f"/v2/{repo}/blobs/uploads/?mount={digest}&from={repo}")
        assert_error(r, 400, "DIGEST_INVALID")

    def test_digest_with_trailing_newline_is_invalid(self, client: httpx.Client, repo: str) -> None:
        digest = push_blob(client, repo, b"newline")
        assert_error(client.get(f"/v2/{repo}/blobs/{digest}%0A"), 400, "DIGEST_INVALID")

    def test_put_without_digest(self, client: httpx.Client, repo: str) -> None:
        loc = start_upload(client, repo)
        assert_error(client.put(loc, content=b"data"), 400, "DIGEST_INVALID")
        assert_error(client.put(f"{loc}?digest=", content=b"data"), 400, "DIGEST_INVALID")

    @pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
    def test_wrong_digest_monolithic_post(
        self, client: httpx.Client, repo: str, algorithm: str
    ) -> None:
        data = os.urandom(5000)
        wrong = f"{algorithm}:" + hashlib.new(algorithm, data + b"!").hexdigest()
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
        assert_error(r, 400, "DIGEST_INVALID")
        blob_absent(client, repo, wrong)
        blob_absent(client, repo, f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest())

    def test_wrong_digest_monolithic_put(self, client: httpx.Client, repo: str) -> None:
        data = os.urandom(5000)
        wrong = sha256(b"something else")
        loc = start_upload(client, repo)
        assert_error(client.put(loc, params={"digest": wrong}, content=data), 400, "DIGEST_INVALID")
        blob_absent(client, repo, wrong)
        blob_absent(client, repo, sha256(data))

    def test_wrong_digest_chunked(self, client: httpx.Client, repo: str) -> None:
        data = os.urandom(3000)
        wrong = sha256(data[:-1])
        loc = start_upload(client, repo)
        assert patch_chunk(client, loc, data[:1000], 0).status_code == 202
        assert patch_chunk(client, loc, data[1000:], 1000).status_code == 202
        assert_error(client.put(loc, params={"digest": wrong}), 400, "DIGEST_INVALID")
        blob_absent(client, repo, wrong)
        blob_absent(client, repo, sha256(data))

    def test_wrong_digest_on_an_empty_upload(self, client: httpx.Client, repo: str) -> None:
        loc = start_upload(client, repo)
        wrong = sha256(b"not empty")
        assert_error(client.put(loc, params={"digest": wrong}), 400, "DIGEST_INVALID")
        blob_absent(client, repo, wrong)

    def test_cannot_overwrite_an_existing_digest_with_other_bytes(
        self, client: httpx.Client, repo: str
    ) -> None:
        genuine = os.urandom(2000)
        digest = push_blob(client, repo, genuine)
        other = f"{repo}-attacker"
        r = client.post(
            f"/v2/{other}/blobs/uploads/", params={"digest": digest}, content=b"evil" * 500
        )
        assert_error(r, 400, "DIGEST_INVALID")
        blob_absent(client, other, digest)
        assert client.get(f"/v2/{repo}/blobs/{digest}").content == genuine

    def test_manifest_pushed_by_a_digest_it_does_not_have(
        self, client: httpx.Client, repo: str
    ) -> None:
        payload = image_manifest(client, repo)
        wrong = sha256(payload + b" ")
        assert_error(put_manifest(client, repo, wrong, payload), 400, "DIGEST_INVALID")
        assert_error(client.get(f"/v2/{repo}/manifests/{wrong}"), 404, "MANIFEST_UNKNOWN")
        assert_error(client.get(f"/v2/{repo}/manifests/{sha256(payload)}"), 404, "MANIFEST_UNKNOWN")


# --- chunked uploads -----------------------------------------------------------------------------


class TestChunkRanges:
    """distribution-spec "Pushing a blob in chunks": Content-Range is the inclusive byte range of
    the chunk; a chunk that does not start where the upload ends (gap, overlap, replay) is answered
    416 with Range: 0-<last byte received>, and the session stays usable from that offset."""

    def _upload_with(self, client: httpx.Client, repo: str, data: bytes) -> str:
        loc = start_upload(client, repo)
        r = patch_chunk(client, loc, data, 0)
        assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
        return loc

    @pytest.mark.parametrize(
        "bad_start",
        [
            pytest.param(5, id="gap"),
            pytest.param(1, id="overlap"),
            pytest.param(0, id="replay"),
            pytest.param(10**12, id="far-ahead"),
        ],
    )
    def test_out_of_order_chunk_is_416_and_the_upload_continues(
        self, client: httpx.Client, repo: str, bad_start: int
    ) -> None:
        first, rest = os.urandom(3), os.urandom(4)
        loc = self._upload_with(client, repo, first)
        r = patch_chunk(client, loc, b"zzz", bad_start)
        assert_error(r, 416, "RANGE_INVALID")
        assert r.headers["Range"] == "0-2"
        # Right after the refusal, the correct chunk is accepted (the session is not left locked).
        r = patch_chunk(client, loc, rest, 3)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == "0-6"
        r = client.put(loc, params={"digest": sha256(first + rest)})
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/{repo}/blobs/{sha256(first + rest)}").content == first + rest

    def test_first_chunk_not_at_zero(self, client: httpx.Client, repo: str) -> None:
        loc = start_upload(client, repo)
        r = patch_chunk(client, loc, b"abc", 1)
        assert_error(r, 416, "RANGE_INVALID")
        assert r.headers.get("Range") == "0-0"
        assert patch_chunk(client, loc, b"abc", 0).status_code == 202

    def test_out_of_order_final_put(self, client: httpx.Client, repo: str) -> None:
        loc = self._upload_with(client, repo, b"abc")
        r = client.put(
            loc,
            params={"digest": sha256(b"abcdef")},
            content=b"def",
            headers={"Content-Range": "4-6"},
        )
        assert_error(r, 416, "RANGE_INVALID")
        assert r.headers["Range"] == "0-2"
        blob_absent(client, repo, sha256(b"abcdef"))
        r = client.put(
            loc,
            params={"digest": sha256(b"abcdef")},
            content=b"def",
            headers={"Content-Range": "3-5"},
        )
        assert r.status_code == 201, r.text

    @pytest.mark.parametrize(
        "content_range",
        [
            "abc",
            "",
            "3-1",
            "-1-2",
            "0-",
            "-2",
            "1-2-3",
            "0x0-0x2",
            "bytes 0-2/3",
            "0 - 2",
            "²-³",
            "99999999999999999999999999999999999999999-0",
            "0-" + "9" * 50,
        ],
    )
    def test_malformed_content_range(
        self, client: httpx.Client, repo: str, content_range: str
    ) -> None:
        loc = self._upload_with(client, repo, b"abc")
        r = client.patch(
            loc,
            content=b"def",
            headers={"Content-Range": content_range.encode("latin-1")},  # type: ignore[dict-item]
        )
        assert_error(r, {400, 416}, "RANGE_INVALID", "BLOB_UPLOAD_INVALID")
        assert upload_size(client, loc) == 3

    @pytest.mark.parametrize(("content_range", "body"), [("3-12", b"def"), ("3-4", b"defgh")])
    def test_content_range_disagrees_with_content_length(
        self, client: httpx.Client, repo: str, content_range: str, body: bytes
    ) -> None:
        loc = self._upload_with(client, repo, b"abc")
        r = client.patch(loc, content=body, headers={"Content-Range": content_range})
        assert_error(r, {400, 416}, "RANGE_INVALID", "BLOB_UPLOAD_INVALID", "SIZE_INVALID")
        assert upload_size(client, loc) == 3
        assert patch_chunk(client, loc, b"def", 3).status_code == 202

    @pytest.mark.parametrize(("content_range", "body"), [("3-12", b"def"), ("3-4", b"defgh")])
    def test_streamed_body_disagrees_with_content_range(
        self, client: httpx.Client, repo: str, content_range: str, body: bytes
    ) -> None:
        """No Content-Length (chunked transfer): the body itself is shorter/longer than declared."""
        loc = self._upload_with(client, repo, b"abc")
        r = client.patch(loc, content=iter([body]), headers={"Content-Range": content_range})
        assert_error(r, {400, 413, 416}, "RANGE_INVALID", "BLOB_UPLOAD_INVALID", "SIZE_INVALID")
        assert upload_size(client, loc) == 3
        r = patch_chunk(client, loc, b"def", 3)
        assert r.status_code == 202, r.text
        assert client.put(loc, params={"digest": sha256(b"abcdef")}).status_code == 201

    def test_binary_garbage_chunks_are_just_bytes(self, client: httpx.Client, repo: str) -> None:
        data = bytes(range(256)) * 64 + b"\x00\r\n\r\n<html>" + os.urandom(4096)
        loc = self._upload_with(client, repo, data[:100])
        assert patch_chunk(client, loc, data[100:], 100).status_code == 202
        assert client.put(loc, params={"digest": sha256(data)}).status_code == 201
        assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


UNKNOWN_UPLOAD = uuid.UUID("5c0ffee5-0000-4000-8000-00000000b10b")


class TestUnknownUploads:
    """distribution-spec: an upload id the registry does not know in *this* repository is
    BLOB_UPLOAD_UNKNOWN (404) — including the id of another repository's session, which must not
    be readable, writable, completable or cancellable through a different name."""

    @pytest.mark.parametrize(
        "upload_id",
        [  # fixed ids (never handed out): parallel workers must collect the same test ids
            str(UNKNOWN_UPLOAD),
            UNKNOWN_UPLOAD.hex,
            "x",
            "a" * 64,
            "a" * 65,
            "a" * 5000,
            "%20",
            "%C3%A9",
            "%2e%2e",
            "1%27%20OR%20%271%27=%271",
            "%22%3B--",
        ],
    )
    def test_unknown_ids(self, client: httpx.Client, repo: str, upload_id: str) -> None:
        start_upload(client, repo)  # the repository exists
        base = f"/v2/{repo}/blobs/uploads/{upload_id}"
        assert_error(client.get(base), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(client.patch(base, content=b"data"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(
            client.put(base, params={"digest": sha256(b"data")}, content=b"data"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        assert_error(client.delete(base), 404, "BLOB_UPLOAD_UNKNOWN")
        blob_absent(client, repo, sha256(b"data"))

    def test_nul_in_upload_id(
        self,
        client: httpx.Client,
        repo: str,
        request: pytest.FixtureRequest,
        backend: tuple[str, str | None],
    ) -> None:
        start_upload(client, repo)
        assert_error(client.get(f"/v2/{repo}/blobs/uploads/%00"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(
            client.patch(f"/v2/{repo}/blobs/uploads/a%00b", content=b"x"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )

    @pytest.mark.parametrize(
        "other_exists", [True, False], ids=["other-repo-exists", "other-repo-unknown"]
    )
    def test_another_repositorys_upload_is_unknown_here(
        self, client: httpx.Client, repo: str, other_exists: bool
    ) -> None:
        loc = start_upload(client, repo)
        assert patch_chunk(client, loc, b"secret", 0).status_code == 202
        other = f"{repo}-other"
        if other_exists:
            push_blob(client, other, b"other repository")
        foreign = loc.replace(f"/v2/{repo}/", f"/v2/{other}/")
        assert foreign != loc
        data = b"secret"
        assert_error(client.get(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(patch_chunk(client, foreign, b"more", 6), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(
            client.put(foreign, params={"digest": sha256(data)}), 404, "BLOB_UPLOAD_UNKNOWN"
        )
        assert_error(client.delete(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
        blob_absent(client, other, sha256(data))
        # The owner's session is untouched and still completes.
        assert upload_size(client, loc) == 6
        assert client.put(loc, params={"digest": sha256(data)}).status_code == 201
        blob_absent(client, other, sha256(data))

    def test_cancelled_and_completed_uploads_are_unknown(
        self, client: httpx.Client, repo: str
    ) -> None:
        loc = start_upload(client, repo)
        assert client.delete(loc).status_code == 204
        assert_error(client.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(patch_chunk(client, loc, b"x", 0), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(client.delete(loc), 404, "BLOB_UPLOAD_UNKNOWN")
        loc = start_upload(client, repo)
        assert (
            client.put(loc, params={"digest": sha256(b"done")}, content=b"done").status_code == 201
        )
        assert_error(patch_chunk(client, loc, b"x", 4), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(
            client.put(loc, params={"digest": sha256(b"done")}), 404, "BLOB_UPLOAD_UNKNOWN"
        )


# --- manifests -----------------------------------------------------------------------------------


class TestManifestPayloads:
    """distribution-spec "Pushing manifests": a body that is not a valid manifest of a supported
    type is MANIFEST_INVALID (400); references to absent content are MANIFEST_BLOB_UNKNOWN; a body
    over the registry's limit (at least 4 MiB must be accepted) is 413 SIZE_INVALID. Nothing of a
    refused push is stored."""

    LIMIT = 4 * 1024 * 1024

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b"not json at all", id="text"),
            pytest.param(b"{", id="truncated"),
            pytest.param(b"[]", id="array"),
            pytest.param(b"null", id="null"),
            pytest.param(b"1e999", id="number"),
            pytest.param(b'"a string"', id="string"),
            pytest.param(b"{}", id="empty-object"),
            pytest.param(b'{"schemaVersion": 2}', id="no-config"),
            pytest.param(b"\xff\xfe\xfd", id="invalid-utf8"),
            pytest.param(bytes(range(256)) * 16, id="binary"),
            pytest.param(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", id="gzip-magic"),
            pytest.param(b"<html><body>hi</body></html>", id="html"),
            pytest.param(b"[" * 100_000, id="100k-open-arrays"),
            pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100k-nested-arrays"),
            pytest.param(b'{"a":' * 100_000, id="100k-open-objects"),
            pytest.param(b'{"schemaVersion":' + b"9" * 10_000 + b"}", id="10k-digit-number"),
        ],
    )
    def test_garbage_bodies(self, client: httpx.Client, repo: str, payload: bytes) -> None:
        assert_error(put_manifest(client, repo, "garbage", payload), 400, "MANIFEST_INVALID")
        assert_error(
            client.get(f"/v2/{repo}/manifests/garbage"), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN"
        )

    def test_random_binary_bodies(self, client: httpx.Client, repo: str) -> None:
        for _ in range(20):
            r = put_manifest(
                client, repo, "random", os.urandom(int.from_bytes(os.urandom(2), "big") % 4096 + 1)
            )
            assert_error(r, 400, "MANIFEST_INVALID")

    def test_over_the_limit_with_content_length(self, client: httpx.Client, repo: str) -> None:
        payload = image_manifest(client, repo)
        padded = payload + b" " * (self.LIMIT + 1 - len(payload))
        assert_error(put_manifest(client, repo, "big", padded), 413, "SIZE_INVALID")
        assert_error(client.get(f"/v2/{repo}/manifests/big"), 404, "MANIFEST_UNKNOWN")

    def test_over_the_limit_streamed(self, client: httpx.Client, repo: str) -> None:
        payload = image_manifest(client, repo)

        def body() -> Iterator[bytes]:
            yield payload
            for _ in range(5):
                yield b" " * (1024 * 1024)

        r = client.put(
            f"/v2/{repo}/manifests/big", content=body(), headers={"Content-Type": OCI_MANIFEST}
        )
        assert_error(r, 413, "SIZE_INVALID")

    def test_huge_declared_length_is_refused_before_reading(
        self, server: MoorageServer, repo: str
    ) -> None:
        r = raw_request(
            server,
            "PUT",
            f"/v2/{repo}/manifests/huge",
            headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(5 * 1024**3)},
            send_content_length=False,
        )
        assert_error(r, 413, "SIZE_INVALID")

    def test_exactly_at_the_limit_is_accepted(self, client: httpx.Client, repo: str) -> None:
        payload = image_manifest(client, repo)
        padded = payload + b" " * (self.LIMIT - len(payload))
        assert len(padded) == self.LIMIT
        r = put_manifest(client, repo, "limit", padded)
        assert r.status_code == 201, r.text[:300]
        assert client.get(f"/v2/{repo}/manifests/limit").content == padded

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/vnd.docker.distribution.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ],
    )
    def test_schema1_is_refused(self, client: httpx.Client, repo: str, content_type: str) -> None:
        schema1 = json.dumps(
            {
                "schemaVersion": 1,
                "name": repo,
                "tag": "old",
                "architecture": "amd64",
                "fsLayers": [{"blobSum": SOME_DIGEST}],
                "history": [{"v1Compatibility": "{}"}],
            }
        ).encode()
        assert_error(
            put_manifest(client, repo, "old", schema1, content_type), 400, "MANIFEST_INVALID"
        )
        assert_error(
            put_manifest(client, repo, "old", schema1, OCI_MANIFEST), 400, "MANIFEST_INVALID"
        )

    @pytest.mark.parametrize(
        "content_type",
        [
            OCI_INDEX,
            "application/vnd.docker.distribution.manifest.v2+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/vnd.oci.image.config.v1+json",
            "*/*",
            "garbage",
        ],
    )
    def test_content_type_disagrees_with_the_body(
        self, client: httpx.Client, repo: str, content_type: str
    ) -> None:
        payload = image_manifest(client, repo)
        assert_error(
            put_manifest(client, repo, "ct", payload, content_type), 400, "MANIFEST_INVALID"
        )

    def test_references_must_exist_and_match(self, client: httpx.Client, repo: str) -> None:
        doc = json.loads(image_manifest(client, repo))
        missing = dict(doc, layers=[{**doc["layers"][0], "digest": sha256(os.urandom(8))}])
        r = put_manifest(client, repo, "missing", json.dumps(missing).encode())
        assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
        lying = dict(doc, layers=[{**doc["layers"][0], "size": doc["layers"][0]["size"] + 1}])
        r = put_manifest(client, repo, "lying", json.dumps(lying).encode())
        assert_error(r, 400, "MANIFEST_INVALID")
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"nope"), "size": 4}],
        }
        r = put_manifest(client, repo, "idx", json.dumps(index).encode(), OCI_INDEX)
        assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
        assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []

    @pytest.mark.parametrize(
        "descriptor_patch",
        [
            {"size": -1},
            {"size": True},
            {"size": 1.5},
            {"size": "10"},
            {"size": 2**64},
            {"digest": "sha256:../../etc"},
            {"digest": "md5:" + "a" * 32},
            {"mediaType": "not a type"},
            {"urls": "http://x"},
        ],
    )
    def test_bad_descriptors(
        self, client: httpx.Client, repo: str, descriptor_patch: dict[str, object]
    ) -> None:
        doc = json.loads(image_manifest(client, repo))
        doc["layers"][0].update(descriptor_patch)
        assert_error(
            put_manifest(client, repo, "bad", json.dumps(doc).encode()), 400, "MANIFEST_INVALID"
        )

    @pytest.mark.parametrize(
        "annotations",
        [
            {"nul": "a\u0000b"},
            {"\u0000": "key"},
            {"surrogate": "\ud800"},
            {"long": "x" * 100_000},
            {"emoji": "🐳" * 1000},
            {"html": "<script>alert(1)</script>"},
        ],
        ids=["nul-value", "nul-key", "lone-surrogate", "long", "emoji", "html"],
    )
    def test_odd_annotations_round_trip_or_are_refused(
        self, client: httpx.Client, repo: str, annotations: dict[str, str]
    ) -> None:
        payload = image_manifest(client, repo, annotations=annotations)
        r = put_manifest(client, repo, "odd", payload)
        if r.status_code == 201:
            got = client.get(f"/v2/{repo}/manifests/odd", headers={"Accept": OCI_MANIFEST})
            assert got.status_code == 200 and got.content == payload
        else:
            assert_error(r, 400, "MANIFEST_INVALID")


# --- blob ranges ---------------------------------------------------------------------------------


class TestBlobRanges:
    """RFC 9110 §14 (distribution-spec "Pulling blobs" allows Range): a satisfiable single range is
    206 with Content-Range; a well-formed range starting at or past the end is 416 with
    Content-Range: bytes */<size>; a syntactically invalid Range header is ignored (200, whole)."""

    @pytest.fixture
    def blob(self, client: httpx.Client, repo: str) -> tuple[str, bytes]:
        data = bytes(range(256)) * 4  # 1024 bytes
        return f"/v2/{repo}/blobs/{push_blob(client, repo, data)}", data

    @pytest.mark.parametrize(
        ("header", "start", "end"),
        [
            ("bytes=0-0", 0, 0),
            ("bytes=1023-1023", 1023, 1023),
            ("bytes=1000-", 1000, 1023),
            ("bytes=-1", 1023, 1023),
            ("bytes=-24", 1000, 1023),
            ("bytes=-1024", 0, 1023),
            ("bytes=-5000", 0, 1023),
            ("bytes=0-99999999999999999999", 0, 1023),
            ("bytes=5-5", 5, 5),
        ],
    )
    def test_satisfiable(
        self, client: httpx.Client, blob: tuple[str, bytes], header: str, start: int, end: int
    ) -> None:
        url, data = blob
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 206, r.text[:200]
        assert r.content == data[start : end + 1]
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/1024"
        assert r.headers["Content-Length"] == str(end - start + 1)

    @pytest.mark.parametrize(
        "header",
        [
            "bytes=1024-",
            "bytes=1024-1024",
            "bytes=5000-6000",
            "bytes=-0",
            "bytes=99999999999999999999-",
        ],
    )
    def test_unsatisfiable(
        self, client: httpx.Client, blob: tuple[str, bytes], header: str
    ) -> None:
        url, _ = blob
        r = client.get(url, headers={"Range": header})
        assert_error(r, 416, "RANGE_INVALID")
        assert r.headers["Content-Range"] == "bytes */1024"

    @pytest.mark.parametrize(
        "header",
        [
            "bytes=abc",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=a-b",
            "lines=0-1",
            "0-1",
            "bytes=0-1,5-6",
            "bytes=3-1",
            "bytes=1-2-3",
            "bytes=0x10-",
            "bytes=" + "1" * 200,
            "bytes=-" + "9" * 100,
            "bytes=1.5-2",
        ],
    )
    def test_malformed_is_ignored(
        self, client: httpx.Client, blob: tuple[str, bytes], header: str
    ) -> None:
        url, data = blob
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 200, (r.status_code, r.text[:200])
        assert r.content == data

    @pytest.mark.parametrize(
        "header", [b"bytes=\xb2-", b"bytes=-\xb2", b"bytes=0-\xb3", b"bytes=\xb9-\xb2"]
    )
    def test_superscript_digits_are_malformed(
        self, client: httpx.Client, blob: tuple[str, bytes], header: bytes
    ) -> None:
        url, data = blob
        r = client.get(url, headers={"Range": header, **known_bug()})  # type: ignore[dict-item]
        assert r.status_code == 200, (r.status_code, r.text[:200])
        assert r.content == data

    def test_empty_blob(self, client: httpx.Client, repo: str) -> None:
        url = f"/v2/{repo}/blobs/{push_blob(client, repo, b'')}"
        r = client.get(url)
        assert r.status_code == 200 and r.content == b""
        for header in ("bytes=0-0", "bytes=0-", "bytes=-1"):
            r = client.get(url, headers={"Range": header})
            assert_error(r, 416, "RANGE_INVALID")
            assert r.headers["Content-Range"] == "bytes */0"

    def test_huge_range_header(self, client: httpx.Client, blob: tuple[str, bytes]) -> None:
        url, data = blob
        r = client.get(url, headers={"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(5000))})
        assert r.status_code == 200 and r.content == data


# --- missing things ------------------------------------------------------------------------------


class TestMissing:
    """distribution-spec: a manifest or blob that does not exist is 404 (MANIFEST_UNKNOWN,
    BLOB_UNKNOWN or NAME_UNKNOWN); a HEAD answer has the status and no body."""

    def test_head_on_missing_things(self, client: httpx.Client, repo: str) -> None:
        nowhere = f"{repo}-never-created"
        for url in (
            f"/v2/{nowhere}/manifests/latest",
            f"/v2/{nowhere}/manifests/{SOME_DIGEST}",
            f"/v2/{nowhere}/blobs/{SOME_DIGEST}",
        ):
            assert_head_error(client.head(url), 404)
        push_blob(client, repo, b"exists")
        for url in (
            f"/v2/{repo}/manifests/latest",
            f"/v2/{repo}/manifests/{SOME_DIGEST}",
            f"/v2/{repo}/blobs/{SOME_DIGEST}",
        ):
            assert_head_error(client.head(url), 404)

    def test_get_and_delete_on_missing_things(self, client: httpx.Client, repo: str) -> None:
        nowhere = f"{repo}-never-created"
        assert_error(
            client.get(f"/v2/{nowhere}/manifests/latest"), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN"
        )
        assert_error(
            client.get(f"/v2/{nowhere}/blobs/{SOME_DIGEST}"), 404, "BLOB_UNKNOWN", "NAME_UNKNOWN"
        )
        assert_error(client.get(f"/v2/{nowhere}/tags/list"), 404, "NAME_UNKNOWN")
        assert_error(
            client.delete(f"/v2/{nowhere}/manifests/latest"),
            404,
            "MANIFEST_UNKNOWN",
            "NAME_UNKNOWN",
        )
        assert_error(
            client.delete(f"/v2/{nowhere}/blobs/{SOME_DIGEST}"), 404, "BLOB_UNKNOWN", "NAME_UNKNOWN"
        )
        push_blob(client, repo, b"exists")
        assert_error(client.delete(f"/v2/{repo}/manifests/{SOME_DIGEST}"), 404, "MANIFEST_UNKNOWN")
        assert_error(client.delete(f"/v2/{repo}/blobs/{SOME_DIGEST}"), 404, "BLOB_UNKNOWN")

    @pytest.mark.parametrize(
        "path",
        [
            "/v2/x",
            "/v2/x/",
            "/v2/x/manifests",
            "/v2/x/blobs",
            "/v2/x/nope/y",
            "/v2/x/manifests/",
            "/v2/x/tags",
            "/v2//",
            "/v2/_catalog/x",
        ],
    )
    def test_unknown_v2_paths(self, client: httpx.Client, path: str) -> None:
        assert_error(client.get(path), {400, 404}, "NAME_UNKNOWN", "NAME_INVALID", "TAG_INVALID")


# --- pagination ----------------------------------------------------------------------------------


class TestPagination:
    """distribution-spec "Listing tags" / catalog: n is a non-negative integer and last a previous
    entry; anything else is a 400 error (never a 500), n=0 is an empty list."""

    @pytest.fixture
    def tagged(self, client: httpx.Client, repo: str) -> str:
        payload = image_manifest(client, repo)
        for tag in ("a", "b", "c"):
            assert put_manifest(client, repo, tag, payload).status_code == 201
        return repo

    @pytest.mark.parametrize(
        "n", ["-1", "abc", "1.5", "1e3", "0x10", " 1", "1 ", "+1", "9" * 50, "%00", "1%00", "١"]
    )
    def test_invalid_n(self, client: httpx.Client, tagged: str, n: str) -> None:
        r = client.get(f"/v2/{tagged}/tags/list?n={n}")
        if r.status_code == 200:  # a lenient reading is acceptable if it is sane
            assert isinstance(r.json()["tags"], list)
        else:
            assert_error(r, 400)
        r = client.get(f"/v2/_catalog?n={n}")
        if r.status_code == 200:
            assert isinstance(r.json()["repositories"], list)
        else:
            assert_error(r, 400)

    def test_n_larger_than_the_server_maximum(self, client: httpx.Client, tagged: str) -> None:
        for url in (f"/v2/{tagged}/tags/list?n=99999999999", "/v2/_catalog?n=99999999999"):
            r = client.get(url)
            if r.status_code != 200:
                assert_error(r, 400)

    @pytest.mark.parametrize("endpoint", ["tags", "catalog"])
    def test_superscript_n(self, client: httpx.Client, tagged: str, endpoint: str) -> None:
        url = f"/v2/{tagged}/tags/list?n=%C2%B2" if endpoint == "tags" else "/v2/_catalog?n=%C2%B2"
        assert_error(client.get(url, headers=known_bug()), 400)

    def test_n_zero_and_empty(self, client: httpx.Client, tagged: str) -> None:
        assert client.get(f"/v2/{tagged}/tags/list?n=0").json()["tags"] == []
        assert client.get(f"/v2/{tagged}/tags/list?n=").json()["tags"] == ["a", "b", "c"]
        assert client.get("/v2/_catalog?n=0").json()["repositories"] == []

    @pytest.mark.parametrize(
        "last", ["zzzz", "", "%FF", "a" * 255, "'; DROP TABLE tags; --", "%C3%A9"]
    )
    def test_odd_last(self, client: httpx.Client, tagged: str, last: str) -> None:
        r = client.get(f"/v2/{tagged}/tags/list?last={last}")
        assert r.status_code == 200, r.text
        assert set(r.json()["tags"]) <= {"a", "b", "c"}
        assert client.get(f"/v2/_catalog?last={last}").status_code == 200

    def test_overlong_last(self, client: httpx.Client, tagged: str) -> None:
        assert_error(client.get(f"/v2/{tagged}/tags/list?last={'a' * 10_000}"), 400)
        assert_error(client.get(f"/v2/_catalog?last={'a' * 10_000}"), 400)

    def test_nul_in_last(
        self,
        client: httpx.Client,
        tagged: str,
        request: pytest.FixtureRequest,
        backend: tuple[str, str | None],
    ) -> None:
        for url in (f"/v2/{tagged}/tags/list?last=a%00", "/v2/_catalog?last=%00"):
            r = client.get(url)
            assert r.status_code == 200 or assert_error(r, 400), (r.status_code, r.text)

    def test_nul_in_referrers_artifact_type(
        self,
        client: httpx.Client,
        repo: str,
        request: pytest.FixtureRequest,
        backend: tuple[str, str | None],
    ) -> None:
        payload = image_manifest(client, repo)
        assert put_manifest(client, repo, "x", payload).status_code == 201
        r = client.get(f"/v2/{repo}/referrers/{sha256(payload)}?artifactType=%00")
        assert r.status_code == 200 or assert_error(r, 400), (r.status_code, r.text)


# --- methods -------------------------------------------------------------------------------------


class TestMethods:
    """distribution-spec: an operation the endpoint does not support is 405 with the UNSUPPORTED
    code, and (RFC 9110 §15.5.6) an Allow header listing what is supported."""

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("POST", "/v2/{repo}/manifests/latest", {"GET", "HEAD", "PUT", "DELETE"}),
            ("PATCH", "/v2/{repo}/manifests/latest", {"GET", "HEAD", "PUT", "DELETE"}),
            ("PUT", "/v2/{repo}/blobs/" + SOME_DIGEST, {"GET", "HEAD", "DELETE"}),
            ("POST", "/v2/{repo}/blobs/" + SOME_DIGEST, {"GET", "HEAD", "DELETE"}),
            ("PATCH", "/v2/{repo}/blobs/" + SOME_DIGEST, {"GET", "HEAD", "DELETE"}),
            ("GET", "/v2/{repo}/blobs/uploads/", {"POST"}),
            ("PUT", "/v2/{repo}/blobs/uploads/", {"POST"}),
            ("DELETE", "/v2/{repo}/blobs/uploads/", {"POST"}),
            (
                "POST",
                "/v2/{repo}/blobs/uploads/" + str(UNKNOWN_UPLOAD),
                {"GET", "PATCH", "PUT", "DELETE"},
            ),
            ("DELETE", "/v2/{repo}/tags/list", {"GET"}),
            ("POST", "/v2/{repo}/tags/list", {"GET"}),
            ("PUT", "/v2/{repo}/referrers/" + SOME_DIGEST, {"GET"}),
            ("POST", "/v2/_catalog", {"GET"}),
            ("DELETE", "/v2/", {"GET", "HEAD"}),
            ("PUT", "/v2/", {"GET", "HEAD"}),
            ("OPTIONS", "/v2/{repo}/manifests/latest", {"GET", "HEAD", "PUT", "DELETE"}),
            ("TRACE", "/v2/", {"GET", "HEAD"}),
            ("PROPFIND", "/v2/{repo}/tags/list", {"GET"}),
        ],
    )
    def test_405_with_allow(
        self, client: httpx.Client, repo: str, method: str, path: str, allowed: set[str]
    ) -> None:
        r = client.request(method, path.format(repo=repo))
        assert_error(r, 405, "UNSUPPORTED")
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed

    def test_head_on_a_get_only_endpoint(self, client: httpx.Client, repo: str) -> None:
        r = client.head(f"/v2/{repo}/tags/list")
        assert_head_error(r, 405)
        assert r.headers["Allow"] == "GET"


# --- cross-repository mount ----------------------------------------------------------------------


class TestMount:
    """distribution-spec "Mounting a blob from another repository": when the blob cannot be mounted
    (bad or unknown `from`, or `from` lacks it) the registry falls back to an ordinary upload
    session (202 with Location), never 201 — and nothing is linked into the target."""

    @pytest.mark.parametrize(
        "source",
        [
            "../etc",
            "Upper/Case",
            "",
            "a//b",
            "/abs",
            "x%00y",
            "a%0A",
            "%2e%2e",
            "a" * 300,
            "never/created-{uuid}",
            "{repo}-without-the-blob",
        ],
    )
    def test_unmountable_source_falls_back_to_an_upload(
        self, client: httpx.Client, repo: str, source: str
    ) -> None:
        data = os.urandom(500)
        digest = sha256(data)
        push_blob(client, f"{repo}-without-the-blob", b"some other blob")
        src = source.format(repo=repo, uuid=uuid.uuid4().hex)
        r = client.post(f"/v2/{repo}/blobs/uploads/?mount={digest}&from={src}")
        assert r.status_code == 202, (r.status_code, r.text)
        assert r.headers["Location"].startswith(f"/v2/{repo}/blobs/uploads/")
        blob_absent(client, repo, digest)
        # The fallback session is real: finishing it stores the blob.
        r = client.put(r.headers["Location"], params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/{repo}/blobs/{digest}").content == data

    def test_mount_without_from(self, client: httpx.Client, repo: str) -> None:
        digest = push_blob(client, f"{repo}-src", b"mount me")
        r = client.post(f"/v2/{repo}/blobs/uploads/?mount={digest}")
        assert r.status_code == 202, r.text
        blob_absent(client, repo, digest)

    def test_mount_does_work_when_it_can(self, client: httpx.Client, repo: str) -> None:
        """Control: the fallbacks above are not just a registry that never mounts."""
        digest = push_blob(client, f"{repo}-src", b"mount me")
        r = client.post(f"/v2/{repo}/blobs/uploads/?mount={digest}&from={repo}-src")
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/{repo}/blobs/{digest}").content == b"mount me"


# --- oversized requests --------------------------------------------------------------------------


class TestOversized:
    """Huge headers, URLs and query strings are refused cleanly (4XX) or served normally; error
    bodies never echo the huge input back; the server keeps serving."""

    def test_huge_header(self, server: MoorageServer, client: httpx.Client) -> None:
        r = raw_request(server, "GET", "/v2/", headers={"X-Junk": "a" * (1024 * 1024)})
        assert r.status_code in (200, 400, 413, 431), r.status_code
        assert client.get("/v2/").status_code == 200

    def test_many_headers(self, server: MoorageServer, client: httpx.Client) -> None:
        r = raw_request(server, "GET", "/v2/", headers={f"X-H{i}": "v" for i in range(5000)})
        assert r.status_code in (200, 400, 413, 431), r.status_code
        assert client.get("/v2/").status_code == 200

    def test_huge_accept_header(self, client: httpx.Client, repo: str) -> None:
        payload = image_manifest(client, repo)
        assert put_manifest(client, repo, "x", payload).status_code == 201
        accept = ", ".join(f"application/vnd.example.{i}+json" for i in range(10_000))
        r = client.get(f"/v2/{repo}/manifests/x", headers={"Accept": accept + ", " + OCI_MANIFEST})
        assert r.status_code == 200 and r.content == payload
        r = client.get(f"/v2/{repo}/manifests/x", headers={"Accept": accept})
        assert r.status_code == 404

    @pytest.mark.parametrize("header", ["Accept", "Content-Type"])
    def test_error_bodies_do_not_echo_huge_headers(
        self, client: httpx.Client, repo: str, header: str
    ) -> None:
        payload = image_manifest(client, repo)
        assert put_manifest(client, repo, "x", payload).status_code == 201
        if header == "Accept":
            accept = ", ".join(f"application/vnd.example.{i}+json" for i in range(10_000))
            r = client.get(f"/v2/{repo}/manifests/x", headers={"Accept": accept})
            assert_error(r, 404, "MANIFEST_UNKNOWN")
        else:
            r = put_manifest(client, repo, "y", payload, "application/" + "a" * 20_000)
            assert_error(r, 400, "MANIFEST_INVALID")

    def test_huge_path_components(self, client: httpx.Client, repo: str) -> None:
        assert_error(client.get(f"/v2/{'a' * 30_000}/tags/list"), 400, "NAME_INVALID")
        assert_error(client.get(f"/v2/{repo}/manifests/{'t' * 30_000}"), 404, "MANIFEST_UNKNOWN")
        assert_error(client.get(f"/v2/{repo}/blobs/sha256:{'a' * 30_000}"), 400, "DIGEST_INVALID")
        assert_error(
            client.get(f"/v2/{repo}/blobs/uploads/{'u' * 30_000}"), 404, "BLOB_UPLOAD_UNKNOWN"
        )

    def test_huge_query_parameters(self, client: httpx.Client, repo: str) -> None:
        big = "a" * 30_000
        assert_error(
            client.post(f"/v2/{repo}/blobs/uploads/?digest=sha256:{big}", content=b"x"),
            400,
            "DIGEST_INVALID",
        )
        assert_error(
            client.post(f"/v2/{repo}/blobs/uploads/?mount=sha256:{big}&from={repo}"),
            400,
            "DIGEST_INVALID",
        )
        assert_error(client.get(f"/v2/_catalog?n={'1' * 30_000}"), 400)
        r = client.get(f"/v2/_catalog?junk={big}&{'&'.join(f'p{i}=1' for i in range(2000))}")
        assert r.status_code == 200

    def test_url_beyond_the_http_layer_limit(
        self, server: MoorageServer, client: httpx.Client
    ) -> None:
        r = raw_request(server, "GET", "/v2/_catalog?last=" + "a" * 200_000)
        assert 400 <= r.status_code < 500, r.status_code
        assert client.get("/v2/").status_code == 200


# --- afterwards ----------------------------------------------------------------------------------


def test_zz_server_survived_the_barrage(
    server: MoorageServer, client: httpx.Client, repo: str
) -> None:
    """Last: the server is ready, still works, lists only valid names, and its whole log has no
    traceback except those of requests that hit known (xfailed) bugs."""
    assert server.proc is not None and server.proc.poll() is None
    assert client.get("/readyz").status_code == 200
    payload = image_manifest(client, repo)
    assert put_manifest(client, repo, "after", payload).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/after").content == payload
    from moorage.oci.names import valid_name

    last = None
    while True:
        r = client.get("/v2/_catalog", params={"n": 1000, **({"last": last} if last else {})})
        assert r.status_code == 200
        names = r.json()["repositories"]
        assert all(valid_name(n) and ".." not in n for n in names), names
        if len(names) < 1000:
            break
        last = names[-1]
    assert server.log_path is not None
    log_text = server.log_path.read_text(errors="replace")
    assert not unexpected_tracebacks(log_text), "\n".join(unexpected_tracebacks(log_text))[:5000]
