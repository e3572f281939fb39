"""In process: the receiver address policy (server-side request forgery), the pinned request,
and ``hooks.publish`` — the function the scan, policy and replication capabilities call — whose
deliveries commit with the caller's transaction or not at all."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moorage import hooks
from moorage.config import Config, load_config
from moorage.db.engine import create_engine, upgrade
from moorage.hooks import queries as q
from moorage.hooks.config import WebhooksConfig
from moorage.hooks.delivery import AddressPolicy, Deliverer, check_url
from moorage.hooks.service import create_in
from moorage.runtime import Runtime, start_runtime, stop_runtime

from .conftest import events_of
from .receiver import WebhookReceiver

SECRET = "publish-test-secret-0123456789"
# The runtime fixture's job runner runs on the session loop: the async tests share it.
SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("address", "public_only", "loopback_allowed"),
    [
        ("93.184.216.34", True, True),
        ("2606:2800:220:1:248:1893:25c8:1946", True, True),
        ("127.0.0.1", False, True),
        ("127.0.0.2", False, False),
        ("::1", False, False),
        ("::ffff:127.0.0.1", False, True),  # IPv4-mapped: judged as the IPv4 address
        ("10.1.2.3", False, False),
        ("192.168.1.1", False, False),
        ("172.16.0.1", False, False),
        ("100.64.0.1", False, False),  # carrier-grade NAT
        ("169.254.169.254", False, False),  # cloud metadata
        ("fe80::1", False, False),
        ("fd00::1", False, False),
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
    ],
)
def test_address_policy(address: str, public_only: bool, loopback_allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert AddressPolicy(WebhooksConfig()).allows(ip) is public_only
    with_loopback = AddressPolicy(WebhooksConfig(allowed_networks=["127.0.0.1/32"]))
    assert with_loopback.allows(ip) is loopback_allowed
    closed = AddressPolicy(WebhooksConfig(public_networks=False, allowed_networks=["127.0.0.1/32"]))
    assert closed.allows(ip) is (loopback_allowed and not ip.is_global)


def test_urls_are_checked_when_added() -> None:
    policy = AddressPolicy(WebhooksConfig())
    assert check_url("https://hooks.example.com/x?y=1", policy)
    for bad in (
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://[::1]/x",
        "http://169.254.169.254/",
        "file:///etc/passwd",
        "https://a:b@example.com/",
        "https://example.com/#f",
        "https://exa mple.com/",
        "https://example.com:99999/",
        "https://",
        "x" * 3000,
    ):
        with pytest.raises(ValueError):
            check_url(bad, policy)


@SESSION_LOOP
async def test_the_check_is_made_at_delivery_and_the_checked_address_is_used(
    tmp_path: Path,
) -> None:
    """``localhost`` resolves to loopback: refused under the default policy (the receiver sees
    nothing); allowed, the request goes to the checked address with the name kept as Host."""
    engine = create_engine(f"sqlite:///{tmp_path}/unused.db", 1)  # send() reads nothing
    with WebhookReceiver() as rx:
        url = f"http://localhost:{rx.port}/hook"
        refused = Deliverer(engine, WebhooksConfig(), None)
        try:
            out = await refused.send(url, b"{}", "application/json", SECRET, {})
        finally:
            await refused.close()
        assert out.status is None and out.error is not None and "127.0.0.1" in out.error
        allowed = Deliverer(engine, WebhooksConfig(allowed_networks=["127.0.0.1/32"]), None)
        try:
            out = await allowed.send(url, b'{"a":1}', "application/json", SECRET, {"X-T": "1"})
        finally:
            await allowed.close()
        assert out.status == 200 and out.ok, out
        (got,) = rx.wait_for(1)
        assert got.headers["host"] == f"localhost:{rx.port}" and got.headers["x-t"] == "1"
        hooks.verify(got.headers["x-moorage-signature"], got.body, SECRET)
        assert len(rx.deliveries) == 1
    await engine.dispose()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = load_config(
        None,
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "auth.enabled": False,
            "jobs.poll_seconds": 0.1,
            "webhooks.allowed_networks": ["127.0.0.1/32"],
            "http.base_url": "https://registry.example.com",
        },
    )
    await upgrade(config.database_url)
    rt = await start_runtime(config, run_jobs=True)
    try:
        yield rt
    finally:
        await stop_runtime(rt)


async def _hook(rt: Runtime, config: Config, target: str, url: str, events: list[str]) -> int:
    async with rt.ctx.write_engine.begin() as conn:
        return await create_in(
            conn,
            config,
            scope="repository" if "/" in target else "namespace",
            target=target,
            url=url,
            events=events,
            fmt="distribution",
            secret=SECRET,
            description="",
            actor="test",
        )


@SESSION_LOOP
async def test_publish_commits_with_the_callers_transaction(runtime: Runtime) -> None:
    rt = runtime
    with WebhookReceiver() as rx:
        hook_id = await _hook(rt, rt.config, "acme", rx.url("/scan"), ["scan", "policy"])
        target = hooks.Target("acme/app", "sha256:" + "a" * 64, "application/x", 10, tag="v1")
        now = datetime.now(UTC)
        scan = hooks.scan_completed_event(
            target, hooks.source(), status="done", summary={"critical": 1}, scanned_at=now
        )
        # Rolled back: nothing was recorded, so nothing is announced.
        with pytest.raises(RuntimeError):
            async with rt.ctx.write_engine.begin() as conn:
                assert await hooks.publish(conn, scan) == 1
                raise RuntimeError("the scan's own transaction fails")
        async with rt.ctx.engine.connect() as conn:
            assert await q.list_deliveries(conn, hook_id) == []
        # Committed: delivered by the job queue.
        async with rt.ctx.write_engine.begin() as conn:
            assert await hooks.publish(conn, scan) == 1
            # Kinds the webhook did not subscribe to, and other organizations: nothing.
            other = hooks.Target("other/app", "sha256:" + "b" * 64)
            assert await hooks.publish(conn, hooks.push_event(target, hooks.source())) == 0
            assert (
                await hooks.publish(
                    conn,
                    hooks.scan_completed_event(
                        other, hooks.source(), status="done", summary={}, scanned_at=now
                    ),
                )
                == 0
            )
        got = await asyncio.to_thread(rx.wait_for, 1)
        hooks.verify(got[0].headers["x-moorage-signature"], got[0].body, SECRET)
        (event,) = events_of(got[0].body)
        assert event["action"] == "scan" and event["target"]["repository"] == "acme/app"
        assert event["moorage"]["summary"] == {"critical": 1}
        assert event["source"]["instanceID"]
