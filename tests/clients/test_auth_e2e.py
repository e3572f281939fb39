"""Logins with real clients against a registry with access control on (the default).

podman login + push + pull, skopeo --creds, and a robot's secret used by CI — all through the full
Bearer token flow (401 challenge → /auth/token with Basic credentials → signed JWT → retry).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, admin_cli

from .harness import Engine, Skopeo
from .ocigen import make_image, write_layout
from .test_podman import rootfs_tarball

pytestmark = pytest.mark.clients
TLS = "--tls-verify=false"
PASSWORD = "e2e-password-123"


def token_requests(server: MoorageServer) -> int:
    return server.log().count("path=/auth/token status=200")


def test_podman_login_push_pull(auth_server: MoorageServer, podman: Engine, tmp_path: Path) -> None:
    admin_cli(auth_server, "create-user", "pat", "--password-stdin", stdin=PASSWORD + "\n")
    authfile = tmp_path / "auth.json"
    host = auth_server.host
    files = {"hello.txt": os.urandom(100)}
    local = "localhost/e2e/podman:v1"
    image_id = podman.out(
        "import", str(rootfs_tarball(tmp_path / "r.tar.gz", files)), local
    ).splitlines()[-1]
    remote = f"{host}/pat/app:v1"
    # Without logging in: refused.
    denied = podman(
        "push", TLS, "--authfile", str(authfile), local, f"docker://{remote}", check=False
    )
    assert denied.returncode != 0
    before = token_requests(auth_server)
    login = podman.client_env.run(
        podman.argv("login", TLS, "--authfile", str(authfile), "-u", "pat", "-p", PASSWORD, host)
    )
    assert login.returncode == 0
    assert json.loads(authfile.read_text())["auths"][host]["auth"]
    podman("push", TLS, "--authfile", str(authfile), local, f"docker://{remote}")
    assert token_requests(auth_server) > before  # the Bearer flow, not Basic on /v2
    podman("rmi", local)
    pulled = podman.out("pull", TLS, "--authfile", str(authfile), remote)
    assert pulled.splitlines()[-1].removeprefix("sha256:") == image_id.removeprefix("sha256:")
    # Someone else cannot read it.
    admin_cli(auth_server, "create-user", "eve", "--password-stdin", stdin=PASSWORD + "\n")
    other = tmp_path / "eve.json"
    podman.client_env.run(
        podman.argv("login", TLS, "--authfile", str(other), "-u", "eve", "-p", PASSWORD, host)
    )
    assert podman("pull", TLS, "--authfile", str(other), remote, check=False).returncode != 0
    # A wrong password does not log in.
    bad = podman.client_env.run(
        podman.argv(
            "login",
            TLS,
            "--authfile",
            str(tmp_path / "x.json"),
            "-u",
            "pat",
            "-p",
            "wrong-one",
            host,
        ),
        check=False,
    )
    assert bad.returncode != 0


def test_skopeo_creds_and_robot(auth_server: MoorageServer, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    write_layout(layout, {"1": make_image()})
    admin_cli(auth_server, "create-org", "ciorg")
    host = auth_server.host
    dest = f"docker://{host}/ciorg/app:1"
    # The administrator pushes with --dest-creds.
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        f"admin:{ADMIN_PASSWORD}",
        f"oci:{layout}:1",
        dest,
    )
    # A robot scoped to push ciorg/app, secret shown once, used as user/password by CI.
    out = admin_cli(
        auth_server, "create-robot", "ciorg", "builder", "--access", "ciorg/app=pull,push"
    )
    creds = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    robot = f"{creds['name']}:{creds['secret']}"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        robot,
        f"oci:{layout}:1",
        f"docker://{host}/ciorg/app:2",
    )
    inspected = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", "--creds", robot, f"docker://{host}/ciorg/app:2"
        ).stdout
    )
    assert inspected["Name"] == f"{host}/ciorg/app"
    # Outside its scope: refused.
    res = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        robot,
        f"oci:{layout}:1",
        f"docker://{host}/ciorg/other:1",
        check=False,
    )
    assert res.returncode != 0
    # Revoked: refused.
    admin_cli(auth_server, "revoke-robot", creds["name"])
    res = skopeo(
        "inspect",
        "--tls-verify=false",
        "--creds",
        robot,
        f"docker://{host}/ciorg/app:2",
        check=False,
    )
    assert res.returncode != 0
    # Anonymous: private by default.
    res = skopeo(
        "inspect", "--tls-verify=false", "--no-creds", f"docker://{host}/ciorg/app:1", check=False
    )
    assert res.returncode != 0
    admin_cli(auth_server, "set-visibility", "ciorg/app", "public")
    res = skopeo("inspect", "--tls-verify=false", "--no-creds", f"docker://{host}/ciorg/app:1")
    assert res.returncode == 0
