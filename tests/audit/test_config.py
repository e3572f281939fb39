"""AuditConfig: defaults, descriptions, validation; forwarders built from it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from moorage.audit import AuditConfig
from moorage.audit.config import split_host_port
from moorage.audit.forward import HTTPForwarder, SyslogForwarder
from moorage.audit.log import forwarders_from_config


def _leaves(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaves(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


def test_defaults_keep_every_pull_and_forward_nowhere() -> None:
    config = AuditConfig()
    assert config.enabled and config.pull_events == "all"
    assert config.syslog.address is None and config.http.url is None
    assert (config.retention.max_age_days, config.retention.max_events) == (0, 0)
    assert forwarders_from_config(config) == []


def test_every_key_has_a_default_and_a_description() -> None:
    leaves = _leaves(AuditConfig)
    assert "syslog.address" in leaves and "retention.max_events" in leaves
    for key, info in leaves.items():
        assert getattr(info, "description", None), key
        assert not info.is_required(), key  # type: ignore[attr-defined]


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError):
        AuditConfig.model_validate({"pull_event": "all"})
    with pytest.raises(ValidationError):
        AuditConfig.model_validate({"syslog": {"adress": "127.0.0.1:514"}})


@pytest.mark.parametrize(
    "values",
    [
        {"pull_events": "none"},
        {"pull_sample_rate": 1.5},
        {"syslog": {"address": "127.0.0.1"}},
        {"syslog": {"address": "127.0.0.1:0"}},
        {"syslog": {"address": "127.0.0.1:http"}},
        {"syslog": {"protocol": "tls"}},
        {"syslog": {"facility": "local9"}},
        {"syslog": {"app_name": "has space"}},
        {"http": {"url": "ftp://x"}},
        {"http": {"timeout": 0}},
        {"retention": {"max_events": -1}},
    ],
)
def test_invalid_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AuditConfig.model_validate(values)


def test_addresses() -> None:
    assert split_host_port("127.0.0.1:514") == ("127.0.0.1", 514)
    assert split_host_port("syslog.internal:6514") == ("syslog.internal", 6514)
    assert split_host_port("[::1]:514") == ("::1", 514)
    with pytest.raises(ValueError):
        split_host_port("::1:514")


def test_headers_from_the_environment_are_json() -> None:
    config = AuditConfig.model_validate({"http": {"headers": '{"Authorization": "Bearer x"}'}})
    assert config.http.headers == {"Authorization": "Bearer x"}
    with pytest.raises(ValidationError):
        AuditConfig.model_validate({"http": {"headers": "Authorization: x"}})


async def test_forwarders_from_config() -> None:
    config = AuditConfig.model_validate(
        {
            "syslog": {"address": "127.0.0.1:5514", "protocol": "tcp", "facility": "audit"},
            "http": {"url": "http://127.0.0.1:9/"},
            "forward_queue_size": 7,
        }
    )
    syslog, http = forwarders_from_config(config)
    assert isinstance(syslog, SyslogForwarder) and isinstance(http, HTTPForwarder)
    assert (syslog.host, syslog.port, syslog.protocol, syslog.facility) == (
        "127.0.0.1",
        5514,
        "tcp",
        13,
    )
    assert syslog.queue_size == http.queue_size == 7
    await http.aclose()
