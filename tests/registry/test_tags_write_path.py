"""A push by digest with several tags on the raw write path (db/writepath.py), the path taken
when no capability hooks into manifest pushes: each tag points at the manifest, keeps its sha512
digest, and a moved tag leaves history — as on the SQLAlchemy path the served registry takes
(tests/registry/test_manifests.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from moorage.oci.digest import Digest
from moorage.services.events import ManifestPushed
from moorage.services.manifests import ManifestService
from moorage.services.uploads import UploadService

from .services import service_context

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _manifest(config_digest: str, size: int, n: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": size,
            },
            "layers": [],
            "annotations": {"n": str(n)},
        }
    ).encode()


async def test_raw_path_points_every_tag_at_a_sha512_manifest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    async with service_context(url, tmp_path / "store") as ctx:
        manifests = ManifestService(ctx)
        assert not ctx.rules.checks_writes and not ctx.events.wants(ManifestPushed)  # raw path
        config = b'{"os":"linux","architecture":"amd64"}'
        cfg = "sha256:" + hashlib.sha256(config).hexdigest()
        await UploadService(ctx).monolithic("p/r", Digest.parse(cfg), _one(config))
        first, second = _manifest(cfg, len(config), 1), _manifest(cfg, len(config), 2)
        d1 = "sha512:" + hashlib.sha512(first).hexdigest()
        result = await manifests.put("p/r", d1, first, OCI_MANIFEST, tags=("a", "b"))
        assert (result.digest, result.tags) == (d1, ("a", "b"))
        for ref in ("a", "b", d1):
            got = await manifests.get("p/r", ref, [])
            assert (got.digest, got.payload) == (d1, first)
        d2 = "sha512:" + hashlib.sha512(second).hexdigest()
        await manifests.put("p/r", d2, second, OCI_MANIFEST, tags=("b",))
        assert (await manifests.get("p/r", "b", [])).digest == d2
        assert (await manifests.get("p/r", "a", [])).digest == d1
        assert await manifests.tags("p/r", None, 10) == ["a", "b"]
        async with ctx.engine.connect() as conn:
            history = (
                await conn.exec_driver_sql("SELECT name, manifest_digest FROM tag_history")
            ).all()
        assert [tuple(r) for r in history] == [("b", d1)]
