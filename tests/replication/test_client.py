"""RegistryClient against real registries (auth, pagination, manifests, blobs, uploads) and
against a hostile one (bounds and digest checks)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from moorage.replication import (
    Credentials,
    DigestMismatch,
    Limits,
    NotFound,
    PeerProtocolError,
    RegistryClient,
    TLSFailure,
    TLSOptions,
    Unauthorized,
)
from moorage.replication.client import MANIFEST_ACCEPT, Upload
from tests.clients.ocigen import OCI_INDEX, OCI_MANIFEST
from tests.conftest import ADMIN_PASSWORD, MoorageServer

from .faultproxy import fault_proxy
from .hostile import Answer, Seen, hostile_registry
from .images import Pusher, build_set
from .peers import Distribution, distribution, self_signed

ADMIN = Credentials("admin", ADMIN_PASSWORD)


async def test_token_flow_basic_and_anonymous(moorage_auth: MoorageServer, uid: str) -> None:
    repo = f"auth/{uid}/app"
    s = build_set()
    Pusher(moorage_auth.url, ("admin", ADMIN_PASSWORD)).push_set(repo, s)
    # Count what reaches the server through a pass-through proxy (the realm is announced on
    # the host the client used, so token requests go through it too).
    with fault_proxy(moorage_auth.port) as proxy:
        async with RegistryClient(proxy.url, ADMIN) as token_client:
            ping = await token_client.ping()
            assert ping.auth == "bearer" and ping.authenticated
            for _ in range(3):
                m = await token_client.get_manifest(repo, "multi")
                assert m.digest == s.tags["multi"] and m.media_type == OCI_INDEX
            assert sorted(await token_client.tags(repo)) == sorted(s.tags)
        token_requests = [r for r in proxy.records if r.target.startswith("/auth/token")]
        # One token for /v2/ (no scope), one for pulling the repository: cached, not per call.
        assert len(token_requests) == 2
    async with RegistryClient(moorage_auth.url, ADMIN, auth_scheme="basic") as basic:
        assert (await basic.ping()).auth == "basic"
        assert (await basic.get_manifest(repo, "single")).digest == s.tags["single"]
    async with RegistryClient(moorage_auth.url, Credentials("admin", "wrong-password")) as bad:
        with pytest.raises(Unauthorized):
            await bad.ping()
    async with RegistryClient(moorage_auth.url) as anonymous:
        assert (await anonymous.ping()).authenticated is False
        with pytest.raises(Unauthorized):
            await anonymous.get_manifest(repo, "multi")  # private repository


@pytest.mark.parametrize("peer", ["dist_a", "moorage_open"])
async def test_pagination_and_manifest_operations(
    request: pytest.FixtureRequest, peer: str, uid: str
) -> None:
    server: Distribution | MoorageServer = request.getfixturevalue(peer)
    repo = f"pages/{uid}/app"
    s = build_set()
    pusher = Pusher(server.url)
    pusher.push_set(repo, s)
    single = next(m for m in s.manifests if m.ref == "single")
    for i in range(5):
        r = pusher.http.put(
            f"/v2/{repo}/manifests/extra{i}",
            content=single.blob.data,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201
    async with RegistryClient(server.url) as client:
        tags = await client.tags(repo, page_size=2)
        # (Distribution also holds the referrers tags, sha256-<hex>, the pusher maintained.)
        listed = [t for t in tags if not re.fullmatch(r"sha256-[0-9a-f]{64}", t)]
        assert sorted(listed) == sorted([*s.tags, *(f"extra{i}" for i in range(5))])
        assert len(tags) == len(set(tags))
        catalog = await client.catalog(page_size=1)
        assert repo in catalog
        info = await client.head_manifest(repo, "multi")
        assert info is not None and info.digest == s.tags["multi"]
        assert info.media_type == OCI_INDEX and info.size == len(s.index.data)
        assert await client.head_manifest(repo, "no-such-tag") is None
        with pytest.raises(NotFound):
            await client.get_manifest(repo, "no-such-tag")
        # PUT by tag and by digest; a digest that does not match the bytes is refused locally.
        put = await client.put_manifest(repo, "again", single.blob.data, OCI_MANIFEST)
        assert put.digest == single.digest
        await client.put_manifest(repo, single.digest, single.blob.data, OCI_MANIFEST)
        with pytest.raises(DigestMismatch):
            await client.put_manifest(repo, s.tags["multi"], single.blob.data, OCI_MANIFEST)
        referrers = await client.referrers(repo, s.index.digest)
        assert referrers.source == ("api" if peer == "moorage_open" else "tag")
        assert [str(d.digest) for d in referrers.descriptors] == [s.sbom]
        assert referrers.descriptors[0].artifact_type == "application/spdx+json"
        none = await client.referrers(repo, s.tags["single"])
        assert none.descriptors == []


async def test_blob_stream_upload_chunks_and_mount(dist_a: Distribution, uid: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repo, other = f"blobs/{uid}/a", f"blobs/{uid}/b"
    async with RegistryClient(dist_a.url) as client:
        upload = await client.start_upload(repo)
        assert upload is not None and upload.offset == 0

        async def body(part: bytes) -> object:
            yield part

        await client.upload_chunk(upload, body(data[: 1024 * 1024]), 1024 * 1024)  # type: ignore[arg-type]
        assert upload.offset == 1024 * 1024
        assert await client.upload_status(upload) == 1024 * 1024
        rest = data[1024 * 1024 :]
        await client.finish_upload(upload, digest, body(rest), len(rest))  # type: ignore[arg-type]
        assert await client.head_blob(repo, digest) == len(data)
        async with client.open_blob(repo, digest, size=len(data)) as stream:
            got = b"".join([c async for c in stream.chunks()])
        assert got == data
        async with client.open_blob(repo, digest, offset=1000, verify=False) as stream:
            assert stream.offset == 1000
            got = b"".join([c async for c in stream.chunks()])
        assert got == data[1000:]
        # Mount into another repository of the same registry; a mount from nowhere opens a
        # session instead.
        assert await client.start_upload(other, mount=digest, from_repo=repo) is None
        assert await client.head_blob(other, digest) == len(data)
        session = await client.start_upload(
            f"blobs/{uid}/c", mount=digest, from_repo=f"blobs/{uid}/none"
        )
        assert isinstance(session, Upload)
        await client.cancel_upload(session)
        assert (
            await client.push_blob(repo, b"small")
            == "sha256:" + hashlib.sha256(b"small").hexdigest()
        )


# --- a hostile peer ---------------------------------------------------------------------------


def _manifest_answer(body: bytes, digest: str | None = None) -> Answer:
    headers = {"Content-Type": OCI_MANIFEST}
    if digest:
        headers["Docker-Content-Digest"] = digest
    return Answer(200, headers, body)


async def test_hostile_peer_is_bounded_and_verified() -> None:
    good = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}
    ).encode()
    good_digest = "sha256:" + hashlib.sha256(good).hexdigest()
    other_digest = "sha256:" + "0" * 64
    with hostile_registry() as h:
        h.routes[("GET", "/v2/r/manifests/lying")] = _manifest_answer(good, other_digest)
        h.routes[("GET", f"/v2/r/manifests/{other_digest}")] = _manifest_answer(good)
        h.routes[("GET", "/v2/r/manifests/huge")] = _manifest_answer(b" " * (2 * 1024 * 1024))
        deep = b"[" * 10000 + b"]" * 10000
        h.routes[("GET", "/v2/r/tags/list")] = Answer(
            200, {"Content-Type": "application/json"}, deep
        )
        page = json.dumps({"name": "r", "tags": ["a"]}).encode()
        h.routes[("GET", "/v2/s/tags/list")] = Answer(
            200,
            {
                "Content-Type": "application/json",
                "Link": '<http://127.0.0.2:1/v2/s/tags/list?last=a>; rel="next"',
            },
            page,
        )
        h.routes[("GET", f"/v2/r/blobs/{good_digest}")] = Answer(200, {}, b"not the content")
        h.routes[("GET", "/v2/r/manifests/good")] = _manifest_answer(good, good_digest)
        h.routes[("GET", "/v2/")] = Answer(
            401, {"WWW-Authenticate": 'Bearer realm="' + "x" * 20000 + '"'}, b""
        )
        limits = Limits(max_manifest_bytes=1024 * 1024)
        async with RegistryClient(h.url, limits=limits) as client:
            with pytest.raises(DigestMismatch):
                await client.get_manifest("r", "lying")
            with pytest.raises(DigestMismatch):
                await client.get_manifest("r", other_digest)
            with pytest.raises(PeerProtocolError, match="limit"):
                await client.get_manifest("r", "huge")
            with pytest.raises(PeerProtocolError, match="nested"):
                await client.tags("r")
            with pytest.raises(PeerProtocolError, match="leaves the endpoint"):
                await client.tags("s")
            with pytest.raises(DigestMismatch):
                async with client.open_blob("r", good_digest) as stream:
                    async for _ in stream.chunks():
                        pass
            assert (await client.get_manifest("r", "good")).digest == good_digest
            with pytest.raises(PeerProtocolError, match="too long"):
                await client.ping()
        # A name or reference that is not valid never reaches the network.
        async with RegistryClient(h.url) as client:
            before = len(h.seen)
            for bad_name, ref in [("../etc", "x"), ("r", "../x"), ("r", "sha256:zz")]:
                with pytest.raises(ValueError):
                    await client.get_manifest(bad_name, ref)
            assert len(h.seen) == before


async def test_credentials_stay_on_the_registry_origin() -> None:
    """A blob redirect to another origin (a storage backend) must not carry our credentials."""
    data = b"blob content"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with hostile_registry() as storage, hostile_registry() as registry:
        storage.routes[("GET", "/bucket/blob")] = Answer(200, {}, data)
        registry.routes[("GET", f"/v2/r/blobs/{digest}")] = Answer(
            307, {"Location": f"{storage.url}/bucket/blob"}, b""
        )
        creds = Credentials("user", "secret")
        async with RegistryClient(registry.url, creds, auth_scheme="basic") as client:
            async with client.open_blob("r", digest) as stream:
                assert b"".join([c async for c in stream.chunks()]) == data
        assert "Authorization" in registry.seen[0].headers
        assert all("Authorization" not in s.headers for s in storage.seen)
        assert len(storage.seen) == 1


def test_manifest_accept_covers_every_manifest_type() -> None:
    for media_type in (
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ):
        assert media_type in MANIFEST_ACCEPT


async def test_tls_options(tmp_path: Path, uid: str) -> None:
    cert, key = self_signed(tmp_path)
    with distribution(tls=(cert, key)) as peer:
        assert peer.url.startswith("https://")
        async with RegistryClient(peer.url) as default:
            with pytest.raises(TLSFailure, match="certificate"):
                await default.ping()  # not a CA we trust: refused at once, not retried
        async with RegistryClient(peer.url, tls=TLSOptions(ca_bundle=str(cert))) as trusting:
            assert (await trusting.ping()).api_version == "registry/2.0"
            digest = await trusting.push_blob(f"tls/{uid}/a", b"over tls")
            assert await trusting.head_blob(f"tls/{uid}/a", digest) == len(b"over tls")
        async with RegistryClient(peer.url, tls=TLSOptions(verify=False)) as insecure:
            assert (await insecure.ping()).api_version == "registry/2.0"


async def test_refused_token_is_replaced() -> None:
    """A registry that stops accepting a cached token (expired, revoked) gets a fresh one:
    the token flow runs again once, and the request succeeds."""
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}}).encode()
    issued: list[str] = []
    with hostile_registry() as h:
        challenge = f'Bearer realm="{h.url}/token",service="hostile",scope="repository:r:pull"'

        def token(seen: Seen) -> Answer:
            issued.append(f"tok{len(issued) + 1}")
            assert "scope=repository%3Ar%3Apull" in seen.path
            return Answer(
                200,
                {"Content-Type": "application/json"},
                json.dumps({"token": issued[-1], "expires_in": 300}).encode(),
            )

        served: list[str] = []

        def manifest(seen: Seen) -> Answer:
            # tok1 works once, then only the newest token does.
            auth = seen.headers.get("Authorization", "")
            ok = auth == f"Bearer {issued[-1]}" if issued else False
            if auth == "Bearer tok1" and served:
                ok = False
            if not ok:
                return Answer(401, {"WWW-Authenticate": challenge}, b"")
            served.append(auth)
            return _manifest_answer(body)

        h.routes[("GET", "/token")] = token
        h.routes[("GET", "/v2/r/manifests/x")] = manifest
        async with RegistryClient(h.url, Credentials("u", "p")) as client:
            await client.get_manifest("r", "x")
            await client.get_manifest("r", "x")
        assert issued == ["tok1", "tok2"]
        assert served == ["Bearer tok1", "Bearer tok2"]
        # Token requests carried the credentials and the account, as the token spec says.
        token_requests = [s for s in h.seen if s.path.startswith("/token")]
        assert all(s.headers.get("Authorization", "").startswith("Basic ") for s in token_requests)
        assert all("account=u" in s.path for s in token_requests)
