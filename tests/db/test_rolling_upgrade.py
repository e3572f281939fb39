"""A rolling upgrade: a node of the previous release and a node of this one serve side by side
on one database migrated by this release (migrations are expand-only), and clients move between
them — pushes, pulls and tokens issued by either node work on the other.

The previous release is the code of PREVIOUS_RELEASE (the last commit that landed), taken from
this repository's history with ``git archive``; update it when a release lands.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    postgres_database,
    put_manifest,
)

PREVIOUS_RELEASE = "6963cf5"  # stop 7: issues 4 and 5 landed
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def previous_release() -> Iterator[Path]:
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
    )
    if known.returncode != 0:
        pytest.skip(f"the previous release {PREVIOUS_RELEASE} is not in this clone's history")
    with tempfile.TemporaryDirectory(prefix="moorage-previous-") as tmp:
        archive = Path(tmp) / "previous.tar"
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "-o", str(archive), PREVIOUS_RELEASE, "moorage"],
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        yield None


def _token(server: MoorageServer, repo: str) -> str:
    r = httpx.get(
        f"{server.url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{repo}:pull,push"},
        auth=("admin", ADMIN_PASSWORD),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def test_previous_and_current_nodes_serve_one_migrated_database(
    previous_release: Path, database: str | None, tmp_path: Path
) -> None:
    secret = {"MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": "rolling-upgrade-secret-0123456789"}
    env = {"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, **secret}
    data = tmp_path / "data"
    # This release's node migrates the database and creates the administrator and key.
    new = MoorageServer(data, database_url=database, env=env).start()
    old = MoorageServer(
        data,
        database_url=database,
        env={**env, "MOORAGE_DATABASE_MIGRATE_ON_START": "false"},
        cwd=previous_release,
    )
    try:
        old.start()
        # Each node runs its own release's code (the previous one has no jobs API).
        admin = ("admin", ADMIN_PASSWORD)
        assert httpx.get(f"{new.url}/api/v1/jobs", auth=admin, timeout=60).status_code == 200
        assert httpx.get(f"{old.url}/api/v1/jobs", auth=admin, timeout=60).status_code == 404
        repo = "acme/rolling"
        for writer, reader in ((old, new), (new, old)):
            token = _token(writer, repo)  # issued by the writer, used on both
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=writer.url, headers=headers, timeout=60) as w:
                layer = os.urandom(4096)
                payload = image_manifest(w, repo, [layer])
                tag = f"from-{writer.port}"
                r = put_manifest(w, repo, tag, payload)
                assert r.status_code == 201, r.text
                digest = r.headers["docker-content-digest"]
            with httpx.Client(base_url=reader.url, headers=headers, timeout=60) as rd:
                r = rd.get(
                    f"/v2/{repo}/manifests/{tag}",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                )
                assert r.status_code == 200, r.text
                assert r.content == payload and r.headers["docker-content-digest"] == digest
                layer_digest = json.loads(payload)["layers"][0]["digest"]
                assert rd.get(f"/v2/{repo}/blobs/{layer_digest}").content == layer
                tags = rd.get(f"/v2/{repo}/tags/list").json()["tags"]
                assert tag in tags
    finally:
        old.stop()
        new.stop()
