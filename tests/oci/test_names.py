"""Repository name and tag grammar (distribution-spec "Pulling manifests" / <name> and <reference>).

<name>:  [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*
         at most 255 characters here (Distribution's limit).
<tag>:   [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}

Every character outside the grammar — path traversal, separators at the edges, uppercase, control
characters, unicode — must be refused, because names and tags reach the database and URLs.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.oci.names import MAX_NAME_LENGTH, namespace_of, valid_name, valid_tag

# The grammar exactly as the distribution-spec writes it, anchored with \Z: a reference oracle.
SPEC_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*\Z")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "library/ubuntu",
        "a/b/c/d/e",
        "foo.bar",
        "foo_bar",
        "foo__bar",
        "foo-bar",
        "foo---bar",
        "a1/b2/c3",
        "my-org/my.repo_name",
        "123/456",
        "a.b.c/d-e-f/g_h__i",
        "a" * MAX_NAME_LENGTH,
        "/".join(["ab"] * 85),  # 254 characters of many components
    ],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name)
    assert SPEC_NAME.match(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("A", id="upper"),
        pytest.param("Library/ubuntu", id="upper-first"),
        pytest.param("library/Ubuntu", id="upper-component"),
        pytest.param("..", id="dotdot"),
        pytest.param(".", id="dot"),
        pytest.param("a/../b", id="dotdot-component"),
        pytest.param("../etc/passwd", id="leading-dotdot"),
        pytest.param("a/..", id="trailing-dotdot"),
        pytest.param("a..b", id="double-dot"),
        pytest.param("/a", id="leading-slash"),
        pytest.param("a/", id="trailing-slash"),
        pytest.param("a//b", id="empty-component"),
        pytest.param(".a", id="leading-dot"),
        pytest.param("_a", id="leading-underscore"),
        pytest.param("-a", id="leading-dash"),
        pytest.param("a.", id="trailing-dot"),
        pytest.param("a_", id="trailing-underscore"),
        pytest.param("a-", id="trailing-dash"),
        pytest.param("a/-b", id="component-leading-dash"),
        pytest.param("a/.b", id="component-leading-dot"),
        pytest.param("a___b", id="three-underscores"),
        pytest.param("a._b", id="dot-underscore"),
        pytest.param("a.-b", id="dot-dash"),
        pytest.param("a-.b", id="dash-dot"),
        pytest.param("a_-b", id="underscore-dash"),
        pytest.param("a b", id="space"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\\..\\b", id="backslash-traversal"),
        pytest.param("a:b", id="colon"),
        pytest.param("a@b", id="at"),
        pytest.param("a%2fb", id="percent"),
        pytest.param("café", id="latin1-letter"),
        pytest.param("ａ", id="fullwidth"),
        pytest.param("а", id="cyrillic-a"),
        pytest.param("\na", id="leading-newline"),
        pytest.param("a\nb", id="embedded-newline"),
        pytest.param("a" * (MAX_NAME_LENGTH + 1), id="256-chars"),
        pytest.param("/".join(["ab"] * 86), id="257-chars-many-components"),
    ],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_trailing_newline_name_is_invalid() -> None:
    assert not valid_name("library/ubuntu\n")


def test_name_length_boundary() -> None:
    assert MAX_NAME_LENGTH == 255
    assert valid_name("a" * 255)
    assert not valid_name("a" * 256)
    assert not valid_name("a/" * 200 + "a")


@given(st.text(alphabet="abcz09._-/", max_size=40))
def test_valid_name_agrees_with_the_spec_grammar(name: str) -> None:
    assert valid_name(name) == bool(SPEC_NAME.match(name))


@given(st.text(max_size=40))
def test_valid_name_never_accepts_characters_outside_the_grammar(name: str) -> None:
    if valid_name(name):
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-/")


# --- tags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        "latest",
        "v1.2.3",
        "1",
        "_",
        "_private",
        "UPPER-case_Mixed.09",
        "a" * 128,
        "sha256-" + "a" * 64 + ".sig",  # cosign-style tag
        "1.0.0-rc.1",
        "a--b__c..d",
    ],
)
def test_valid_tags(tag: str) -> None:
    assert valid_tag(tag)
    assert SPEC_TAG.match(tag)


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("", id="empty"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("..", id="dotdot"),
        pytest.param("-flag", id="leading-dash"),
        pytest.param("a" * 129, id="129-chars"),
        pytest.param("a/b", id="slash"),
        pytest.param("../x", id="traversal"),
        pytest.param("a:b", id="colon"),
        pytest.param("a b", id="space"),
        pytest.param("a+b", id="plus"),
        pytest.param("a@b", id="at"),
        pytest.param("é", id="latin1"),
        pytest.param("ｌatest", id="fullwidth"),
        pytest.param("a\x00", id="nul"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("\nlatest", id="leading-newline"),
        pytest.param("lat\nest", id="embedded-newline"),
    ],
)
def test_invalid_tags(tag: str) -> None:
    assert not valid_tag(tag)


def test_trailing_newline_tag_is_invalid() -> None:
    assert not valid_tag("latest\n")


@given(st.text(alphabet="aZ09._-/:", max_size=140))
def test_valid_tag_agrees_with_the_spec_grammar(tag: str) -> None:
    assert valid_tag(tag) == bool(SPEC_TAG.match(tag))


# --- namespace_of -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "namespace"),
    [("library/ubuntu", "library"), ("a/b/c", "a"), ("alpine", ""), ("org/team/app", "org")],
)
def test_namespace_of(name: str, namespace: str) -> None:
    assert namespace_of(name) == namespace
