"""Real clients through a cache organization: podman with a ``[[registry.mirror]]`` entry in
registries.conf (the registry itself unreachable, so every byte comes through the mirror), the
requests containerd sends to a ``hosts.toml`` mirror (``?ns=``), and an upstream that needs
credentials (a Moorage with access control: the token flow)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.clients.harness import Engine, make_client_env
from tests.clients.ocigen import make_image
from tests.conftest import ADMIN_PASSWORD, MoorageServer, free_port, moorage_cli
from tests.replication.images import Pusher, _image_manifest
from tests.replication.peers import Distribution

from .conftest import SECRET, create_cache, sql, wait_cached, wait_seen


def _push_image(url: str, repo: str, tag: str, auth: tuple[str, str] | None = None) -> str:
    image = make_image("amd64", label=f"mirror-{repo}")
    m = _image_manifest(image)
    m.ref = tag
    pusher = Pusher(url, auth)
    try:
        pusher.manifest(repo, m)
    finally:
        pusher.close()
    return image.digest


def test_podman_pulls_through_a_registry_mirror(
    mirror: MoorageServer, upstream: Distribution, uid: str
) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    digest = _push_image(upstream.url, f"team/p{uid}", "v1")
    name = f"m{uid}"
    create_cache(mirror, name, upstream.url)
    # The registry podman is asked for answers nothing: only the mirror can serve the pull.
    dead = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="mc-") as tmp:
        env = make_client_env(Path(tmp) / "env", mirror.host)
        env.registries_conf.write_text(
            'unqualified-search-registries = []\nshort-name-mode = "disabled"\n\n'
            f'[[registry]]\nprefix = "{dead}"\nlocation = "{dead}"\ninsecure = true\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror.host}/{name}"\ninsecure = true\n'
        )
        storage = Path(tempfile.mkdtemp(prefix="mc-p-"))
        for sub in ("root", "runroot", "libpod"):
            (storage / sub).mkdir()
        podman = Engine("podman", shutil.which("podman") or "podman", storage, env)
        try:
            podman("pull", f"{dead}/team/p{uid}:v1")
            pulled = podman.out("image", "inspect", "--format", "{{.Digest}}", f"{dead}/team/p{uid}:v1")
            assert pulled == digest
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    wait_cached(mirror, f"{name}/team/p{uid}", "v1")


def test_containerd_ns_parameter_routes_to_the_cache(
    mirror: MoorageServer, upstream: Distribution, uid: str
) -> None:
    digest = _push_image(upstream.url, f"team/c{uid}", "v1")
    name = f"k{uid}"
    create_cache(mirror, name, upstream.url)
    host = upstream.url.removeprefix("http://")
    accept = "application/vnd.oci.image.manifest.v1+json"
    # hosts.toml without override_path: /v2/<path> with ?ns=<registry host>
    r = httpx.get(
        f"{mirror.url}/v2/team/c{uid}/manifests/v1",
        params={"ns": host},
        headers={"Accept": accept},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["docker-content-digest"] == digest
    config = json.loads(r.content)["config"]["digest"]
    b = httpx.get(f"{mirror.url}/v2/team/c{uid}/blobs/{config}", params={"ns": host}, timeout=30)
    assert b.status_code == 200 and "sha256:" + hashlib.sha256(b.content).hexdigest() == config
    # hosts.toml with the cache's path and override_path: the ns parameter changes nothing.
    r = httpx.get(
        f"{mirror.url}/v2/{name}/team/c{uid}/manifests/{digest}",
        params={"ns": host},
        headers={"Accept": accept},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["docker-content-digest"] == digest
    # A registry no cache stands in for: the path is answered as it is (not held here).
    r = httpx.get(
        f"{mirror.url}/v2/team/c{uid}/manifests/v1",
        params={"ns": "registry.invalid"},
        headers={"Accept": accept},
        timeout=30,
    )
    assert r.status_code == 404


def test_upstream_credentials_stored_encrypted_and_used(
    mirror_with_secret: MoorageServer, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory(prefix="moorage-mirror-up-") as tmp:
        up = MoorageServer(Path(tmp) / "data", env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD})
        up.start(timeout=180)
        try:
            digest = _push_image(up.url, "admin/private", "v1", ("admin", ADMIN_PASSWORD))
            name = f"a{uid}"
            monkeypatch.setenv("MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET", SECRET)
            r = moorage_cli(
                mirror_with_secret, "admin", "create-org", name, "--mirror-of", up.url,
                "--upstream-username", "admin", "--upstream-password-stdin",
                stdin=ADMIN_PASSWORD + "\n",
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            ((secret,),) = sql(
                mirror_with_secret,
                "SELECT secret FROM mirror_caches WHERE namespace = :name",
                name=name,
            )
            assert secret.startswith("enc:") and ADMIN_PASSWORD not in secret
            # Without credentials the upstream refuses; through the cache the pull works.
            assert httpx.get(f"{up.url}/v2/admin/private/manifests/v1", timeout=10).status_code == 401
            wait_seen(mirror_with_secret, name)
            m = httpx.get(
                f"{mirror_with_secret.url}/v2/{name}/admin/private/manifests/v1",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                timeout=30,
            )
            assert m.status_code == 200, m.text
            assert m.headers["docker-content-digest"] == digest
        finally:
            up.stop()

