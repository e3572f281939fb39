"""Settings of webhook delivery (``webhooks.*``).

Who may be called is the operator's decision, not a webhook owner's: an organization admin who
adds a webhook chooses its URL, and the registry then makes requests from inside the network it
runs in. So delivery goes only to public (globally routable) addresses by default, plus the
networks listed in ``allowed_networks``; loopback, private, link-local (cloud metadata
services), multicast and unspecified addresses are refused unless listed. The check is made on
every address the host name resolves to, at delivery time, and the request is sent to the
address that was checked (a DNS answer cannot change between check and connection).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WebhooksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_networks: bool = Field(
        True,
        description="Deliver to public (globally routable) addresses. Off: only to "
        "allowed_networks.",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR, e.g. 10.20.0.0/16 or 127.0.0.1/32) receivers may be in "
        "besides public addresses: loopback, private and link-local addresses are refused "
        "unless listed (server-side request forgery). In the environment: comma-separated.",
    )
    timeout: float = Field(
        10.0, gt=0, le=120, description="Seconds a receiver has to answer one delivery."
    )
    max_attempts: int = Field(
        8,
        ge=1,
        le=50,
        description="Attempts per delivery (the first and its retries, with the job queue's "
        "exponential backoff: jobs.retry_base_seconds doubling up to jobs.retry_max_seconds).",
    )
    keep_days: float = Field(
        14.0, gt=0, description="Deliveries (and their attempt log) are kept this many days."
    )
    max_per_scope: int = Field(
        20, ge=1, le=1000, description="Webhooks one organization or repository may have."
    )

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):  # from the environment
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    @field_validator("allowed_networks")
    @classmethod
    def _check(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allowed_networks: {net!r} is not a network (CIDR)") from None
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]
