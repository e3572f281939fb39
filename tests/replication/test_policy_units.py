"""Pure parts of the replication capability: patterns, destination names, cron, triggers, and
the three-way merge of geo-replicated identities."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from moorage.replication import filters
from moorage.replication.identities import diff, merge3
from moorage.replication.service import Triggers
from moorage.services.errors import Invalid


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("acme/*", "acme/app", True),
        ("acme/*", "acme/team/app", False),
        ("acme/**", "acme/team/app", True),
        ("**", "a/b/c", True),
        ("v1.?", "v1.2", True),
        ("v1.?", "v1.22", False),
        ("{v1,v2}*", "v2.0", True),
        ("{v1,v2}*", "v3.0", False),
        ("latest,v*", "latest", True),
        ("lib/{alpine,busybox}", "lib/busybox", True),
        ("a.b", "axb", False),  # a dot is a dot
        ("acme/app", "acme/app", True),
    ],
)
def test_patterns(pattern: str, name: str, expected: bool) -> None:
    assert filters.matches(pattern, name) is expected


@pytest.mark.parametrize("bad", ["", "{a", "a}", "x" * 600, "a\nb"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(filters.PatternError):
        filters.compile_pattern(bad)


def test_exclude_applies_to_repositories_or_tags() -> None:
    assert filters.excluded_repository("acme/old-*", "acme/old-app")
    assert not filters.excluded_tag("acme/old-*", "old-1")
    assert filters.excluded_tag("*-rc*", "1.0-rc1")
    assert not filters.excluded_repository("*-rc*", "acme/app-rc")


def test_destination_rewrites_the_namespace() -> None:
    assert filters.destination("library/alpine", "mirror") == "mirror/alpine"
    assert filters.destination("acme/team/app", "dr") == "dr/team/app"
    assert filters.destination("alpine", "mirror") == "mirror/alpine"
    assert filters.destination("acme/app", None) == "acme/app"


def test_attached_tags() -> None:
    digest = "sha256:" + "ab" * 32
    assert filters.attached_subject("sha256-" + "ab" * 32 + ".sig") == digest
    assert filters.attached_subject("sha256-" + "ab" * 32) == digest
    assert filters.attached_subject("v1") is None


def test_cron() -> None:
    assert filters.check_cron("*/15  *  * * *") == "*/15 * * * *"
    with pytest.raises(filters.PatternError):
        filters.check_cron("61 * * * *")
    with pytest.raises(filters.PatternError):
        filters.check_cron("* * * *")
    last = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    # Down for hours: one firing, the latest one.
    fired = filters.cron_due("*/15 * * * *", last, datetime(2026, 1, 1, 3, 7, tzinfo=UTC))
    assert fired == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    assert filters.cron_due("0 0 * * *", last, datetime(2026, 1, 1, 23, 0, tzinfo=UTC)) is None


def test_triggers() -> None:
    t = Triggers.parse(["manual", "event", "cron:0 3 * * *"])
    assert (t.on_event, t.cron) == (True, "0 3 * * *")
    assert t.names() == ["manual", "event", "cron:0 3 * * *"]
    with pytest.raises(Invalid):
        Triggers.parse(["hourly"])
    with pytest.raises(Invalid):
        Triggers.parse(["cron:* * * * *", "cron:0 * * * *"])


def test_merge3_takes_each_sides_changes_and_removals() -> None:
    base = {"org:a": {"d": ""}, "user:x": {"updated_at": "1"}, "user:y": {"updated_at": "1"}}
    local = {"org:a": {"d": "new"}, "user:x": {"updated_at": "1"}, "team:a/t": {}}
    peer = {"org:a": {"d": ""}, "user:y": {"updated_at": "1"}, "user:z": {"updated_at": "2"}}
    merged = merge3(base, local, peer)
    assert merged == {
        "org:a": {"d": "new"},  # changed here
        "team:a/t": {},  # added here
        "user:z": {"updated_at": "2"},  # added there
        # user:x removed there (unchanged here), user:y removed here (unchanged there)
    }
    assert diff(peer, merged) == {
        "org:a": {"d": "new"},
        "team:a/t": {},
        "user:y": None,
    }


def test_merge3_conflicts() -> None:
    base = {"user:x": {"e": "0", "updated_at": "1"}, "org:o": {"d": "0"}, "org:p": {"d": "0"}}
    local = {"user:x": {"e": "L", "updated_at": "2"}, "org:o": {"d": "L"}}
    peer = {"user:x": {"e": "P", "updated_at": "3"}, "org:o": {"d": "P"}, "org:p": {"d": "P"}}
    merged = merge3(base, local, peer)
    assert merged["user:x"]["e"] == "P"  # the later update of a user wins
    assert merged["org:o"]["d"] == "L"  # else the initiator's
    assert merged["org:p"]["d"] == "P"  # a change beats a removal
