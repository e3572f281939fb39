"""containerd itself pulling through a cache organization, configured as docs/mirror.md says:
a ``hosts.toml`` in a hosts directory (``ctr --hosts-dir``), both forms the docs give — the bare
Moorage host (containerd adds ``?ns=<registry>``, Moorage picks the cache of that registry) and
the cache's path with ``override_path``.

The test runs a containerd daemon of its own (its own root, state and socket, the CRI plugin
off, the native snapshotter) and never touches a system one. The registry named in the image
reference is the Distribution upstream, but the hosts.toml ``server`` (containerd's fallback) is a
port nothing listens on: a pull that succeeds came through Moorage, byte for byte, and containerd
verified every digest while unpacking it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import MoorageServer, free_port, stop_process
from tests.replication.peers import Distribution

from .conftest import create_cache, wait_cached
from .test_clients import _push_image


@dataclass
class Containerd:
    socket: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def ctr(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "moorage-test", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-10000:]


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd (and its ctr client) is not installed")
    # A short directory: a unix socket path must stay under 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="ctd-"))
    socket = tmp / "containerd.sock"
    config = tmp / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{tmp / "root"}"\n'
        f'state = "{tmp / "state"}"\n'
        "disabled_plugins = [\n"
        '  "io.containerd.grpc.v1.cri",\n'
        '  "io.containerd.snapshotter.v1.aufs",\n'
        '  "io.containerd.snapshotter.v1.btrfs",\n'
        '  "io.containerd.snapshotter.v1.devmapper",\n'
        '  "io.containerd.snapshotter.v1.zfs",\n'
        "]\n"
        "[grpc]\n"
        f'  address = "{socket}"\n'
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f'  path = "{tmp / "opt"}"\n'
    )
    log_path = tmp / "containerd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    daemon = Containerd(socket, proc, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"containerd exited early:\n{daemon.log()}")
            if socket.exists() and daemon.ctr("version", timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start:\n{daemon.log()}")
            time.sleep(0.2)
        yield daemon
    finally:
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _hosts_dir(root: Path, registry: str, host_key: str, *extra: str) -> Path:
    """A containerd hosts directory for *registry*: Moorage first, then a ``server`` (the
    fallback) nothing answers on."""
    hosts = root / "certs.d"
    (hosts / registry).mkdir(parents=True)
    dead = f"http://127.0.0.1:{free_port()}"
    (hosts / registry / "hosts.toml").write_text(
        f'server = "{dead}"\n\n'
        f'[host."{host_key}"]\n'
        '  capabilities = ["pull", "resolve"]\n' + "".join(f"  {line}\n" for line in extra)
    )
    return hosts


def _pull(daemon: Containerd, hosts: Path, ref: str) -> str:
    """``ctr image pull`` as docs/mirror.md writes it (no ``--plain-http``: the ``http://`` in
    the host key is enough), unpacked with the native snapshotter; the digest containerd recorded
    for *ref*."""
    r = daemon.ctr("images", "pull", "--hosts-dir", str(hosts), "--snapshotter", "native", ref)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{daemon.log()}"
    listing = daemon.ctr("images", "ls")
    assert listing.returncode == 0, listing.stderr
    for line in listing.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == ref:
            digest = next(f for f in fields if re.fullmatch(r"sha256:[0-9a-f]{64}", f))
            return digest
    raise AssertionError(f"{ref} not in containerd's images:\n{listing.stdout}")


def _upstream_digest(upstream: Distribution, repo: str, tag: str) -> str:
    r = httpx.head(
        f"{upstream.url}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    assert r.status_code == 200
    return r.headers["docker-content-digest"]


def _assert_held(mirror: MoorageServer, cache: str, repo: str, tag: str, digest: str) -> None:
    """The cache organization now holds the image (tags/list answers only what is held)."""
    wait_cached(mirror, f"{cache}/{repo}", tag)
    r = httpx.head(
        f"{mirror.url}/v2/{cache}/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["docker-content-digest"] == digest


def test_containerd_pulls_through_the_ns_parameter(
    containerd: Containerd, mirror: MoorageServer, upstream: Distribution, uid: str, tmp_path: Path
) -> None:
    repo = f"team/ctd{uid}"
    pushed = _push_image(upstream.url, repo, "v1")
    cache = f"c{uid}"
    create_cache(mirror, cache, upstream.url)
    registry = upstream.url.removeprefix("http://")
    # docs/mirror.md's first form: the bare Moorage host; the cache is found by ?ns=<registry>.
    hosts = _hosts_dir(tmp_path, registry, mirror.url)
    pulled = _pull(containerd, hosts, f"{registry}/{repo}:v1")
    assert pulled == pushed == _upstream_digest(upstream, repo, "v1")
    _assert_held(mirror, cache, repo, "v1", pulled)


def test_containerd_pulls_through_the_cache_path(
    containerd: Containerd, mirror: MoorageServer, upstream: Distribution, uid: str, tmp_path: Path
) -> None:
    repo = f"team/ctp{uid}"
    pushed = _push_image(upstream.url, repo, "v1")
    cache = f"p{uid}"
    create_cache(mirror, cache, upstream.url)
    registry = upstream.url.removeprefix("http://")
    # docs/mirror.md's second form: the cache named in the host key, with override_path.
    hosts = _hosts_dir(tmp_path, registry, f"{mirror.url}/v2/{cache}", "override_path = true")
    pulled = _pull(containerd, hosts, f"{registry}/{repo}:v1")
    assert pulled == pushed == _upstream_digest(upstream, repo, "v1")
    _assert_held(mirror, cache, repo, "v1", pulled)
