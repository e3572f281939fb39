"""Configuration: one YAML file plus ``MOORAGE_*`` environment overrides.

Every key has a default and a description (docs/configuration.md lists them all; a test keeps the
two in step). An environment variable is the key path in upper case joined by ``_``:
``database.url`` → ``MOORAGE_DATABASE_URL``, ``storage.filesystem.root`` → ``MOORAGE_STORAGE_FILESYSTEM_ROOT``.
Precedence, lowest first: defaults, the YAML file, the environment, command-line flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .audit.config import AuditConfig
from .auth.config import AuthConfig
from .hooks.config import WebhooksConfig
from .jobs.config import JobsConfig
from .lifecycle.config import GCConfig
from .lifecycle.retention_config import RetentionConfig
from .scan.config import ScanningConfig
from .scan.vulndb.config import VulnDBConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSConfig(_Section):
    certificate: str | None = Field(None, description="PEM certificate file; enables HTTPS.")
    key: str | None = Field(None, description="PEM private key file for the certificate.")


class HTTPConfig(_Section):
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(5000, ge=0, le=65535, description="TCP port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes.")
    tls: TLSConfig = Field(default_factory=TLSConfig)
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM."
    )
    header_timeout: float = Field(
        10.0,
        ge=0,
        description="Seconds a connection has to deliver a complete request head (from its "
        "start, or from the first byte of a later request on a kept-alive connection); past it "
        "the connection is closed (408 when part of a head came). Ends idle sockets and "
        "slowloris clients. 0: no deadline.",
    )
    keep_alive_timeout: float = Field(
        30.0, gt=0, description="Seconds an idle kept-alive connection stays open between requests."
    )
    max_connections: int = Field(
        2048,
        ge=0,
        description="Open connections per worker process; a request on a connection beyond "
        "it is answered 503 UNAVAILABLE with Retry-After. Lowered at start (with a warning) "
        "when the open-files limit leaves too few descriptors. 0: no cap.",
    )
    drain_seconds: float = Field(
        0.0,
        ge=0,
        description="Behind a load balancer: on SIGTERM, /readyz answers 503 for this long while "
        "the node keeps serving, so that health checks take it out before it stops listening "
        "(set it above the balancer's check interval × fall count). 0: stop listening at once.",
    )
    base_url: str | None = Field(
        None,
        description="External URL of the registry, e.g. https://registry.example.com: the "
        "scheme and host of Location headers, of the token realm announced in "
        "WWW-Authenticate, of the web UI's pull commands, and whether cookies are Secure. "
        "Set it in production; unset, they follow the request (its Host header, or what a "
        "trusted proxy forwards).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the reverse proxies in front of Moorage, "
        "comma-separated in the environment, e.g. 10.0.0.5,10.1.0.0/16. From these peers "
        "only, X-Forwarded-For gives the client address (the rightmost address that is not "
        "a trusted proxy: what login throttling, audit and sessions use), X-Forwarded-Proto "
        "the scheme and X-Forwarded-Host the host. Empty: forwarded headers are ignored.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for v in value:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ValueError(f"http.trusted_proxies: {v!r} is not an address or CIDR") from None
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("http.base_url is an absolute http:// or https:// URL")
        return value


class DatabaseConfig(_Section):
    url: str | None = Field(
        None,
        description="SQLAlchemy-style URL: sqlite:///PATH or postgresql://user@host:5432/db. "
        "Default: SQLite at <data-dir>/moorage.db.",
    )
    pool_size: int = Field(10, ge=1, description="Connections per worker (PostgreSQL).")
    migrate_on_start: bool = Field(
        True, description="Apply pending migrations at start (under a lock)."
    )


class FilesystemStorageConfig(_Section):
    root: str | None = Field(
        None, description="Directory for blobs and uploads. Default: <data-dir>/storage."
    )
    reader_threads: int = Field(
        4,
        ge=1,
        le=256,
        description="Threads that read blobs for responses, per process: however many pulls "
        "run at once, this many reads wait on the disk (raise it for network or slow disks).",
    )


class S3StorageConfig(_Section):
    bucket: str | None = Field(
        None, description="Bucket holding blobs and uploads (required for s3)."
    )
    endpoint: str | None = Field(
        None,
        description="S3 endpoint URL, e.g. http://minio:9000 or https://s3.wasabisys.com. "
        "Default: AWS, https://s3.<region>.amazonaws.com.",
    )
    region: str = Field("us-east-1", description="Region used in request signatures (SigV4).")
    access_key_id: str | None = Field(
        None, description="Access key id. Default: AWS_ACCESS_KEY_ID from the environment."
    )
    secret_access_key: str | None = Field(
        None,
        description="Secret access key (prefer the environment). Default: AWS_SECRET_ACCESS_KEY.",
    )
    prefix: str = Field(
        "", description="Key prefix under which everything is stored (e.g. moorage/)."
    )
    path_style: Literal["auto"] | bool = Field(
        "auto",
        description="Addressing: auto (path-style, http://endpoint/bucket/key, whenever an "
        "endpoint other than AWS is configured or its host is an IP address or localhost, as "
        "MinIO, Ceph RGW and moto need; virtual-hosted, http://bucket.endpoint/key, for AWS), "
        "or true/false to force path-style or virtual-hosted.",
    )
    redirect: bool = Field(
        False,
        description="Answer blob GET with a 307 redirect to a short-lived presigned S3 URL "
        "(clients must reach the endpoint) instead of streaming through the registry.",
    )
    redirect_expiry_seconds: int = Field(
        1200, ge=10, le=7 * 24 * 3600, description="Lifetime of a presigned redirect URL."
    )


class StorageConfig(_Section):
    driver: Literal["filesystem", "s3"] = Field(
        "filesystem",
        description="Blob store driver (filesystem: local disk or NFS; s3: S3-compatible "
        "object storage).",
    )
    filesystem: FilesystemStorageConfig = Field(default_factory=FilesystemStorageConfig)
    s3: S3StorageConfig = Field(default_factory=S3StorageConfig)

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageConfig:
        if self.driver == "s3" and not self.s3.bucket:
            raise ValueError(
                "storage.s3.bucket (MOORAGE_STORAGE_S3_BUCKET) is required when storage.driver is s3"
            )
        return self


class RegistryConfig(_Section):
    max_manifest_size: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest manifest accepted, in bytes."
    )
    max_blob_size: int = Field(
        0, ge=0, description="Largest blob accepted, in bytes (0: no limit)."
    )
    upload_lease_seconds: float = Field(
        15.0,
        gt=0,
        description="How long a request may hold an upload session without progress before "
        "another request (or node) may take it over.",
    )
    upload_expiry_hours: float = Field(
        24.0,
        gt=0,
        description="Upload sessions without progress for this long are cancelled and their "
        "partial data deleted (by the background job uploads.purge_stale).",
    )
    catalog_max_entries: int = Field(
        1000, ge=1, description="Largest page of _catalog and tags/list."
    )
    max_upload_sessions_per_user: int = Field(
        500,
        ge=0,
        description="Open upload sessions one account may hold at once (0: no cap); beyond it "
        "starting an upload answers 429 TOOMANYREQUESTS until some finish, are cancelled or "
        "expire.",
    )
    max_upload_sessions_per_repository: int = Field(
        1000,
        ge=0,
        description="Open upload sessions one repository may hold at once (0: no cap); beyond "
        "it starting an upload answers 429 TOOMANYREQUESTS.",
    )


class LogConfig(_Section):
    format: Literal["text", "json"] = Field("text", description="Log line format.")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    access_log: bool = Field(True, description="Log one line per request.")


class MetricsConfig(_Section):
    """``metrics.*``: the Prometheus endpoint (moorage/metrics)."""

    enabled: bool = Field(
        True,
        description="Serve Prometheus metrics at GET /metrics (text exposition format; "
        "OpenMetrics when the scraper asks for it).",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port of its own (same address as http.host) instead "
        "of the registry's port, e.g. to keep it off the public ingress; also how a `moorage "
        "worker` is scraped. Unset: the registry's port.",
    )
    token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token scrapers must send (Authorization: Bearer TOKEN); set it "
        "through the environment. Unset: /metrics needs no credentials.",
    )
    database_seconds: float = Field(
        15.0,
        ge=0.1,
        le=3600,
        description="The figures read from the database (storage used, repositories, jobs by "
        "kind and state) are read at most this often per process.",
    )


class Config(_Section):
    data_dir: str = Field(
        "./moorage-data", description="Directory for the SQLite database and filesystem store."
    )
    http: HTTPConfig = Field(default_factory=HTTPConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    scanning: ScanningConfig = Field(default_factory=ScanningConfig)
    vulndb: VulnDBConfig = Field(default_factory=VulnDBConfig)
    gc: GCConfig = Field(default_factory=GCConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'moorage.db'}"

    @property
    def storage_root(self) -> str:
        return self.storage.filesystem.root or str(Path(self.data_dir).resolve() / "storage")


class ConfigError(ValueError):
    pass


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, Any]:
    """Every leaf key as ``dotted.path`` → FieldInfo."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(config_keys(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


def env_name(key: str) -> str:
    return "MOORAGE_" + key.replace(".", "_").upper()


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: parent is not a section")
    node[parts[-1]] = value


def load_config(
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective configuration (defaults < file < environment < *overrides*)."""
    environ = dict(os.environ) if environ is None else environ
    tree: dict[str, Any] = {}
    path = path or environ.get("MOORAGE_CONFIG")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            where = " ".join(str(exc).split())
            raise ConfigError(
                f"config file {path} is not valid YAML: {where}. Fix it and start again"
            ) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping")
        tree = loaded
    for key in config_keys():
        value = environ.get(env_name(key))
        if value is not None:
            _set(tree, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from exc


def _explain(exc: ValidationError, path: str | None) -> str:
    """One line: each wrong key, what is wrong with it, and where to fix it."""
    problems = []
    keys = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        keys.append(key)
        if err["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r:.60})"
        problems.append(f"{key}: {msg}{shown}")
    where = f"the config file {path}" if path else "the configuration"
    envs = ", ".join(env_name(k) for k in keys if k in config_keys())
    return (
        "; ".join(problems)
        + f". Fix it in {where}"
        + (f" (or the environment: {envs})" if envs else "")
        + " and start again"
    )
