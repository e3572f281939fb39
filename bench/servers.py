"""Start and stop the registries under test, and sample their memory.

Each server runs on 127.0.0.1 on a free port, with its storage in a fresh directory of its
own, in a new session (process group) so that it and any worker processes it forks can be
stopped by the process id this module started, and nothing else.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerSpec:
    """How to launch one registry: its argv, once a port and a data dir are known."""

    name: str
    kind: str  # "distribution" or "moorage"
    ready_path: str
    workers: int = 1
    _argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    quiet: bool = True  # Distribution: log errors only, no access log
    blob_cache: str = "inmemory"  # Distribution: storage.cache.blobdescriptor

    def argv(self, port: int, data_dir: Path) -> list[str]:
        return [a.format(host=HOST, port=port, data_dir=data_dir) for a in self._argv]


def distribution_spec(
    binary: str, name: str = "distribution", quiet: bool = True, blob_cache: str = "inmemory"
) -> ServerSpec:
    """CNCF Distribution with filesystem storage (RunningServer writes its config file).

    ``blob_cache`` is ``storage.cache.blobdescriptor``: ``inmemory`` as in the configuration
    Distribution ships, or ``""`` for none.
    """
    return ServerSpec(
        name=name,
        kind="distribution",
        ready_path="/v2/",
        _argv=[binary, "serve"],
        quiet=quiet,
        blob_cache=blob_cache,
    )


def moorage_spec(
    cmd: str, workers: int, config: str | None, name: str, env: dict[str, str] | None = None
) -> ServerSpec:
    """Moorage from ``cmd``.

    ``cmd`` is either a launcher prefix (``moorage``, ``python -m moorage.cli``, a path) to
    which ``serve --host H --port P --data-dir D --workers N [--config F]`` is appended, or a
    full command line containing ``{port}`` (and optionally ``{host}``, ``{data_dir}``,
    ``{workers}``, ``{config}``), used as given.
    """
    parts = shlex.split(cmd)
    if any("{port}" in p for p in parts):
        argv = [
            p.replace("{workers}", str(workers)).replace("{config}", config or "") for p in parts
        ]
    else:
        argv = [
            *parts,
            "serve",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--data-dir",
            "{data_dir}",
            "--workers",
            str(workers),
        ]
        if config:
            argv += ["--config", config]
    return ServerSpec(
        name=name,
        kind="moorage",
        ready_path="/readyz",
        workers=workers,
        _argv=argv,
        env=env or {},
    )


DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: {level}
  accesslog:
    disabled: {no_access_log}
storage:
{cache}  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {host}:{port}
"""


class ServerError(RuntimeError):
    pass


class RunningServer:
    """A started registry process. Use :func:`running` rather than this class directly."""

    def __init__(self, spec: ServerSpec, work: Path) -> None:
        self.spec = spec
        self.work = work
        self.port = free_port()
        self.data_dir = work / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def registry(self) -> str:
        """host:port, as skopeo's docker:// references want it."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _argv(self) -> list[str]:
        argv = self.spec.argv(self.port, self.data_dir)
        if self.spec.kind == "distribution":
            config = self.work / "config.yml"
            config.write_text(
                DISTRIBUTION_CONFIG.format(
                    root=self.data_dir,
                    host=HOST,
                    port=self.port,
                    level="error" if self.spec.quiet else "info",
                    no_access_log="true" if self.spec.quiet else "false",
                    cache=(
                        f"  cache:\n    blobdescriptor: {self.spec.blob_cache}\n"
                        if self.spec.blob_cache
                        else ""
                    ),
                )
            )
            argv.append(str(config))
        return argv

    def start(self, timeout: float = 60.0) -> None:
        argv = self._argv()
        env = [f"{k}={v}" for k, v in self.spec.env.items()]
        (self.work / "argv.txt").write_text(shlex.join([*env, *argv]) + "\n")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.spec.env},
                start_new_session=True,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        url = self.base_url + self.spec.ready_path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.spec.name} exited with {self.proc.returncode} before it was ready; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise ServerError(
            f"{self.spec.name} not ready at {url} after {timeout}s; log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM our process; SIGKILL its process group (which we created) if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Workers of a multi-process server may outlive a stuck parent: clean up the group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)


@contextmanager
def running(spec: ServerSpec, work: Path) -> Iterator[RunningServer]:
    server = RunningServer(spec, work)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- memory -------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    children = _children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_bytes(pids: list[int]) -> int:
    """Sum of resident set sizes (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, with that of reaped children) of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / _CLK_TCK


def wait_idle(
    root_pid: int,
    settle: float = 0.0,
    interval: float = 0.1,
    busy_below: float = 0.25,
    timeout: float = 900.0,
) -> float:
    """Wait until the process tree of *root_pid* is idle: it used less than *busy_below* of one
    CPU in every *interval* of a stretch of *settle* seconds (at least one interval). CPU time
    is counted in clock ticks (10 ms) over the whole tree: with the defaults up to two ticks in an
    interval are idle (timers and polls of a supervisor and its workers: an idle two-worker
    Moorage uses ~2 ticks a second), three are busy (background work runs at a full core: 10). Returns
    the seconds of the intervals in which it was busy meanwhile: how long the server went on
    working after the client was done (queued audit records, background jobs such as scans).

    Idle gaps are not counted, so a *settle* longer than the server's job-poll interval catches
    jobs queued for later without charging the wait for them."""
    t0 = time.perf_counter()
    busy = quiet = 0.0
    pids = process_tree(root_pid)
    before = cpu_seconds(pids)
    while quiet < max(settle, interval):
        start = time.perf_counter()
        time.sleep(interval)
        pids = process_tree(root_pid)
        now = cpu_seconds(pids)
        elapsed = time.perf_counter() - start
        if now - before < busy_below * elapsed:
            quiet += elapsed
        else:
            busy += elapsed
            quiet = 0.0
        before = now
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"pid {root_pid} still busy after {timeout:.0f} s")
    return busy


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread.

    ``window(name)`` records the peak seen while its block runs; ``peak`` is the peak over the
    sampler's whole life. The tree (which processes) is re-read every ``rescan`` samples, so
    worker processes started late are picked up.
    """

    def __init__(self, root_pid: int, interval: float = 0.05, rescan: int = 10) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.rescan = rescan
        self.peak = 0
        self.windows: dict[str, int] = {}
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        return rss_bytes(process_tree(self.root_pid))

    def _run(self) -> None:
        pids: list[int] = []
        n = 0
        while not self._stop.is_set():
            if n % self.rescan == 0:
                pids = process_tree(self.root_pid)
            n += 1
            rss = rss_bytes(pids)
            with self._lock:
                self.peak = max(self.peak, rss)
                for name in self._active:
                    self.windows[name] = max(self.windows.get(name, 0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _record(self, name: str, rss: int) -> None:
        with self._lock:
            self.peak = max(self.peak, rss)
            self.windows[name] = max(self.windows.get(name, 0), rss)

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Track the peak while the block runs (also sampled on entry and exit)."""
        self._record(name, self.sample())
        with self._lock:
            self._active.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._active.discard(name)
            self._record(name, self.sample())
