"""When the vulnerability data changes, stored scans are matched again from their inventories
(job vulndb.rematch): an image scanned before its advisory was imported shows the finding after
``moorage vulndb import``, without being scanned again."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import (
    ADMIN_PASSWORD,
    image_manifest,
    moorage_cli,
    put_manifest,
)

from .conftest import RECORDS, auth_server
from .test_policy_e2e import DPKG_STATUS, OS_RELEASE


def _layer(files: dict[str, bytes]) -> bytes:
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _wait(check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_import_rematches_stored_scans() -> None:
    with (
        auth_server() as srv,
        httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD), timeout=30) as c,
    ):
        layer = _layer({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS})
        payload = image_manifest(c, "acme/debian", layers=[layer])
        assert put_manifest(c, "acme/debian", "1", payload).status_code == 201
        url = "/api/v1/repositories/acme/debian/-/manifests/1/vulnerabilities"

        def report(pred: Any) -> Any:
            body = c.get(url).json()
            return body if pred(body) else None

        first = _wait(lambda: report(lambda b: b.get("status") == "done"))
        assert first and first["findings"] == [] and first["database_updated_at"] is None, first
        scanned_at = first["scanned_at"]

        r = moorage_cli(srv, "vulndb", "import", str(RECORDS / "debian"))
        assert r.returncode == 0, r.stderr
        after = _wait(lambda: report(lambda b: len(b.get("findings", [])) == 2))
        assert after, c.get(url).json()
        assert sorted(f["id"] for f in after["findings"]) == ["DEBIAN-CVE-2023-4911", "DSA-5514-1"]
        assert (
            after["status"] == "done" and after["scanned_at"] == scanned_at
        )  # matched, not rescanned
        assert after["database_updated_at"] is not None
        assert after["summary"]["high"] == 1
