"""Time machine: ``moorage tags history REPOSITORY:TAG`` lists what a tag pointed to (newest
first), GC keeps those manifests for ``gc.history_days``, and ``moorage tags restore
REPOSITORY:TAG DIGEST`` points the tag back."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ..conftest import MoorageServer, image_manifest, put_manifest, sha256
from .conftest import cli, gc_server


@pytest.fixture(scope="module")
def history_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with gc_server(backend, MOORAGE_GC_ENABLED="false", MOORAGE_GC_HISTORY_DAYS="7") as srv:
        yield srv


def test_history_survives_gc_and_restores(history_server: MoorageServer, repo: str) -> None:
    with httpx.Client(base_url=history_server.url, timeout=60) as c:
        first, second = image_manifest(c, repo), image_manifest(c, repo)
        assert put_manifest(c, repo, "app", first).status_code == 201
        assert put_manifest(c, repo, "app", second).status_code == 201
        r = cli(history_server, "tags", "history", f"{repo}:app")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("current") and sha256(second) in lines[0]
        assert sha256(first) in lines[1] and "(gone)" not in lines[1]

        gc = cli(history_server, "gc", "run")
        assert gc.returncode == 0 and sha256(first) not in gc.stdout, gc.stdout

        r = cli(history_server, "tags", "restore", f"{repo}:app", sha256(first))
        assert r.returncode == 0, r.stderr
        got = c.get(f"/v2/{repo}/manifests/app")
        assert got.status_code == 200 and got.content == first
        lines = cli(history_server, "tags", "history", f"{repo}:app").stdout.splitlines()
        assert sha256(first) in lines[0] and sha256(second) in lines[1]

        # A deleted tag can be restored as well.
        assert c.delete(f"/v2/{repo}/manifests/app").status_code == 202
        assert cli(history_server, "gc", "run").returncode == 0
        r = cli(history_server, "tags", "restore", f"{repo}:app", sha256(second))
        assert r.returncode == 0, r.stderr
        assert c.get(f"/v2/{repo}/manifests/app").content == second


def test_restore_refuses_what_is_gone(history_server: MoorageServer, repo: str) -> None:
    r = cli(history_server, "tags", "restore", f"{repo}:app", "sha256:" + "0" * 64)
    assert r.returncode == 1 and ("not known" in r.stderr or "no longer" in r.stderr)
    r = cli(history_server, "tags", "history", "not a reference")
    assert r.returncode == 1 and "REPOSITORY:TAG" in r.stderr
