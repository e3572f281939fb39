"""A Moorage cluster on loopback: one PostgreSQL database of its own, shared storage, three
``moorage serve`` nodes with the same configuration, and HAProxy in front of them running
deploy/haproxy.cfg (active health checks on /readyz).

Every process is a child of the test run, started on a free loopback port and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ..conftest import (
    PG_ADMIN_URL,
    STARTUP_TIMEOUT,
    MoorageServer,
    free_port,
    postgres_database,
    stop_process,
)
from ..s3server import MotoServer

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy.cfg"
NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"
ADMIN_PASSWORD = "ha-admin-password-1"
# Storage variants of the session cluster (MOORAGE_TEST_HA_STORAGE=s3 runs one).
STORAGES = [s for s in os.environ.get("MOORAGE_TEST_HA_STORAGE", "s3,filesystem").split(",") if s]
# A dead node's upload lease is taken over after this long (the default is 15 s).
LEASE_SECONDS = 2.0
# On SIGTERM a node answers 503 on /readyz this long before it stops listening: well above
# HAProxy's 2 failed checks at 0.5-1 s intervals (deploy/haproxy.cfg).
DRAIN_SECONDS = 5.0


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 60, interval: float = 0.1
) -> None:
    """Poll *check* until it holds; fail with *what* after *timeout* (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def readyz(url: str) -> int:
    """Status of GET /readyz, or 0 when nothing answers."""
    try:
        return httpx.get(f"{url}/readyz", timeout=3, trust_env=False).status_code
    except httpx.HTTPError:
        return 0


class _Balancer:
    """A load balancer in the foreground, a child of this process, on a free loopback port."""

    name = "balancer"
    stop_signal = signal.SIGTERM

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.log_path = work / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        binary = shutil.which(self.name)
        if binary is None:
            raise RuntimeError(f"{self.name} is not installed (apt-get install {self.name})")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(f"{self.name} to listen", self._listening, timeout=STARTUP_TIMEOUT)

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text(errors='replace')}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal)
            self.proc = None


class HAProxy(_Balancer):
    """HAProxy in the foreground (``-db``) on deploy/haproxy.cfg, addresses in its environment."""

    name = "haproxy"

    def __init__(self, work: Path, nodes: list[str]) -> None:
        super().__init__(work)
        self.socket_path = work / "haproxy.sock"
        self.env = dict(os.environ)
        self.env["MOORAGE_LB_BIND"] = f"127.0.0.1:{self.port}"
        self.env["MOORAGE_LB_STATS_SOCKET"] = str(self.socket_path)
        for i, node in enumerate(nodes, 1):
            self.env[f"MOORAGE_NODE{i}"] = node

    def start(self) -> HAProxy:
        self._spawn(["-db", "-f", str(HAPROXY_CFG)], self.env)
        return self

    def command(self, cmd: str) -> str:
        """A command on the stats socket (the runtime API)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def server_states(self) -> dict[str, str]:
        """``{"node1": "UP", "node2": "DOWN", ...}`` as the health checks see them; ``{}``
        while HAProxy has not opened its stats socket yet (just started, a loaded machine)."""
        try:
            lines = self.command("show stat").splitlines()
        except (FileNotFoundError, ConnectionRefusedError):
            return {}
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "moorage" and row.get("svname", "").startswith("node"):
                states[row["svname"]] = row["status"].split(" ")[0]
        return states


class Nginx(_Balancer):
    """nginx in the foreground on deploy/nginx.conf, rendered with loopback addresses and paths
    in *work* (nginx reads no environment variables in its configuration)."""

    name = "nginx"
    stop_signal = signal.SIGQUIT  # graceful: finish open requests

    def __init__(self, work: Path, nodes: list[str]) -> None:
        super().__init__(work)
        conf = NGINX_CONF.read_text()
        examples = re.findall(r"server (10\.0\.0\.\d+:\d+)", conf)
        assert len(examples) == len(nodes), "deploy/nginx.conf names one server per node"
        for example, node in zip(examples, nodes, strict=True):
            conf = conf.replace(f"server {example}", f"server {node}")
        conf = conf.replace("listen 5000;", f"listen 127.0.0.1:{self.port};")
        conf = conf.replace(
            "access_log /var/log/nginx/moorage.access.log;",
            f"access_log {work}/nginx-access.log;\n"
            + "".join(
                f"    {kind}_temp_path {work}/nginx-{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        )
        self.conf = work / "nginx.conf"
        self.conf.write_text(conf)

    def start(self) -> Nginx:
        globals_ = f"daemon off; error_log {self.log_path}; pid {self.work}/nginx.pid;"
        self._spawn(["-c", str(self.conf), "-p", f"{self.work}/", "-g", globals_])
        return self


class Cluster:
    """Three nodes behind HAProxy over one PostgreSQL database and one shared store:
    ``storage="s3"`` (a bucket on moto's server, behind a relay that can cut it off) or
    ``"filesystem"`` (one directory every node mounts, as NFS would be).

    ``auth=False`` runs the nodes with ``--no-auth`` (for tests about storage and failover);
    with ``auth=True`` they share the administrator (ADMIN_PASSWORD) and token signing keys.
    ``migrate="cli"`` applies migrations once with ``moorage db upgrade`` before the nodes start
    (the nodes do not migrate); ``"start"`` lets every node migrate at start, all at once.
    """

    def __init__(
        self,
        work: Path,
        *,
        nodes: int = 3,
        auth: bool = False,
        migrate: str = "cli",
        storage: str = "s3",
        balancer: str = "haproxy",
        env: dict[str, str] | None = None,
        pg_admin_url: str | None = None,
    ) -> None:
        self.work = work
        self.pg_admin_url = pg_admin_url  # None: the shared server (tests/conftest.py)
        self.n_nodes = nodes
        self.auth = auth
        self.migrate = migrate
        self.extra_env = env or {}
        self.storage = storage
        self.balancer = balancer
        self.database_url = ""
        self.storage_root = work / "shared-storage"
        self.s3: MotoServer | None = None
        self.nodes: list[MoorageServer] = []
        self.lb: HAProxy | Nginx | None = None
        self._stack = ExitStack()

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.database_url = self._stack.enter_context(
                postgres_database(self.pg_admin_url or PG_ADMIN_URL)
            )
            self.storage_root.mkdir(parents=True, exist_ok=True)
            if self.storage == "s3":
                self.s3 = self._stack.enter_context(MotoServer(log_dir=self.work))
                self.s3.create_bucket("moorage-ha")
            if self.migrate == "cli":
                self.moorage("db", "upgrade")
            self.nodes = [self._node(i) for i in range(self.n_nodes)]
            self._stack.callback(self._stop_nodes)
            with ThreadPoolExecutor(self.n_nodes) as pool:  # all at the same moment
                list(pool.map(lambda n: n.start(timeout=STARTUP_TIMEOUT), self.nodes))
            balancer = HAProxy if self.balancer == "haproxy" else Nginx
            self.lb = balancer(self.work, [n.host for n in self.nodes]).start()
            self._stack.callback(self.lb.stop)
            self.wait_lb({f"node{i + 1}": "UP" for i in range(self.n_nodes)})
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def env(self) -> dict[str, str]:
        """The configuration every node shares (as environment variables)."""
        env = {
            "MOORAGE_DATABASE_URL": self.database_url,
            "MOORAGE_DATABASE_MIGRATE_ON_START": "true" if self.migrate == "start" else "false",
            "MOORAGE_REGISTRY_UPLOAD_LEASE_SECONDS": str(LEASE_SECONDS),
            "MOORAGE_HTTP_SHUTDOWN_TIMEOUT": "10",
            "MOORAGE_HTTP_DRAIN_SECONDS": str(DRAIN_SECONDS),
        }
        if self.s3 is not None:
            env.update(self.s3.env("moorage-ha"))
        else:
            env["MOORAGE_STORAGE_DRIVER"] = "filesystem"
            env["MOORAGE_STORAGE_FILESYSTEM_ROOT"] = str(self.storage_root)
        if self.auth:
            env["MOORAGE_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        env.update(self.extra_env)
        return env

    def _node(self, i: int) -> MoorageServer:
        data_dir = self.work / f"node{i + 1}" / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        return MoorageServer(
            data_dir,
            database_url=self.database_url,
            extra_args=[] if self.auth else ["--no-auth"],
            env=self.env(),
        )

    def _stop_nodes(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:  # each drains first: in parallel
            list(pool.map(lambda n: n.stop(), self.nodes))

    def moorage(self, *args: str) -> str:
        """``moorage ARGS`` with the cluster's configuration; returns standard output."""
        env = dict(os.environ)
        env.update(self.env())
        r = subprocess.run(
            [sys.executable, "-m", "moorage.cli", *args, "--data-dir", str(self.work / "cli")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode != 0:
            raise RuntimeError(f"moorage {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    # --- handles ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The load balancer: what clients use."""
        assert self.lb is not None
        return self.lb.url

    @property
    def host(self) -> str:
        assert self.lb is not None
        return self.lb.host

    def client(self, node: int | None = None, **kwargs: Any) -> httpx.Client:
        """An HTTP client on the load balancer, or straight on node *node* (0-based)."""
        base = self.url if node is None else self.nodes[node].url
        kwargs.setdefault("timeout", 120)
        if self.auth:
            kwargs.setdefault("auth", ("admin", ADMIN_PASSWORD))
        return httpx.Client(base_url=base, trust_env=False, **kwargs)

    def kill(self, node: int) -> None:
        """SIGKILL: no draining, no cleanup (a crash, a power cut, the OOM killer)."""
        self.nodes[node].stop(signal.SIGKILL)

    def restart(self, node: int) -> None:
        """Start a stopped node again on its port and wait until the LB sends it traffic."""
        self.nodes[node].start(timeout=STARTUP_TIMEOUT)
        self.wait_lb({f"node{node + 1}": "UP"})

    def wait_lb(self, expected: dict[str, str], timeout: float = 60) -> None:
        """Wait until HAProxy's health checks see the nodes as *expected* (UP / DOWN). nginx
        has no active checks (nothing to wait for)."""
        lb = self.lb
        if not isinstance(lb, HAProxy):
            return

        def matches() -> bool:
            states = lb.server_states()
            return all(states.get(k) == v for k, v in expected.items())

        wait_for(f"haproxy to see {expected} (now {lb.server_states()})", matches, timeout)

    def psql(self, sql: str) -> list[list[str]]:
        """Rows of a query on the cluster's database (to check for duplicates)."""
        out = subprocess.run(
            ["psql", self.database_url, "-v", "ON_ERROR_STOP=1", "-qAt", "-F", "\t", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def logs(self) -> str:
        parts = []
        for i, node in enumerate(self.nodes):
            text = node.log()
            # Warnings and errors from the whole log (a refused request's cause is often far
            # above the tail), then the tail.
            problems = [ln for ln in text.splitlines() if " WARNING " in ln or " ERROR " in ln]
            parts.append(
                f"--- node{i + 1} ({node.host}): warnings and errors ---\n"
                + "\n".join(problems[-40:])
            )
            parts.append(f"--- node{i + 1} ({node.host}) ---\n{text[-6000:]}")
        if self.lb is not None and self.lb.log_path.exists():
            parts.append(
                f"--- {self.lb.name} ---\n{self.lb.log_path.read_text(errors='replace')[-4000:]}"
            )
        return "\n".join(parts)


@contextlib.contextmanager
def cluster(work: Path, **kwargs: Any) -> Iterator[Cluster]:
    with Cluster(work, **kwargs) as c:
        yield c
