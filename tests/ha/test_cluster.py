"""A cluster starting from nothing, and real clients going through its load balancer.

Three nodes start at the same moment on an empty database, each migrating at start (under the
advisory lock) and bootstrapping the administrator and the token signing key; then skopeo pushes
and pulls through HAProxy with a login whose tokens are signed by one node and checked by others.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..clients.checks import assert_image_in_layout, assert_image_in_registry
from ..clients.harness import Registry, Skopeo, make_client_env
from ..clients.ocigen import Layout, make_image, write_layout
from .client import Counters, pull_image
from .harness import ADMIN_PASSWORD, Cluster

pytestmark = pytest.mark.ha


@pytest.fixture(scope="module")
def auth_cluster(ha_tmp: Path) -> Iterator[Cluster]:
    with Cluster(ha_tmp / "auth-cluster", auth=True, migrate="start") as c:
        yield c


def test_three_nodes_starting_together_on_an_empty_database(auth_cluster: Cluster) -> None:
    # All three came up (the fixture waited for /readyz on each and for HAProxy's checks).
    assert auth_cluster.lb is not None
    assert set(auth_cluster.lb.server_states().values()) == {"UP"}
    assert auth_cluster.psql("SELECT username FROM users") == [["admin"]]
    assert auth_cluster.psql("SELECT count(*) FROM signing_keys WHERE superseded_at IS NULL") == [
        ["1"]
    ]
    head = auth_cluster.psql("SELECT version_num FROM alembic_version")
    assert len(head) == 1


def test_skopeo_push_and_pull_through_the_load_balancer(
    auth_cluster: Cluster, tmp_path: Path
) -> None:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed")
    skopeo = Skopeo(binary, make_client_env(tmp_path / "clients", auth_cluster.host))
    creds = f"admin:{ADMIN_PASSWORD}"
    image = make_image(n_layers=4, layer_size=3 << 20)
    src = write_layout(tmp_path / "src", {"v1": image})
    dest = f"docker://{auth_cluster.host}/ha/skopeo:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{src}:v1", dest)

    # Every node serves what went in through the LB, byte for byte.
    for node in range(3):
        with auth_cluster.client(node) as http:
            pull_image(http, "ha/skopeo", "v1", image, Counters())
    with auth_cluster.client() as http:
        registry = Registry(
            "moorage",
            auth_cluster.host,
            auth_cluster.url,
            tmp_path,
            tmp_path / "none",
            None,
            http,  # type: ignore[arg-type]
        )
        assert_image_in_registry(registry, "ha/skopeo", "v1", image)

    dst = tmp_path / "dst"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, dest, f"oci:{dst}:v1")
    layout = Layout(dst)
    assert_image_in_layout(layout, layout.descriptor("v1")["digest"], image)
