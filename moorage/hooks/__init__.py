"""Webhooks: event payloads (CNCF Distribution envelope, CloudEvents) and their HMAC signature.
Delivery (queue, retries, log) builds on these."""

from .payloads import (
    CLOUDEVENTS_MEDIA_TYPE,
    DISTRIBUTION_MEDIA_TYPE,
    EVENT_KINDS,
    FORMATS,
    Event,
    PayloadError,
    Reference,
    RequestInfo,
    Source,
    Target,
    delete_event,
    policy_violation_event,
    pull_event,
    push_event,
    render,
    replication_finished_event,
    scan_completed_event,
)
from .signing import HEADER, SignatureError, sign, verify

__all__ = [
    "CLOUDEVENTS_MEDIA_TYPE",
    "DISTRIBUTION_MEDIA_TYPE",
    "EVENT_KINDS",
    "FORMATS",
    "HEADER",
    "Event",
    "PayloadError",
    "Reference",
    "RequestInfo",
    "SignatureError",
    "Source",
    "Target",
    "delete_event",
    "policy_violation_event",
    "pull_event",
    "push_event",
    "render",
    "replication_finished_event",
    "scan_completed_event",
    "sign",
    "verify",
]
