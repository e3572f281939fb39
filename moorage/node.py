"""Who this process is, for upload leases: ``node#incarnation#pid``.

- *node*: the host and the port it serves (``host:port``) — the same after a restart, different
  for every node of a cluster (two nodes cannot listen on one host's port).
- *incarnation*: one run of ``moorage serve``, shared by its worker processes (the supervisor
  sets ``MOORAGE_NODE_INCARNATION`` before it starts them); a restart is a new incarnation.
- *pid*: the worker process.

A restarted node frees the leases of its earlier incarnations at start (their requests died with
them), and a worker finding a lease of a dead sibling worker (same incarnation, process gone)
takes it over at once; other nodes' leases expire after ``registry.upload_lease_seconds``.
"""

from __future__ import annotations

import os
import socket
import uuid

INCARNATION_ENV = "MOORAGE_NODE_INCARNATION"


def new_incarnation() -> str:
    """Start a new incarnation for this process and the workers it starts."""
    value = uuid.uuid4().hex[:16]
    os.environ[INCARNATION_ENV] = value
    return value


def incarnation() -> str:
    return os.environ.get(INCARNATION_ENV) or new_incarnation()


def node_name(port: int) -> str:
    return f"{socket.gethostname()}:{port}"


def holder(node: str) -> str:
    return f"{node}#{incarnation()}#{os.getpid()}"


def holder_is_dead(value: str | None, node: str) -> bool:
    """Whether the lease *value* names a process of this node that is certainly gone: an
    earlier incarnation, or a worker of this one that no longer runs."""
    if not value:
        return False
    parts = value.split("#")
    if len(parts) != 3 or parts[0] != node:
        return False  # another node's (or an older release's): let its lease expire
    if parts[1] != incarnation():
        return True
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
