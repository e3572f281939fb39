"""seal()'s fast path computes the canonical chain hash (plain functions: no event loop, so not
under tests/audit's asyncio mark)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from moorage.audit import AuditEvent
from moorage.audit.events import chain_hash, seal

# --- seal's fast path computes the canonical hash -----------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"status": 200},
        {"b": [1, {"z": None, "a": "é"}], "a": 1.5},
        "shared",
    ],
)
def test_seal_hash_is_the_canonical_chain_hash(details: Any) -> None:
    """seal() builds its hash input in sorted key order and takes shared details' JSON as
    encoded once; the stored hash must still be chain_hash of the canonical hash input (what
    verify recomputes), whatever the fields hold."""
    from moorage.audit.events import SharedDetails

    if details == "shared":
        details = SharedDetails({"status": 200, "count": 3})
    ev = AuditEvent(
        "manifest.pull",
        actor="alice",
        actor_type="user",
        repository="acme/app",
        tag="v1",
        digest="sha256:" + "a" * 64,
        client_addr="10.0.0.1",
        user_agent="ua \u2603 with\x00nul",
        request_id="rid",
        details=details,
        time=datetime(2026, 12, 7, 1, 2, 3, 4, tzinfo=UTC),
    )
    rec = seal(ev, 42, "f" * 64)
    assert rec.hash == chain_hash(rec.hash_input()) == rec.computed_hash()
    assert json.loads(rec.details_json) == dict(details)
    assert rec.user_agent is not None and "\x00" not in rec.user_agent


def test_shared_details_are_a_read_only_mapping() -> None:
    from moorage.audit.events import SharedDetails, canonical_json

    d = SharedDetails({"status": 404})
    assert dict(d) == {"status": 404} and d.get("status") == 404 and len(d) == 1
    assert d.json == canonical_json({"status": 404})
    with pytest.raises(TypeError):
        d["status"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "fields",
    [
        # optional fields absent: null in the hash input
        {"actor": "", "actor_type": "anonymous"},
        # quotes, backslashes, control characters, non-ASCII and astral characters: escaped
        {
            "actor": 'o"brien\\x',
            "actor_type": "user",
            "repository": "acme/app",
            "tag": "v1",
            "user_agent": "tab\there\nnew \u00e9 \U0001f600 \x7f",
            "client_addr": "::1",
            "request_id": "r" * 200,
        },
    ],
)
def test_seal_hash_is_canonical_for_empty_and_escaped_fields(fields: dict[str, Any]) -> None:
    ev = AuditEvent(
        "login",
        result="failure",
        request_id=fields.pop("request_id", None),
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        **fields,
    )
    rec = seal(ev, 7, "0" * 64)
    assert rec.hash == chain_hash(rec.hash_input()) == rec.computed_hash()
