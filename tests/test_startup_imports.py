"""What a started ``moorage serve`` holds in memory: rare features' libraries are imported when
first used, not at start (issue 9: the server's resident memory).

Each case runs ``moorage serve`` as the command line does (cli/serve.py: configuration,
migrations of a fresh data directory, the application and its lifespan start-up) in a fresh
interpreter, with ``uvicorn.run`` replaced by a start-up and shutdown of the application that
then lists ``sys.modules``. No port is listened on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import asyncio, sys

import uvicorn


def run(app, **_kw):
    async def lifespan():
        inbox = asyncio.Queue()
        sent = []

        async def send(message):
            sent.append(message["type"])

        await inbox.put({"type": "lifespan.startup"})
        task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send))
        while not sent:
            await asyncio.sleep(0.02)
        assert sent == ["lifespan.startup.complete"], sent
        print("\n".join(sorted(sys.modules)))
        await inbox.put({"type": "lifespan.shutdown"})
        await task

    asyncio.run(lifespan())


uvicorn.run = run
from moorage.cli import main

sys.exit(main(sys.argv[1:]))
"""

# Imported at start before issue 9; each only for a feature a default server may never use.
FIRST_USE = {
    "httpx": "replication, mirrors, webhooks, external scanners, OIDC",
    "httpcore": "httpx's transport",
    "trio": "httpcore's optional backend",
    "joserfc": "OIDC sign-in",
    "rfc8785": "the sigstore trust root (content trust)",
    "cryptography.x509": "content trust configurations",
}
# With access control off, none of these either.
NO_AUTH_FIRST_USE = {
    "jwt": "Bearer tokens",
    "cryptography": "token signing keys",
    "jinja2": "the web UI (off without accounts)",
    "moorage.api.app": "the REST API /api/v1 (off without accounts)",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _modules_after_start(tmp_path: Path, *flags: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["MOORAGE_ADMIN_PASSWORD"] = "startup-imports-test-password"
    argv = ["serve", "--host", "127.0.0.1", "--port", str(_free_port())]
    argv += ["--data-dir", str(tmp_path / "data"), *flags]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


@pytest.mark.parametrize("flags", [("--no-auth",), ()], ids=["no-auth", "auth"])
def test_rare_features_not_imported_at_start(tmp_path: Path, flags: tuple[str, ...]) -> None:
    loaded = _modules_after_start(tmp_path, *flags)
    assert "moorage.app" in loaded and "moorage.runtime" in loaded  # the probe did start it
    lazy = dict(FIRST_USE)
    if flags == ("--no-auth",):
        lazy.update(NO_AUTH_FIRST_USE)
    early = {m: why for m, why in lazy.items() if m in loaded}
    assert not early, f"imported at start, but only needed for: {early}"


def test_script_heads_are_alembics() -> None:
    """db/engine.py reads the migration scripts' head without Alembic: the same as Alembic's."""
    from alembic.script import ScriptDirectory

    from moorage.db.engine import alembic_config, script_heads

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script_heads() == frozenset(script.get_heads())


def test_alembic_not_imported_when_the_schema_is_current(tmp_path: Path) -> None:
    first = _modules_after_start(tmp_path, "--no-auth")
    assert "alembic" in first  # a fresh data directory is migrated
    again = _modules_after_start(tmp_path, "--no-auth")
    assert "alembic" not in again and "mako" not in again
