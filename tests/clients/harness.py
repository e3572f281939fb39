"""Handles on the registry under test and on the command-line clients (used by conftest)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .ocigen import MANIFEST_ACCEPT

CLIENT_TIMEOUT = float(os.environ.get("MOORAGE_TEST_CLIENT_TIMEOUT", "180"))


class BearerAuth(httpx.Auth):
    """Answer a ``WWW-Authenticate: Bearer`` challenge with an anonymous token.

    Only used if the registry asks for it; lets the raw HTTP checks work against a registry that
    wants a (possibly anonymous) token even for pulls.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = request.url.path
        for scope_key, token in self._tokens.items():
            if key.startswith(scope_key):
                request.headers["Authorization"] = f"Bearer {token}"
                break
        response = yield request
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or not challenge.lower().startswith("bearer "):
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return
        token_response = yield httpx.Request("GET", realm, params=params)
        if token_response.status_code != 200:
            return
        body = json.loads(token_response.read())
        token = body.get("token") or body.get("access_token")
        if not token:
            return
        m = re.match(r"(/v2/.+?)/(manifests|blobs|tags|referrers)/", key)
        self._tokens[m.group(1) if m else "/v2/"] = token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


@dataclass
class Registry:
    kind: str  # "moorage" or "distribution"
    host: str  # "127.0.0.1:PORT" (what clients put in image references)
    url: str  # "http://127.0.0.1:PORT"
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    http: httpx.Client = field(repr=False)

    @property
    def supports_referrers(self) -> bool:
        # Distribution 2.8.2 predates OCI 1.1: no referrers API, no OCI-Subject header.
        return self.kind != "distribution"

    def ref(self, repo: str, tag_or_digest: str) -> str:
        sep = "@" if ":" in tag_or_digest else ":"
        return f"{self.host}/{repo}{sep}{tag_or_digest}"

    def get_manifest(
        self, repo: str, reference: str, accept: str = MANIFEST_ACCEPT, method: str = "GET"
    ) -> httpx.Response:
        return self.http.request(
            method, f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept}
        )

    def get_blob(self, repo: str, digest: str, method: str = "GET") -> httpx.Response:
        return self.http.request(method, f"/v2/{repo}/blobs/{digest}", follow_redirects=True)

    def tags(self, repo: str) -> httpx.Response:
        return self.http.get(f"/v2/{repo}/tags/list")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int, limit: int = 20000) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        text = data.decode(errors="replace")
        if len(text) > limit:
            text = "[... earlier lines cut ...]\n" + text[-limit:]
        return text


@dataclass
class ClientEnv:
    """Environment and config files shared by skopeo, podman and buildah in this session."""

    root: Path
    env: dict[str, str]
    registries_conf: Path
    registries_d: Path
    policy: Path

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        timeout: float = CLIENT_TIMEOUT,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a client command; on failure (when ``check``) raise with its full output."""
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                timeout=timeout,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"timed out after {timeout}s: {' '.join(argv)}\n"
                f"stdout:\n{(exc.stdout or b'').decode(errors='replace')}\n"
                f"stderr:\n{(exc.stderr or b'').decode(errors='replace')}"
            ) from None
        if check and proc.returncode != 0:
            raise AssertionError(
                f"exit code {proc.returncode}: {' '.join(argv)}\n"
                f"stdout:\n{proc.stdout.decode(errors='replace')}\n"
                f"stderr:\n{proc.stderr.decode(errors='replace')}"
            )
        return proc


def make_client_env(root: Path, host: str) -> ClientEnv:
    """Isolated config, policy, auth file and blob-info cache for skopeo/podman/buildah talking
    to the registry at *host* (``127.0.0.1:PORT``, insecure)."""
    dirs = {
        name: root / name for name in ("home", "data", "config", "runtime", "tmp", "registries.d")
    }
    for d in dirs.values():
        d.mkdir(parents=True)
    dirs["runtime"].chmod(0o700)
    registries_conf = root / "registries.conf"
    registries_conf.write_text(
        "unqualified-search-registries = []\n"
        'short-name-mode = "disabled"\n\n'
        "[[registry]]\n"
        f'location = "{host}"\n'
        "insecure = true\n"
    )
    auth_file = dirs["runtime"] / "auth.json"
    auth_file.write_text(json.dumps({"auths": {}}))
    auth_file.chmod(0o600)
    policy = root / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    containers_conf = root / "containers.conf"
    (root / "libpod-tmp").mkdir()
    (root / "networks").mkdir()
    containers_conf.write_text(
        "[engine]\n"
        'lock_type = "file"\n'
        'events_logger = "none"\n'
        f'tmp_dir = "{root / "libpod-tmp"}"\n'
        f'image_copy_tmp_dir = "{dirs["tmp"]}"\n'
        "[network]\n"
        f'network_config_dir = "{root / "networks"}"\n'
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(dirs["home"]),
        "XDG_DATA_HOME": str(dirs["data"]),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_RUNTIME_DIR": str(dirs["runtime"]),
        "TMPDIR": str(dirs["tmp"]),
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        "CONTAINERS_CONF": str(containers_conf),
        "REGISTRY_AUTH_FILE": str(auth_file),
        # containers/image picks its blob-info cache dir from this uid (see tests/clients/conftest.py).
        "_CONTAINERS_ROOTLESS_UID": str(os.getuid() or 1000),
        "_CONTAINERS_USERNS_CONFIGURED": "1",
    }
    return ClientEnv(root, env, registries_conf, dirs["registries.d"], policy)


class Skopeo:
    """skopeo with the session's isolated registries.conf, registries.d, policy and cache."""

    def __init__(self, binary: str, client_env: ClientEnv) -> None:
        self.binary = binary
        self.client_env = client_env

    def __call__(
        self, *args: str, check: bool = True, debug: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [
            self.binary,
            *(["--debug"] if debug else []),
            "--registries-conf",
            str(self.client_env.registries_conf),
            "--registries.d",
            str(self.client_env.registries_d),
            "--policy",
            str(self.client_env.policy),
            *args,
        ]
        return self.client_env.run(argv, check=check)


@dataclass
class Engine:
    """podman or buildah bound to a private vfs storage."""

    name: str
    binary: str
    storage: Path
    client_env: ClientEnv

    def argv(self, *args: str) -> list[str]:
        base = [
            self.binary,
            "--storage-driver",
            "vfs",
            "--root",
            str(self.storage / "root"),
            "--runroot",
            str(self.storage / "runroot"),
        ]
        if self.name == "podman":
            base += [
                "--tmpdir",
                str(self.storage / "libpod"),
                "--events-backend",
                "none",
                "--network-config-dir",
                str(self.client_env.root / "networks"),
            ]
        return [*base, *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = CLIENT_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        return self.client_env.run(self.argv(*args), check=check, timeout=timeout)

    def out(self, *args: str) -> str:
        return self(*args).stdout.decode().strip()
