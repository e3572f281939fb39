"""Online garbage collection through a real server and ``moorage gc run``: what goes, what stays
(tagged, listed by an index, referrers of a present subject, shared layers), dry run equal to
the real run, bytes gone from the store."""

from __future__ import annotations

import json
import os
import re

import httpx

from ..conftest import MoorageServer, image_manifest, push_blob, put_manifest, sha256
from .conftest import cli, stored_blobs

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def gc(server: MoorageServer, *args: str) -> tuple[set[str], set[str], str]:
    """Run a pass; (manifest digests, blob digests) it reports, and its summary line."""
    r = cli(server, "gc", "run", *args)
    assert r.returncode == 0, r.stderr
    manifests = set(re.findall(r"manifest \S+@(sha256:[0-9a-f]{64})", r.stdout))
    blobs = set(re.findall(r"blob (sha256:[0-9a-f]{64})", r.stdout))
    return manifests, blobs, r.stdout.strip().splitlines()[-1]


def config_and_layers(payload: bytes) -> list[str]:
    doc = json.loads(payload)
    return [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


def test_overwritten_tag_leaves_only_its_own_garbage(
    quiet_gc: MoorageServer, gc_client: httpx.Client, repo: str
) -> None:
    c = gc_client
    shared = os.urandom(3000)
    first = image_manifest(c, repo, [shared, os.urandom(2000)])
    assert put_manifest(c, repo, "latest", first).status_code == 201
    second = image_manifest(c, repo, [shared, os.urandom(2000)])
    assert put_manifest(c, repo, "latest", second).status_code == 201
    orphan = push_blob(c, repo, os.urandom(500))  # uploaded, never referenced
    old, new = sha256(first), sha256(second)
    old_blobs = set(config_and_layers(first)) - {sha256(shared)}

    dry_m, dry_b, dry_line = gc(quiet_gc, "--dry-run")
    assert old in dry_m and new not in dry_m
    assert old_blobs | {orphan} <= dry_b
    assert not dry_b & set(config_and_layers(second))
    assert dry_line.startswith("would remove:")
    assert c.get(f"/v2/{repo}/manifests/{old}").status_code == 200  # nothing changed
    assert {*old_blobs, orphan} <= stored_blobs(quiet_gc)

    real_m, real_b, line = gc(quiet_gc)
    mine = {old} | old_blobs | {orphan} | set(config_and_layers(second)) | {new}
    assert (real_m | real_b) & mine == (dry_m | dry_b) & mine  # the dry run was exact
    assert line.startswith("removed:")
    assert c.get(f"/v2/{repo}/manifests/{old}").status_code == 404
    for d in old_blobs | {orphan}:
        assert c.head(f"/v2/{repo}/blobs/{d}").status_code == 404
    assert not (old_blobs | {orphan}) & stored_blobs(quiet_gc)
    got = c.get(f"/v2/{repo}/manifests/latest")
    assert got.status_code == 200 and got.content == second
    for d in config_and_layers(second):
        blob = c.get(f"/v2/{repo}/blobs/{d}")
        assert blob.status_code == 200 and sha256(blob.content) == d
    assert sha256(shared) in stored_blobs(quiet_gc)


def test_index_children_and_referrers_stay_while_their_parent_does(
    quiet_gc: MoorageServer, gc_client: httpx.Client, repo: str
) -> None:
    c = gc_client
    children = []
    for _ in range(2):
        payload = image_manifest(c, repo)
        d = sha256(payload)
        assert put_manifest(c, repo, d, payload).status_code == 201  # by digest: untagged
        children.append((d, payload))
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": d,
                    "size": len(p),
                }
                for d, p in children
            ],
        }
    ).encode()
    assert put_manifest(c, repo, "multi", index, OCI_INDEX).status_code == 201
    # A referrer (untagged, like a signature) of the index.
    empty = b"{}"
    sig = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sig",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": push_blob(c, repo, empty),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": push_blob(c, repo, b"signature"),
                    "size": 9,
                }
            ],
            "subject": {"mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index)},
        }
    ).encode()
    assert put_manifest(c, repo, sha256(sig), sig).status_code == 201

    removed, _, _ = gc(quiet_gc)
    kept = {d for d, _ in children} | {sha256(index), sha256(sig)}
    assert not removed & kept
    for d in kept:
        assert c.get(f"/v2/{repo}/manifests/{d}").status_code == 200

    assert c.delete(f"/v2/{repo}/manifests/multi").status_code == 202
    removed, blobs, _ = gc(quiet_gc)
    assert kept <= removed  # the index, then what hung off it, in the same pass
    child_blobs = {b for _, p in children for b in config_and_layers(p)}
    assert child_blobs | {sha256(b"signature")} <= blobs
    for d in kept:
        assert c.get(f"/v2/{repo}/manifests/{d}").status_code == 404
    assert not child_blobs & stored_blobs(quiet_gc)


def test_manifest_deleted_by_digest_frees_its_blobs(
    quiet_gc: MoorageServer, gc_client: httpx.Client, repo: str
) -> None:
    c = gc_client
    payload = image_manifest(c, repo, [os.urandom(100)])
    d = sha256(payload)
    assert put_manifest(c, repo, "v1", payload).status_code == 201
    assert c.delete(f"/v2/{repo}/manifests/{d}").status_code == 202
    _, blobs, _ = gc(quiet_gc)
    assert set(config_and_layers(payload)) <= blobs
    assert not set(config_and_layers(payload)) & stored_blobs(quiet_gc)


def test_grace_spares_recent_uploads(
    quiet_gc: MoorageServer, gc_client: httpx.Client, repo: str
) -> None:
    orphan = push_blob(gc_client, repo, os.urandom(300))
    _, blobs, line = gc(quiet_gc, "--grace", "3600")
    assert orphan not in blobs
    assert gc_client.head(f"/v2/{repo}/blobs/{orphan}").status_code == 200
    _, blobs, _ = gc(quiet_gc, "--grace", "0")
    assert orphan in blobs


def test_grace_must_be_a_number(quiet_gc: MoorageServer) -> None:
    r = cli(quiet_gc, "gc", "run", "--grace", "soon")
    assert r.returncode == 2 and "seconds" in r.stderr
