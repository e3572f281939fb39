"""Signed-only pulls end to end, with the real clients, against ``moorage serve`` (access control
on, SQLite and PostgreSQL):

- the operator configures trust with ``moorage trust ...`` while the server runs;
- an unsigned image is refused to podman and skopeo pulls (403 DENIED naming the policy);
- its cosign signature (a ``sha256-<hex>.sig`` manifest) is copied by skopeo into a staging
  repository, and skopeo copies image and signature from there into the enforced one (reading
  and writing cosign attachments); the same pulls then succeed;
- a Notation signature is pushed as a referrer with oras (Python ORAS client) and makes another
  image pullable;
- a signer with push rights reads by digest what it signs, and reads signatures;
- removing the key flips the verdict (the server sees the CLI's change within its refresh
  interval, the background job re-verifies), adding it back flips it again.

The fixtures' own signatures (tests/data/trust) sign images whose layers are not in the
fixtures, and Debian's skopeo and podman are built without sigstore signing ("Debian-local
change: sigstore disabled"), so the signatures are made here in the tools' exact formats
(phase 1's tests check the verifier on the real tools' signatures).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import oras.client
import oras.oci
import pytest

from moorage.trust import Subject
from tests.clients.harness import ClientEnv, Engine, Skopeo, make_client_env
from tests.clients.ocigen import OCI_MANIFEST, REF_NAME, Blob, make_image, write_layout
from tests.conftest import ADMIN_PASSWORD, MoorageServer, admin_cli, moorage_cli, postgres_database

from .helpers import make_ca, make_leaf, new_key, notation_jws, notation_payload, public_pem
from .push import SIMPLE_SIGNING, cosign_layers

pytestmark = pytest.mark.clients
TLS = "--tls-verify=false"
NOTATION = "application/vnd.cncf.notary.signature"
JWS = "application/jose+json"


@pytest.fixture(scope="module")
def server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="moorage-trust-e2e-") as tmp:
        db = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with db as url:
            srv = MoorageServer(
                Path(tmp) / "data",
                database_url=url,
                env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, "MOORAGE_JOBS_POLL_SECONDS": "0.5"},
            ).start()
            try:
                yield srv
            finally:
                srv.stop()


@pytest.fixture(scope="module")
def env(server: MoorageServer, tmp_path_factory: pytest.TempPathFactory) -> ClientEnv:
    client_env = make_client_env(tmp_path_factory.mktemp("trust-clients"), server.host)
    # skopeo writes and reads cosign signatures as OCI attachments for this registry.
    (client_env.registries_d / "moorage.yaml").write_text(
        f"docker:\n  {server.host}:\n    use-sigstore-attachments: true\n"
    )
    return client_env


@pytest.fixture(scope="module")
def skopeo(env: ClientEnv) -> Skopeo:
    binary = shutil.which("skopeo")
    if not binary:
        pytest.skip("skopeo is not installed")
    return Skopeo(binary, env)


@pytest.fixture
def podman(env: ClientEnv) -> Iterator[Engine]:
    import tempfile

    binary = shutil.which("podman")
    if not binary:
        pytest.skip("podman is not installed")
    # podman refuses a runroot longer than 50 characters: keep the storage path short.
    storage = Path(tempfile.mkdtemp(prefix="mt-p-"))
    for sub in ("root", "runroot", "libpod"):
        (storage / sub).mkdir()
    yield Engine("podman", binary, storage, env)
    shutil.rmtree(storage, ignore_errors=True)


def trust_cli(server: MoorageServer, *args: str) -> str:
    r = moorage_cli(server, "trust", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def robot(server: MoorageServer, org: str, name: str, access: str) -> str:
    out = admin_cli(server, "create-robot", org, name, "--access", access)
    creds = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return f"{creds['name']}:{creds['secret']}"


def api(server: MoorageServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=("admin", ADMIN_PASSWORD), timeout=30)


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Wait for a state that other processes reach in the background (the server's refresh of
    a CLI change, a job run); fail with *what* if it never comes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def write_signature_layout(path: Path, tag: str, layers: list[tuple[bytes, dict[str, str]]]) -> Path:
    """cosign's ``.sig`` manifest (simple-signing payload layers, signature annotations) as an
    OCI layout skopeo can copy."""
    config = Blob("application/vnd.oci.image.config.v1+json", b"{}")
    blobs = [Blob(SIMPLE_SIGNING, payload) for payload, _ in layers]
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [b.descriptor(annotations=notes) for b, (_, notes) in zip(blobs, layers, strict=True)],
    }
    manifest = Blob(OCI_MANIFEST, json.dumps(doc).encode())
    (path / "blobs" / "sha256").mkdir(parents=True)
    for b in (config, *blobs, manifest):
        (path / "blobs" / "sha256" / b.digest.split(":", 1)[1]).write_bytes(b.data)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "manifests": [manifest.descriptor(annotations={REF_NAME: tag})]}
    (path / "index.json").write_text(json.dumps(index))
    return path


def v2_get(server: MoorageServer, creds: str, repo: str, path: str, actions: str) -> httpx.Response:
    """A /v2 read with a bearer token for *actions* on *repo* (the flow every client runs)."""
    user, password = creds.split(":", 1)
    token = httpx.get(
        f"{server.url}/auth/token",
        params={"service": server.host, "scope": f"repository:{repo}:{actions}"},
        auth=(user, password),
    ).json()["token"]
    return httpx.get(
        f"{server.url}/v2/{repo}/{path}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.oci.image.manifest.v1+json"},
    )


def trust_of(server: MoorageServer, repo: str, ref: str) -> dict[str, Any]:
    with api(server) as c:
        r = c.get(f"/api/v1/repositories/{repo}/-/manifests/{ref}/trust")
        assert r.status_code == 200, r.text
        return dict(r.json())


def test_signed_only_pulls_with_real_clients(
    server: MoorageServer, skopeo: Skopeo, podman: Engine, tmp_path: Path
) -> None:
    host = server.host
    admin_cli(server, "create-org", "acme")
    key = new_key("p256")
    (tmp_path / "cosign.pub").write_bytes(public_pem(key))
    out = trust_cli(server, "add-key", "acme", "release", "--public-key", str(tmp_path / "cosign.pub"))
    assert "trusted key release in acme" in out
    out = trust_cli(server, "set-policy", "acme/app", "--require-signature", "on", "--signer", "release")
    assert "signed-only: one of release" in out
    puller = robot(server, "acme", "deploy", "acme=pull")
    signer = robot(server, "acme", "ci", "acme=pull,push")

    layout = tmp_path / "layout"
    image = make_image()
    write_layout(layout, {"1": image})
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", signer, f"oci:{layout}:1", f"docker://{host}/acme/app:1")
    digest = image.digest

    # Unsigned: refused to podman and skopeo, with the policy named.
    denied = podman("pull", TLS, "--creds", puller, f"{host}/acme/app:1", check=False)
    assert denied.returncode != 0
    assert b"content trust policy 'acme/app'" in denied.stderr and b"missing: release" in denied.stderr
    denied = skopeo("copy", "--src-tls-verify=false", "--src-creds", puller, f"docker://{host}/acme/app:1", f"dir:{tmp_path / 'd1'}", check=False)
    assert denied.returncode != 0 and b"content trust policy" in denied.stderr
    # The signer reads by digest what it is about to sign, with a token for pull and push (as
    # cosign sign and notation sign ask for); by tag it is refused, and so is a pull-only token
    # (skopeo inspect asks for pull alone: that is a pull, whoever makes it).
    r = v2_get(server, signer, "acme/app", f"manifests/{digest}", "pull,push")
    assert r.status_code == 200 and json.loads(r.content)["config"]["digest"] == image.config.digest
    assert v2_get(server, signer, "acme/app", "manifests/1", "pull,push").status_code == 403
    inspect = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", signer, f"docker://{host}/acme/app@{digest}", check=False)
    assert inspect.returncode != 0 and b"content trust policy" in inspect.stderr
    contract = trust_of(server, "acme/app", "1")
    assert contract["verdict"] == "unsigned" and contract["policy"]["missing"] == ["release"]

    # The image and its cosign signature in a staging repository (no policy): skopeo copies
    # the signature artifact there from an OCI layout, then copies image and signature over
    # (it reads and writes cosign attachments: registries.d use-sigstore-attachments).
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", signer, f"oci:{layout}:1", f"docker://{host}/acme/staging:1")
    sig_tag = digest.replace(":", "-") + ".sig"
    sig_layout = write_signature_layout(
        tmp_path / "sig-layout", sig_tag, cosign_layers(digest, [key], f"{host}/acme/staging:1")
    )
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", signer, f"oci:{sig_layout}:{sig_tag}", f"docker://{host}/acme/staging:{sig_tag}")
    skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
        "--src-creds", signer, "--dest-creds", signer,
        f"docker://{host}/acme/staging:1", f"docker://{host}/acme/app:1",
    )  # fmt: skip

    # Now the same pulls work.
    pulled = podman("pull", TLS, "--creds", puller, f"{host}/acme/app:1")
    assert pulled.returncode == 0
    copied = tmp_path / "d2"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", puller, f"docker://{host}/acme/app:1", f"dir:{copied}")
    assert (copied / "signature-1").exists()  # the signature came along (an attachment read)
    contract = eventually(
        lambda: (t := trust_of(server, "acme/app", "1"))["verdict"] == "trusted" and t,
        "the trusted verdict",
    )
    [s] = contract["signatures"]
    assert s["kind"] == "cosign" and s["verified"] is True and s["key"] == "release"
    with api(server) as c:
        detail = c.get("/api/v1/repositories/acme/app/-/manifests/1/signatures").json()
    assert detail["signatures"][0]["docker_reference"] == f"{host}/acme/staging:1"
    status = moorage_cli(server, "trust", "status", "acme/app", "1")
    assert status.returncode == 0 and json.loads(status.stdout)["verdict"] == "trusted"

    # Removing the key: every node refuses within its refresh interval; the job re-verifies.
    trust_cli(server, "remove-key", "acme", "release")
    eventually(
        lambda: podman("pull", TLS, "--creds", puller, f"{host}/acme/app:1", check=False).returncode != 0,
        "the pull to be refused after the key was removed",
    )
    contract = eventually(
        lambda: (t := trust_of(server, "acme/app", "1"))["verdict"] == "untrusted" and t,
        "the re-verification",
    )
    assert contract["signatures"][0]["verified"] is False
    assert "no cosign public key is configured" in contract["signatures"][0]["reason"]
    # Adding it back: trusted again.
    trust_cli(server, "add-key", "acme", "release", "--public-key", str(tmp_path / "cosign.pub"))
    eventually(
        lambda: podman("pull", TLS, "--creds", puller, f"{host}/acme/app:1", check=False).returncode == 0,
        "the pull to work again",
    )
    # Every refusal was audited, every configuration change too.
    with api(server) as c:
        events = c.get("/api/v1/audit", params={"action": "trust.pull.denied", "limit": 200}).json()["events"]
        assert any(e["repository"] == "acme/app" and e["details"]["policy"] == "acme/app" for e in events)
        changes = c.get("/api/v1/audit", params={"action": "trust.entry.remove"}).json()["events"]
        assert changes and changes[0]["actor"].startswith("cli:") and changes[0]["actor_type"] == "system"
    listing = trust_cli(server, "list", "acme")
    assert "key\trelease\tsha256:" in listing and "policy\tacme/app\tsigned-only" in listing


def test_notation_referrer_pushed_with_oras(server: MoorageServer, podman: Engine, tmp_path: Path) -> None:
    host = server.host
    admin_cli(server, "create-org", "notary")
    root = make_ca("Notary Root")
    leaf = make_leaf(root, "notary-signer")
    (tmp_path / "root.pem").write_bytes(root.pem)
    out = trust_cli(server, "add-notation-store", "notary", "corp", "--root-cert", str(tmp_path / "root.pem"))
    assert "ca:corp in notary holds 1 certificate" in out
    trust_cli(server, "set-policy", "notary", "--require-signature", "on", "--signer", "corp")
    signer = robot(server, "notary", "ci", "notary=pull,push")
    puller = robot(server, "notary", "deploy", "notary=pull")
    image = make_image()
    layout = tmp_path / "layout"
    write_layout(layout, {"1": image})
    skopeo = Skopeo(shutil.which("skopeo") or "skopeo", podman.client_env)
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", signer, f"oci:{layout}:1", f"docker://{host}/notary/svc:1")
    # The new policy holds on every node within its refresh interval (not at once).
    eventually(
        lambda: podman("pull", TLS, "--creds", puller, f"{host}/notary/svc:1", check=False).returncode != 0,
        "the unsigned image's pull to be refused",
    )

    # oras pushes the Notation signature: the envelope as the one layer, the image as subject.
    subject = Subject(image.digest, image.manifest.media_type, image.manifest.size)
    envelope = tmp_path / "sig.jws"
    envelope.write_bytes(notation_jws(leaf, [root], notation_payload(subject)))
    config = tmp_path / "config.json"
    config.write_text("{}")
    user, password = signer.split(":", 1)
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.session.trust_env = False
    client.auth.set_basic_auth(user, password)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # oras-py wants files under the working directory
    try:
        response = client.push(
            f"{host}/notary/svc:sig",
            files=[f"sig.jws:{JWS}"],
            manifest_config=f"config.json:{NOTATION}",
            subject=oras.oci.Subject(mediaType=subject.media_type, digest=subject.digest, size=subject.size),
            manifest_annotations={"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
            quiet=True,
        )
    finally:
        os.chdir(cwd)
    assert response.status_code == 201
    assert podman("pull", TLS, "--creds", puller, f"{host}/notary/svc:1").returncode == 0
    contract = eventually(
        lambda: (t := trust_of(server, "notary/svc", image.digest))["signatures"][0]["reason"] != "not verified yet" and t,
        "the verification job",
    )
    assert contract["verdict"] == "trusted"
    [s] = contract["signatures"]
    assert s["kind"] == "notation" and s["key"] == "ca:corp" and "CN=notary-signer" in s["signer"]
    # The referrers API and the signature manifest are open to the puller (notation verify).
    r = v2_get(server, puller, "notary/svc", f"referrers/{image.digest}", "pull")
    assert r.status_code == 200 and len(r.json()["manifests"]) == 1
    sig = r.json()["manifests"][0]["digest"]
    assert v2_get(server, puller, "notary/svc", f"manifests/{sig}", "pull").status_code == 200
