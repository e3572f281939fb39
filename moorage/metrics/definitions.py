"""Every Prometheus metric Moorage exports, named in one place.

Capabilities that land later (garbage collection, scanning, replication, webhooks, policies)
record into the metrics already named here, so that dashboards and alerts written today keep
working. Label values are always drawn from small fixed sets (a route *template*, a job kind, an
outcome word), never from user input such as a repository name or a raw path: each label value
is a time series for as long as the process lives.

Multi-process (``http.workers`` > 1): when ``PROMETHEUS_MULTIPROC_DIR`` is set before the workers
start, prometheus_client keeps values in per-process files that the exposition merges; each
gauge says how its per-process values combine (``multiprocess_mode``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Request latency: manifest HEAD/GET answer in well under a millisecond, blob uploads of
# gigabytes take minutes.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
# Background work (GC passes, scans, replication executions, webhook deliveries).
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# Allowed values of the small enumerations used as labels (documented; recorders use them).
JOB_STATES = ("queued", "running", "succeeded", "failed")
OUTCOMES = ("success", "failure")
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
POLICIES = ("permission", "quota", "immutability", "vulnerability", "signature")


class MoorageMetrics:
    """The metric objects, registered in *registry* (a fresh one per test; the process-wide
    :data:`METRICS` otherwise)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()

        # --- HTTP (recorded by MetricsMiddleware) ---------------------------------------------
        self.http_requests = Counter(
            "moorage_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration = Histogram(
            "moorage_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_request_bytes = Counter(
            "moorage_http_request_body_bytes",
            "Request body bytes received (blob uploads, manifests, API bodies), by route template.",
            ["route"],
            registry=r,
        )
        self.http_response_bytes = Counter(
            "moorage_http_response_body_bytes",
            "Response body bytes sent (blob and manifest downloads, API answers), by route "
            "template.",
            ["route"],
            registry=r,
        )
        self.http_requests_in_flight = Gauge(
            "moorage_http_requests_in_flight",
            "Requests being answered now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.uploads_in_flight = Gauge(
            "moorage_uploads_in_flight",
            "Blob upload requests (POST/PATCH/PUT on an upload session) streaming now.",
            registry=r,
            multiprocess_mode="livesum",
        )

        # --- Process state (sampled by ProcessSampler) -----------------------------------------
        self.db_pool_size = Gauge(
            "moorage_db_pool_size",
            "Connections the database pools may keep open (pool_size), summed over workers.",
            ["pool"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.db_pool_connections = Gauge(
            "moorage_db_pool_connections",
            "Database connections by state: in_use (checked out by a request or job), idle "
            "(open, in the pool), overflow (opened beyond pool_size).",
            ["pool", "state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audit_queue_depth = Gauge(
            "moorage_audit_queue_depth",
            "Audit events waiting in memory to be written to the database.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audit_events_dropped = Gauge(
            "moorage_audit_events_dropped",
            "Audit events dropped since start because the queue was full (database down).",
            registry=r,
            multiprocess_mode="livesum",
        )

        # --- Database-derived (refreshed by DatabaseGauges; the same on every node) ------------
        self.storage_used = Gauge(
            "moorage_storage_used_bytes",
            "Bytes of all stored blobs (each unique blob counted once).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.storage_blobs = Gauge(
            "moorage_storage_blobs",
            "Stored blobs.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.repositories = Gauge(
            "moorage_repositories",
            "Repositories.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.jobs = Gauge(
            "moorage_jobs",
            "Background jobs in the shared queue, by kind and state (queued, running, "
            "succeeded, failed; finished ones are kept jobs.keep_finished_days).",
            ["kind", "state"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.jobs_oldest_due_age = Gauge(
            "moorage_jobs_oldest_due_age_seconds",
            "Age of the oldest queued job that is due (0: none waiting), by kind: grows when "
            "no node runs jobs of that kind.",
            ["kind"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.database_refresh_ok = Gauge(
            "moorage_metrics_database_refresh_ok",
            "1 when the last read of the database-derived figures worked, else 0 (figures keep "
            "their last value).",
            registry=r,
            multiprocess_mode="livemax",
        )

        # --- Background jobs (recorded by the job runner) -----------------------------------------
        self.jobs_finished = Counter(
            "moorage_jobs_finished",
            "Job attempts finished on this node, by kind and outcome (success, failure).",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "moorage_job_duration_seconds",
            "Run time of job attempts on this node, by kind.",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )

        # --- Garbage collection (lifecycle) ---------------------------------------------------
        self.gc_runs = Counter(
            "moorage_gc_runs", "Garbage collection passes, by outcome.", ["outcome"], registry=r
        )
        self.gc_run_duration = Histogram(
            "moorage_gc_run_duration_seconds",
            "Duration of garbage collection passes.",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.gc_deleted = Counter(
            "moorage_gc_deleted",
            "Objects removed by garbage collection, by kind (blob, manifest, upload).",
            ["kind"],
            registry=r,
        )
        self.gc_bytes_freed = Counter(
            "moorage_gc_bytes_freed", "Bytes of blobs deleted by garbage collection.", registry=r
        )
        self.gc_review_queue_depth = Gauge(
            "moorage_gc_review_queue_depth",
            "Rows waiting in the garbage collection review queues, by queue (blob, manifest).",
            ["queue"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )

        # --- Vulnerability scanning -------------------------------------------------------------
        self.scans = Counter(
            "moorage_scans",
            "Image scans finished, by outcome (success, failure, unsupported).",
            ["outcome"],
            registry=r,
        )
        self.scan_duration = Histogram(
            "moorage_scan_duration_seconds",
            "Duration of image scans (inventory and matching).",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.scan_layer_cache = Counter(
            "moorage_scan_layer_cache",
            "Layer inventories looked up by scans, by result (hit: analysed before; miss).",
            ["result"],
            registry=r,
        )
        self.vulndb_updated = Gauge(
            "moorage_vulndb_updated_timestamp_seconds",
            "Unix time of the last vulnerability database import.",
            registry=r,
            multiprocess_mode="max",
        )

        # --- Replication and mirroring --------------------------------------------------------
        self.replication_executions = Counter(
            "moorage_replication_executions",
            "Replication policy executions finished, by direction (push, pull) and outcome "
            "(success, partial, failure).",
            ["direction", "outcome"],
            registry=r,
        )
        self.replication_tags = Counter(
            "moorage_replication_tags",
            "Tags replicated, by direction and outcome (success, failure).",
            ["direction", "outcome"],
            registry=r,
        )
        self.replication_bytes = Counter(
            "moorage_replication_bytes",
            "Blob bytes copied by replication, by direction.",
            ["direction"],
            registry=r,
        )
        self.replication_duration = Histogram(
            "moorage_replication_duration_seconds",
            "Duration of replication executions.",
            buckets=JOB_BUCKETS,
            registry=r,
        )

        self.mirror_requests = Counter(
            "moorage_mirror_requests",
            "Reads of cache organizations the pull-through path answered, by kind (manifest, "
            "blob) and outcome (hit: held here; fetched: from the upstream; stale: held here, "
            "served after the upstream failed, timed out or answered 429; unavailable: not held "
            "and the upstream failing). Blobs already held are served by the core path, uncounted.",
            ["kind", "outcome"],
            registry=r,
        )
        self.mirror_upstream_bytes = Counter(
            "moorage_mirror_upstream_bytes",
            "Blob bytes pull-through caches downloaded from their upstreams.",
            registry=r,
        )

        # --- Webhooks and policies --------------------------------------------------------------
        self.webhook_deliveries = Counter(
            "moorage_webhook_deliveries",
            "Webhook delivery attempts, by outcome (success, failure, timeout).",
            ["outcome"],
            registry=r,
        )
        self.webhook_delivery_duration = Histogram(
            "moorage_webhook_delivery_duration_seconds",
            "Time a receiver took to answer a webhook delivery.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.policy_denials = Counter(
            "moorage_policy_denials",
            "Requests refused by a policy of the chain, by policy (permission, quota, "
            "immutability, vulnerability, signature).",
            ["policy"],
            registry=r,
        )


METRICS = MoorageMetrics()
"""The process-wide metrics: what the server records into and exports."""
