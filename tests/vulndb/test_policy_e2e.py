"""The issue's proof for pull policies, end to end with the scanner: an image built from a real
dpkg status entry (Debian 12, libc6 from source glibc 2.36-9+deb12u2), pushed with skopeo,
scanned on push and matched against DEBIAN-CVE-2023-4911 (CVSS 7.8, high); skopeo and podman
are refused while the policy blocks "high", allowed once CVE-2023-4911 (the record's upstream
id) is allow-listed, blocked again when the entry has expired; a reader by digest with push
rights is never blocked. Needs the scan capability (moorage/scan/wiring.py, branch scaninv)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("moorage.scan.wiring", reason="the scan capability is not in this tree yet")

from tests.clients.harness import Engine, Skopeo, make_client_env  # noqa: E402
from tests.clients.ocigen import make_image, make_layer, write_layout  # noqa: E402
from tests.conftest import ADMIN_PASSWORD, moorage_cli  # noqa: E402

from .conftest import RECORDS, auth_server  # noqa: E402

OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'
DPKG_STATUS = b"""Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12986
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u2
Description: GNU C Library: Shared libraries

"""


def _wait(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_blocked_allowed_blocked_again_with_skopeo_and_podman() -> None:
    skopeo_bin, podman_bin = shutil.which("skopeo"), shutil.which("podman")
    if not skopeo_bin:
        pytest.skip("skopeo is not installed")
    root = Path(tempfile.mkdtemp(prefix="moorage-vuln-e2e-"))
    try:
        with auth_server() as srv:
            creds = f"admin:{ADMIN_PASSWORD}"
            env = make_client_env(root / "clients", srv.host)
            skopeo = Skopeo(skopeo_bin, env)
            r = moorage_cli(srv, "vulndb", "import", str(RECORDS / "debian"))
            assert r.returncode == 0, r.stderr

            base = make_layer({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS})
            image = make_image(n_layers=1, base=[base])
            layout = write_layout(root / "layout", {"1": image})
            ref = f"docker://{srv.host}/acme/debian:1"
            skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:1", ref)

            api = httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD), timeout=30)

            def scanned() -> Any:
                body = api.get(
                    "/api/v1/repositories/acme/debian/-/manifests/1/vulnerabilities"
                ).json()
                return body if body.get("status") == "done" else None

            report = _wait("the scan on push", scanned)
            ids = sorted(f["id"] for f in report["findings"])
            assert ids == ["DEBIAN-CVE-2023-4911", "DSA-5514-1"], report
            high = next(f for f in report["findings"] if f["id"] == "DEBIAN-CVE-2023-4911")
            assert (
                high["severity"],
                high["cvss_score"],
                high["fixed_version"],
                high["package"],
            ) == ("high", 7.8, "2.36-9+deb12u3", "libc6")

            def inspect(reference: str = ref) -> Any:
                return skopeo(
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    "--creds",
                    creds,
                    reference,
                    check=False,
                )

            def policy(*allow: str) -> None:
                args = ["admin", "set-vulnerability-policy", "acme", "--block-severity", "high"]
                r = moorage_cli(srv, *args, *(["--allow", *allow] if allow else []))
                assert r.returncode == 0, r.stderr

            policy()
            blocked = _wait("the policy to apply", lambda: (p := inspect()).returncode != 0 and p)
            err = blocked.stderr.decode()
            assert "the vulnerability policy of acme blocks this image" in err, err
            assert (
                "DEBIAN-CVE-2023-4911 (high, libc6 2.36-9+deb12u2, fixed in 2.36-9+deb12u3)" in err
            )
            if podman_bin:
                podman = Engine("podman", podman_bin, root / "podman", env)
                p = podman(
                    "pull",
                    "--tls-verify=false",
                    "--creds",
                    creds,
                    f"{srv.host}/acme/debian:1",
                    check=False,
                )
                assert (
                    p.returncode != 0
                    and "the vulnerability policy of acme blocks this image" in p.stderr.decode()
                )
            # by digest, by a caller whose credentials carry push rights (a signer, an
            # attester): never blocked. (skopeo inspect asks a pull-only token: refused.)
            digest = image.manifest.digest
            accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
            assert api.get(f"/v2/acme/debian/manifests/{digest}", headers=accept).status_code == 200
            assert inspect(f"docker://{srv.host}/acme/debian@{digest}").returncode != 0

            policy("CVE-2023-4911:2099-12-31")  # the upstream id allows the DEBIAN-CVE record
            _wait("the allow-list entry", lambda: inspect().returncode == 0)
            if podman_bin:
                podman("pull", "--tls-verify=false", "--creds", creds, f"{srv.host}/acme/debian:1")

            policy("CVE-2023-4911:2020-01-01")  # expired
            _wait("the expired entry to block again", lambda: inspect().returncode != 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
