"""``moorage serve`` (the registry) and ``moorage worker`` (background jobs only).

Operators scale the two apart, as Harbor's jobservice and Quay's workers allow: nodes started with
``jobs.enabled: false`` serve requests only; ``moorage worker`` processes run the shared job
queue (scans, replication, garbage collection, webhooks, housekeeping) and serve nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator

from .. import __version__
from ..config import Config, ConfigError
from .common import CommandTree, add_common, check_storage, load

log = logging.getLogger("moorage")


def _prepare(config: Config) -> None:
    """What both process kinds do before starting: check the store settings, create the data
    directory, apply migrations (``database.migrate_on_start``) and, with access control on,
    create the first administrator and signing key."""
    from ..db.engine import upgrade_sync
    from ..logs import setup_logging
    from ..startup import check_database, check_disk

    setup_logging(config.log.format, config.log.level)
    check_storage(config)
    os.makedirs(config.data_dir, exist_ok=True)
    check_disk(config.data_dir, config.database_url)
    check_database(config.database_url)
    if config.database.migrate_on_start:
        upgrade_sync(config.database_url)
    if config.auth.enabled:
        from ..auth.bootstrap import bootstrap

        asyncio.run(bootstrap(config))


def _cannot_start(exc: BaseException, config: Config) -> int:
    """One line saying what is wrong and what to do (moorage/startup.py); the traceback only
    at debug level."""
    from ..startup import explain

    log.debug("start-up failed", exc_info=exc)
    line = explain(exc, data_dir=config.data_dir, database_url=config.database_url)
    print(f"moorage: cannot start: {line}", file=sys.stderr, flush=True)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    from ..node import new_incarnation
    from ..startup import check_port

    config = load(
        args,
        **{
            "http.host": args.host,
            "http.port": args.port,
            "http.workers": args.workers,
            "http.tls.certificate": args.tls_cert,
            "http.tls.key": args.tls_key,
            "auth.enabled": False if args.no_auth else None,
        },
    )
    try:
        check_port(config.http.host, config.http.port)
        _prepare(config)
    except ConfigError:
        raise
    except Exception as exc:
        return _cannot_start(exc, config)
    # A new incarnation of this node, shared by its workers: upload leases name it, and the
    # workers free the leases of earlier incarnations at start (moorage/node.py).
    new_incarnation()
    if not config.auth.enabled:
        log.warning(
            "*** --no-auth: AUTHENTICATION IS OFF. Every client has full access to every "
            "repository. For local development and benchmarks only; the web UI and /api/v1 "
            "are off (their pages say why). ***"
        )
    scheme = "https" if config.http.tls.certificate else "http"
    log.info(
        "moorage %s serving on %s://%s:%d (database %s, storage %s, %d worker(s)%s)",
        __version__,
        scheme,
        config.http.host,
        config.http.port,
        config.database_url.split("@")[-1],
        config.storage.driver,
        config.http.workers,
        "" if config.jobs.enabled else ", no background jobs",
    )
    import uvicorn

    from ..app import Moorage
    from ..connections import GuardedHttpToolsProtocol, configure, raise_fd_limit

    # The cap lowered to what the open-files limit allows; worker processes (several) read it
    # from the effective configuration.
    config.http.max_connections = raise_fd_limit(config.http.max_connections)
    configure(config.http.header_timeout, config.http.max_connections)
    common = {
        "host": config.http.host,
        "port": config.http.port,
        "ssl_certfile": config.http.tls.certificate,
        "ssl_keyfile": config.http.tls.key,
        "timeout_graceful_shutdown": int(config.http.shutdown_timeout),
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_keep_alive": int(config.http.keep_alive_timeout),
        # A deadline for request heads and a connection cap (moorage/connections.py); with
        # no deadline and no cap, uvicorn's own protocol.
        "http": GuardedHttpToolsProtocol
        if config.http.header_timeout > 0 or config.http.max_connections > 0
        else "httptools",
        # Forwarded headers are honoured by moorage.proxies from http.trusted_proxies only
        # (uvicorn's own default trusts 127.0.0.1, which every local client is).
        "proxy_headers": False,
    }
    if config.http.workers > 1:
        os.environ["MOORAGE_EFFECTIVE_CONFIG"] = config.model_dump_json()
        with _shared_metrics(config):
            uvicorn.run(
                "moorage.app:app_from_environment",
                factory=True,
                workers=config.http.workers,
                **common,  # type: ignore[arg-type]
            )
    else:
        app = Moorage(config)
        try:
            uvicorn.run(app, **common)  # type: ignore[arg-type]
        except SystemExit:
            # The application's own start failed inside uvicorn (which exits with 3): its line
            # is the last one.
            if app.startup_failure:
                print(f"moorage: cannot start: {app.startup_failure}", file=sys.stderr)
                return 1
            raise
    return 0


@contextlib.contextmanager
def _shared_metrics(config: Config) -> Iterator[None]:
    """Several workers: prometheus_client keeps each worker's values in files of a directory
    made here before they start (every scrape merges them, whichever worker answers), and
    ``metrics.port`` is served once, by this parent process."""
    if not config.metrics.enabled:
        yield
        return
    from ..metrics.exposition import prepare_multiprocess
    from ..metrics.node import serve_port_in_parent

    directory = tempfile.mkdtemp(prefix="moorage-metrics-")
    prepare_multiprocess(directory)
    port_server = serve_port_in_parent(config.metrics, config.http.host)
    try:
        yield
    finally:
        if port_server is not None:
            port_server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def cmd_worker(args: argparse.Namespace) -> int:
    config = load(args, **{"jobs.enabled": True})
    try:
        _prepare(config)
    except ConfigError:
        raise
    except Exception as exc:
        return _cannot_start(exc, config)
    log.info(
        "moorage %s worker: running background jobs (database %s, storage %s)",
        __version__,
        config.database_url.split("@")[-1],
        config.storage.driver,
    )
    asyncio.run(_work(config))
    return 0


async def _work(config: Config) -> None:
    """Run the job queue until SIGTERM or SIGINT; running jobs get ``jobs.stale_seconds``-safe
    shutdown: the runner stops claiming, lets running jobs finish for a grace period, and
    whatever is cut off is re-queued by another node once its heartbeat is stale."""
    from ..metrics.node import NodeMetrics
    from ..runtime import start_runtime, stop_runtime

    rt = await start_runtime(config, run_jobs=True)
    # A worker serves no HTTP; with metrics.port set it is scraped there (job figures).
    metrics = NodeMetrics(config.metrics, config.http.host)
    if config.metrics.port is not None:
        await metrics.start(rt.ctx.engine, rt.audit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("worker stopping: finishing running jobs")
    finally:
        await metrics.stop()
        await stop_runtime(rt)


def register(tree: CommandTree) -> None:
    serve = tree.top.add_parser("serve", help="run the registry")
    add_common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 5000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="anonymous full access (local development and benchmarks only)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = tree.top.add_parser(
        "worker", help="run background jobs only (no HTTP); scale apart from 'serve'"
    )
    add_common(worker)
    worker.set_defaults(func=cmd_worker)
