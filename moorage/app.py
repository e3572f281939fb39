"""The ASGI application: routing, request ids, access log, last-resort error handling."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.requests import Request

from . import __version__
from .audit import AuditEvent, AuditLog
from .audit.refusals import REFUSAL_STATUSES, refusal
from .auth.endpoint import TokenEndpoint
from .auth.policy import AccessPolicy, OpenAccess, RBACPolicy
from .auth.resolver import PrincipalResolver
from .auth.service import AccessService, Principal
from .config import Config, load_config
from .connections import configure as configure_connections
from .db.hotpath import HotReadUnavailable
from .logs import new_request_id, request_id, setup_logging
from .metrics.node import NodeMetrics
from .proxies import ExternalView
from .registry.errors import RegistryError
from .registry.handlers import API_VERSION_HEADER, RegistryAPI
from .runtime import Runtime, start_runtime, stop_runtime
from .services.context import ServiceContext
from .startup import explain as explain_startup_failure
from .storage.base import StorageError, StorageFull

if TYPE_CHECKING:  # the REST API and the web UI (jinja2, its pages, single sign-on) are built
    # with access control on only
    from .api.app import ManagementAPI
    from .ui.app import WebUI

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("moorage")
access_log = logging.getLogger("moorage.access")


class Moorage:
    """The ASGI application of ``moorage serve``: the runtime's services (moorage/runtime.py)
    behind /v2, /auth/token, /api/v1 and the web UI."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rt: Runtime | None = None
        self.ctx: ServiceContext | None = None
        self.registry: RegistryAPI | None = None
        self.access: AccessService | None = None
        self.token_endpoint: TokenEndpoint | None = None
        self.audit: AuditLog | None = None
        self.api: ManagementAPI | None = None
        self.resolver: PrincipalResolver | None = None
        self.ui: WebUI | None = None
        self.draining = False
        self.startup_failure: str | None = None
        self.external = ExternalView(config.http.trusted_proxies, config.http.base_url)
        # Prometheus (moorage/metrics): the middleware wraps everything below, so that it also
        # counts what the last-resort error handler answers.
        self.metrics = NodeMetrics(config.metrics, config.http.host)
        self._handle = self.metrics.wrap(self._serve)

    async def startup(self) -> None:
        rt = self.rt = await start_runtime(self.config)
        self.ctx, self.audit, self.access = rt.ctx, rt.audit, rt.access
        policy: AccessPolicy = OpenAccess()
        if rt.access is not None:
            assert rt.sessions and rt.catalog and rt.management
            # Failed logins on /v2 are audited with every other refusal (_audit_refusal).
            policy = RBACPolicy(rt.access, self.config.auth)
            self.token_endpoint = TokenEndpoint(rt.access, self._audit_login)
            self.resolver = PrincipalResolver(rt.access, rt.sessions)
            from .api.app import ManagementAPI

            extra_ops = [op for cap in rt.capabilities if cap.api_ops for op in cap.api_ops(rt)]
            self.api = ManagementAPI(
                rt.ctx,
                rt.access,
                rt.audit,
                self.resolver,
                rt.catalog,
                rt.management,
                extra_ops,
            )
            from .ui.app import WebUI

            self.ui = WebUI(
                rt.ctx,
                rt.access,
                rt.sessions,
                self.resolver,
                rt.catalog,
                rt.management,
                [partial(cap.ui_pages, rt) for cap in rt.capabilities if cap.ui_pages],
                oidc=rt.oidc,
            )
        self.registry = RegistryAPI(rt.ctx, policy, rt.audit)
        await self.registry.uploads.free_previous_incarnations()
        self.metrics.use_routes(self._route_templates())
        await self.metrics.start(rt.ctx.engine, rt.audit)
        self._drain_on_sigterm()

    def _route_templates(self) -> list[str]:
        """The REST API's and the UI's route templates (metric labels)."""
        out: list[str] = []
        if self.api is not None:
            out += ["/api/v1" + op.path for op in self.api.ops]
        if self.ui is not None:
            out += [str(getattr(r, "path", "")) for r in self.ui.router.routes]
        return [t for t in out if t]

    def _drain_on_sigterm(self) -> None:
        """With ``http.drain_seconds``, the first SIGTERM turns /readyz to 503 and the node keeps
        serving for that long (the load balancer's health checks take it out), then the server's
        own handler runs: stop listening, let in-flight requests finish. A second SIGTERM to the
        same process stops at once (with several workers uvicorn's supervisor forwards only the
        first). Startup runs inside uvicorn's signal capture, in every worker process."""
        drain = self.config.http.drain_seconds
        if drain <= 0 or threading.current_thread() is not threading.main_thread():
            return
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: Any) -> None:
            if self.draining:
                server_handler(sig, frame)
                return
            self.draining = True
            log.info("SIGTERM: draining for %.1f s (/readyz answers 503), then stopping", drain)
            loop.call_soon_threadsafe(loop.call_later, drain, server_handler, sig, None)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _audit_refusal(self, scope: Scope, status: int) -> None:
        """A 401/403/429 of /v2 or /api/v1 into the audit log (moorage/audit/refusals.py)."""
        if self.audit is None:
            return
        found = refusal(scope, status)
        if found is None:
            return
        how, event = found
        if how == "each":
            self.audit.record_nowait(event)
        else:
            self.audit.record_refusal(event)

    async def _audit_login(
        self,
        request: Request,
        principal: Principal | None,
        action: str,
        result: str,
        details: dict[str, Any],
    ) -> None:
        if self.audit is None:
            return
        if principal is None and "username" in details:
            # The name tried is the caller's claim, not an identity: never the actor.
            details = dict(details)
            details["attempted_actor"] = details.pop("username")
        await self.audit.record(
            AuditEvent(
                action,
                actor=principal.name if principal else "",
                actor_type=principal.kind if principal else "anonymous",  # type: ignore[arg-type]
                result=result,  # type: ignore[arg-type]
                client_addr=request.client.host if request.client else None,
                user_agent=request.headers.get("user-agent"),
                details=details,
            )
        )

    async def shutdown(self) -> None:
        await self.metrics.stop()
        if self.rt is not None:
            await stop_runtime(self.rt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        # Client address, scheme and host as the outside sees them (http.trusted_proxies,
        # http.base_url), once, for every layer below.
        self.external.apply(scope)
        await self._handle(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = _incoming_request_id(scope) or new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status_holder = [0]
        sent_bytes = [0]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent_bytes[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self._route(scope, receive, send_wrapper)
            if status_holder[0] in REFUSAL_STATUSES:
                self._audit_refusal(scope, status_holder[0])
        except Exception as exc:  # last resort: never a traceback to the client
            if status_holder[0] == 0:
                api = str(scope["path"]).startswith("/api/")
                await _send_error(send_wrapper, _unexpected(exc, scope), api)
            else:
                log.error("error after response started: %s", exc)
        finally:
            if self.config.log.access_log:
                access_log.info(
                    "request",
                    extra={
                        "fields": {
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status_holder[0],
                            "bytes": sent_bytes[0],
                            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                            "client": (scope.get("client") or ("-",))[0],
                            "user_agent": _header(scope, b"user-agent"),
                        }
                    },
                )
            request_id.reset(token)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/v2" or path.startswith("/v2/"):
            assert self.registry is not None
            await self.registry(scope, receive, send)  # type: ignore[arg-type]
        elif path in ("/auth/token", "/auth/jwks.json") and self.token_endpoint is not None:
            await self.token_endpoint(scope, receive, send)  # type: ignore[arg-type]
        elif (path == "/api/v1" or path.startswith("/api/v1/")) and self.api is not None:
            await self.api(scope, receive, send)
        elif self.ui is not None and _is_ui_path(path):
            await self.ui(scope, receive, send)
        elif self.api is None and (path == "/api/v1" or path.startswith("/api/v1/")):
            await _send_json(send, 501, {"error": {"code": "DISABLED", "message": NO_AUTH_NOTICE}})
        elif self.ui is None and _is_ui_path(path):
            await _send_no_auth_page(scope, send)
        elif path == "/metrics" and self.metrics.endpoint is not None:
            await self.metrics.endpoint(scope, receive, send)
        elif path == "/healthz":
            await _send_json(send, 200, {"status": "ok", "version": __version__})
        elif path == "/readyz":
            await self._readyz(send)
        else:
            await _send_json(send, 404, {"error": "not found"})

    async def _readyz(self, send: Send) -> None:
        assert self.ctx is not None
        checks: dict[str, str] = {}
        diagnostics: dict[str, object] = {}
        if self.draining:
            checks["shutdown"] = "draining"
        try:
            async with self.ctx.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["database"] = f"error: {type(exc).__name__}"
        ready_anyway: set[str] = set()
        try:
            await self.ctx.storage.ping()
            checks["storage"] = "ok"
        except StorageFull as exc:
            # Pulls still work: stay in the load balancer, but say it loudly.
            checks["storage"] = f"full: {exc}"
            ready_anyway.add("storage")
            _warn_storage_full(str(exc))
        except Exception as exc:  # noqa: BLE001
            checks["storage"] = f"error: {type(exc).__name__}"
        if self.registry is not None and checks["database"] == "ok":
            try:
                diagnostics = await self.registry.uploads.diagnostics()
            except Exception as exc:  # noqa: BLE001 - diagnostics never fail readiness
                diagnostics = {"error": type(exc).__name__}
        ok = all(v == "ok" or k in ready_anyway for k, v in checks.items())
        await _send_json(
            send,
            200 if ok else 503,
            {"ready": ok, "checks": checks, "diagnostics": diagnostics},
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    # One line saying what is wrong and what to do; the traceback at debug.
                    log.debug("startup failed", exc_info=exc)
                    self.startup_failure = explain_startup_failure(
                        exc, data_dir=self.config.data_dir, database_url=self.config.database_url
                    )
                    await send(
                        {
                            "type": "lifespan.startup.failed",
                            "message": f"cannot start: {self.startup_failure}",
                        }
                    )
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


_storage_full_warned = [float("-inf")]


def _warn_storage_full(message: str) -> None:
    """Log a full store at most once a minute (health checks ask every second)."""
    if time.monotonic() - _storage_full_warned[0] >= 60:
        _storage_full_warned[0] = time.monotonic()
        log.warning("STORAGE FULL: %s", message)


def _is_ui_path(path: str) -> bool:
    """The web UI's paths (moorage/ui): /, /login, /logout, /ui/..., /static/ui/... and the
    single sign-on's /auth/oidc/...."""
    return path in ("/", "/login", "/logout", "/ui") or path.startswith(
        ("/ui/", "/static/ui/", "/auth/oidc/")
    )


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k == name:
            return str(v.decode("latin-1"))[:300]
    return "-"


def _incoming_request_id(scope: Scope) -> str | None:
    value = _header(scope, b"x-request-id")
    if value != "-" and len(value) <= 64 and value.replace("-", "").isalnum():
        return value
    return None


def _unexpected(exc: Exception, scope: Scope) -> RegistryError:
    if isinstance(exc, (DBAPIError, SQLAlchemyError, HotReadUnavailable)):
        log.warning("database error on %s %s: %s", scope["method"], scope["path"], exc)
        return RegistryError("UNAVAILABLE", "database unavailable; retry", status=503)
    if isinstance(exc, (StorageError, OSError)):
        log.warning("storage error on %s %s: %s", scope["method"], scope["path"], exc)
        return RegistryError("UNAVAILABLE", "storage unavailable; retry", status=503)
    log.error(
        "unhandled error on %s %s\n%s", scope["method"], scope["path"], traceback.format_exc()
    )
    return RegistryError("UNKNOWN", "internal error; see the server log for this request id")


async def _send_error(send: Send, err: RegistryError, api: bool = False) -> None:
    """The last-resort answer, in the format of the API the client called (/v2's errors list,
    or /api/v1's ``{"error": {...}}``)."""
    headers = [
        (b"content-type", b"application/json"),
        (API_VERSION_HEADER[0].lower().encode(), API_VERSION_HEADER[1].encode()),
    ] + [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    body = (
        json.dumps({"error": {"code": err.code, "message": err.message}}).encode()
        if api
        else err.body()
    )
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


NO_AUTH_NOTICE = (
    "The web UI and the management API (/api/v1) are off: this registry runs with --no-auth "
    "(auth.enabled: false), where /v2 is open to every client and no accounts exist. Start "
    "`moorage serve` without --no-auth (with MOORAGE_ADMIN_PASSWORD set for the first admin) "
    "to use them."
)

_NO_AUTH_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>Moorage: web UI off (--no-auth)</title></head><body>"
    "<h1>Moorage: the web UI is off</h1>"
    f"<p>{html.escape(NO_AUTH_NOTICE)}</p>"
    "<p>The registry itself is served at <code>/v2/</code>.</p></body></html>\n"
).encode()


async def _send_no_auth_page(scope: Scope, send: Send) -> None:
    """What a browser gets at /, /ui/... in --no-auth mode: why there is no UI, not a 404."""
    get = scope["method"] in ("GET", "HEAD")
    body = _NO_AUTH_PAGE if get else NO_AUTH_NOTICE.encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8" if get else b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"content-security-policy", b"default-src 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200 if get else 501, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _send_json(send: Send, status: int, data: object) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(config: Config | None = None) -> Moorage:
    return Moorage(config or load_config())


def app_from_environment() -> Moorage:
    """Factory for worker processes: the parent passes the effective config as JSON."""

    raw = os.environ.get("MOORAGE_EFFECTIVE_CONFIG")
    config = Config.model_validate_json(raw) if raw else load_config()
    setup_logging(config.log.format, config.log.level)
    configure_connections(config.http.header_timeout, config.http.max_connections)
    return Moorage(config)
