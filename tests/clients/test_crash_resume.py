"""A real client after a crash (issue 10): skopeo pushes an image with a 192 MiB layer, the server
is SIGKILLed in the middle of the layer's PATCH and restarted, and skopeo's retry of the push
(``--retry-times``, which starts a new upload session: containers/image never resumes one)
completes; the image pulls back intact. The abandoned session resumes at once from its last
saved offset (no lease left to expire).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer

from .harness import Skopeo, make_client_env
from .ocigen import OCI_CONFIG, OCI_MANIFEST, Blob, Image, canonical_json, sha256, write_layout

pytestmark = pytest.mark.clients

OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MiB = 1 << 20


def big_image(size: int) -> Image:
    """One uncompressed tar layer holding *size* random bytes (fast to build, and skopeo sends
    it as it is)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("random.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    layer = Blob(OCI_LAYER_TAR, buf.getvalue())
    platform = {"architecture": "amd64", "os": "linux"}
    config = Blob(
        OCI_CONFIG,
        canonical_json({**platform, "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}),
    )
    manifest = Blob(
        OCI_MANIFEST,
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    return Image(manifest, config, [layer], [layer.digest], platform)


@pytest.fixture
def crash_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-kill-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", database_url=backend[1], extra_args=["--no-auth"]
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


def test_skopeo_push_killed_mid_layer_then_retried(
    crash_server: MoorageServer, tmp_path: Path
) -> None:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed")
    skopeo = Skopeo(binary, make_client_env(tmp_path / "client", crash_server.host))
    image = big_image(192 * MiB)
    layout = write_layout(tmp_path / "src", {"v1": image})
    dest = f"docker://{crash_server.host}/crash/skopeo:v1"
    base = [
        skopeo.binary,
        "--registries-conf",
        str(skopeo.client_env.registries_conf),
        "--policy",
        str(skopeo.client_env.policy),
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
    ]
    argv = [*base, f"oci:{layout}:v1", dest]
    uploads = crash_server.data_dir / "storage" / "uploads"
    push = subprocess.Popen(
        argv, env=skopeo.client_env.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # Kill the server once the layer's bytes are streaming in.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and push.poll() is None:
            sizes = [f.stat().st_size for f in uploads.glob("*/data") if f.exists()]
            if any(s > 16 * MiB for s in sizes):
                break
            time.sleep(0.01)
        assert push.poll() is None, "the push ended before the server could be killed"
        crash_server.stop(signal.SIGKILL)
        output = push.communicate(timeout=120)[0].decode(errors="replace")
        assert push.returncode != 0, output
    finally:
        if push.poll() is None:
            push.kill()
            push.wait()

    crash_server.start()
    # The session the crash interrupted is usable at once (its lease was freed at start).
    leftover = [p.name for p in uploads.iterdir()]
    with httpx.Client(base_url=crash_server.url, timeout=60) as c:
        for upload_id in leftover:
            loc = f"/v2/crash/skopeo/blobs/uploads/{upload_id}"
            status = c.get(loc)
            if status.status_code != 204:
                continue  # a session without a row (the crash came before it was recorded)
            end = int(status.headers["Range"].split("-")[1])
            size = end + 1 if end else 0  # "0-0": empty (our sessions are never one byte)
            r = c.patch(loc, content=b"x", headers={"Content-Range": f"{size}-{size}"})
            assert r.status_code == 202, r.text
            assert c.delete(loc).status_code == 204

    skopeo.client_env.run([*base, "--retry-times", "3", f"oci:{layout}:v1", dest])
    with httpx.Client(base_url=crash_server.url, timeout=120) as c:
        r = c.get("/v2/crash/skopeo/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == image.manifest.data
        digest = image.layers[0].digest
        got = c.get(f"/v2/crash/skopeo/blobs/{digest}")
        assert got.status_code == 200 and sha256(got.content) == digest
        assert json.loads(c.get(f"/v2/crash/skopeo/blobs/{image.config.digest}").content)
