"""S3 addressing by default (`storage.s3.path_style: auto`, issue 9): a registry configured
with only an endpoint (MinIO, Ceph RGW, moto: `http://127.0.0.1:9000`) works, where
virtual-hosted addressing would resolve `bucket.127.0.0.1`; AWS keeps virtual-hosted; true or
false still forces either."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from moorage.config import load_config
from moorage.storage.s3 import S3Driver, S3Settings
from tests.conftest import MoorageServer, image_manifest, push_blob, put_manifest, sha256
from tests.s3server import MotoServer


def test_a_registry_configured_with_the_endpoint_alone(moto: MotoServer) -> None:
    bucket = moto.create_bucket(f"auto-{uuid.uuid4().hex[:12]}")
    env = moto.env(bucket)
    del env["MOORAGE_STORAGE_S3_PATH_STYLE"]  # the endpoint alone, as the docs show
    with tempfile.TemporaryDirectory(prefix="moorage-s3auto-") as tmp:
        srv = MoorageServer(Path(tmp) / "data", extra_args=["--no-auth"], env=env).start()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                repo = "auto/app"
                data = os.urandom(70_000)
                digest = push_blob(c, repo, data)
                payload = image_manifest(c, repo)
                assert put_manifest(c, repo, "v1", payload).status_code == 201
                r = c.get(f"/v2/{repo}/blobs/{digest}")
                assert r.status_code == 200 and r.content == data
                assert c.get(f"/v2/{repo}/manifests/v1").content == payload
                assert c.get("/readyz").status_code == 200
        finally:
            srv.stop()
    # the bytes are in the bucket, under path-style keys the moto server saw
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert f"blobs/sha256/{sha256(data)[7:9]}/{sha256(data)[7:]}" in keys


def _driver(endpoint: str | None, path_style: bool | None) -> S3Driver:
    return S3Driver(
        S3Settings(
            bucket="bk",
            endpoint=endpoint,
            access_key_id="AKIDEXAMPLE",
            secret_access_key="secret",
            path_style=path_style,
        )
    )


@pytest.mark.parametrize(
    ("endpoint", "forced", "expected"),
    [
        ("http://127.0.0.1:9000", None, True),
        ("http://[::1]:9000", None, True),
        ("http://localhost:9000", None, True),
        ("http://minio:9000", None, True),
        ("https://rgw.example.net", None, True),
        (None, None, False),  # AWS
        ("https://s3.eu-west-1.amazonaws.com", None, False),
        ("http://127.0.0.1:9000", False, False),
        ("http://minio:9000", False, False),
        (None, True, True),
    ],
)
def test_auto_and_forced_addressing(
    endpoint: str | None, forced: bool | None, expected: bool
) -> None:
    assert _driver(endpoint, forced).path_style is expected


def test_config_values() -> None:
    base = {"MOORAGE_STORAGE_DRIVER": "s3", "MOORAGE_STORAGE_S3_BUCKET": "bk"}
    assert load_config(None, environ=base).storage.s3.path_style == "auto"
    for raw, value in (("auto", "auto"), ("true", True), ("false", False)):
        env = base | {"MOORAGE_STORAGE_S3_PATH_STYLE": raw}
        assert load_config(None, environ=env).storage.s3.path_style == value
