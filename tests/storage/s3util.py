"""Helpers for S3 driver tests (the session's moto server is the `moto` fixture of tests/conftest.py)."""

from __future__ import annotations

from moorage.storage.s3 import S3Driver, S3Settings
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer

MiB = 1024 * 1024


def make_s3(moto: MotoServer, bucket: str, prefix: str = "", **kw: object) -> S3Driver:
    """An S3 driver on *moto*'s *bucket* (path-style, test credentials); *kw*: S3Settings."""
    settings = S3Settings(
        bucket=bucket,
        region=REGION,
        endpoint=moto.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        prefix=prefix,
        path_style=True,
        **kw,  # type: ignore[arg-type]
    )
    return S3Driver(settings)
