"""Digest parsing (image-spec "Digests"): ``algorithm ":" encoded``.

The registry accepts the registered algorithms sha256 and sha512 only, and their encoded part must
be lowercase hex of exactly 64 / 128 characters. Because a parsed Digest is used to build storage
paths, anything else — traversal, separators, control characters, unicode look-alikes — must be
refused with InvalidDigest, and whatever is accepted must round-trip to the very same string.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.oci.digest import ALGORITHMS, Digest, InvalidDigest, is_digest

HEX256 = hashlib.sha256(b"moorage").hexdigest()
HEX512 = hashlib.sha512(b"moorage").hexdigest()


# --- valid ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "algorithm", "hex_"),
    [
        (f"sha256:{HEX256}", "sha256", HEX256),
        (f"sha512:{HEX512}", "sha512", HEX512),
        ("sha256:" + "0" * 64, "sha256", "0" * 64),
        ("sha512:" + "f" * 128, "sha512", "f" * 128),
    ],
)
def test_valid_digests_parse_and_round_trip(value: str, algorithm: str, hex_: str) -> None:
    d = Digest.parse(value)
    assert (d.algorithm, d.hex) == (algorithm, hex_)
    assert str(d) == value
    assert Digest.parse(str(d)) == d


def test_registered_algorithms_are_sha256_and_sha512() -> None:
    assert ALGORITHMS == {"sha256": 64, "sha512": 128}


@given(st.binary(max_size=2048), st.sampled_from(["sha256", "sha512"]))
def test_from_bytes_matches_hashlib_and_parses_back(data: bytes, algorithm: str) -> None:
    d = Digest.from_bytes(data, algorithm)
    assert d.hex == hashlib.new(algorithm, data).hexdigest()
    assert Digest.parse(str(d)) == d


def test_digest_is_an_immutable_value() -> None:
    a, b = Digest.parse(f"sha256:{HEX256}"), Digest.parse(f"sha256:{HEX256}")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.hex = "0" * 64  # type: ignore[misc]


# --- invalid ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"sha256:{HEX256.upper()}", id="uppercase-hex"),
        pytest.param(f"sha256:{HEX256[:32].upper()}{HEX256[32:]}", id="mixed-case-hex"),
        pytest.param(f"SHA256:{HEX256}", id="uppercase-algorithm"),
        pytest.param(f"Sha256:{HEX256}", id="capitalized-algorithm"),
    ],
)
def test_case_matters(value: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("sha256:" + "a" * 63, id="sha256-63"),
        pytest.param("sha256:" + "a" * 65, id="sha256-65"),
        pytest.param("sha256:" + "a" * 128, id="sha256-with-sha512-length"),
        pytest.param("sha512:" + "a" * 64, id="sha512-with-sha256-length"),
        pytest.param("sha512:" + "a" * 127, id="sha512-127"),
        pytest.param("sha512:" + "a" * 129, id="sha512-129"),
        pytest.param("sha256:a", id="one-char"),
    ],
)
def test_wrong_lengths(value: str) -> None:
    with pytest.raises(InvalidDigest, match="lowercase hex"):
        Digest.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("md5:" + hashlib.md5(b"x").hexdigest(), id="md5"),
        pytest.param("sha1:" + hashlib.sha1(b"x").hexdigest(), id="sha1"),
        pytest.param("sha384:" + hashlib.sha384(b"x").hexdigest(), id="sha384"),
        pytest.param("blake3:" + "a" * 64, id="blake3"),
        pytest.param("sha256+b64u:" + "a" * 43, id="sha256+b64u"),
        pytest.param(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", id="multihash"
        ),
    ],
)
def test_unsupported_algorithms(value: str) -> None:
    with pytest.raises(InvalidDigest, match="unsupported"):
        Digest.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        "sha256:../../etc",
        "sha256:../../etc/passwd",
        "sha256:..%2f..%2fetc",
        "sha256:..",
        "sha256:" + "a" * 62 + "/.",
        "sha256:" + "a" * 60 + "/../",
        "sha256:..\\..\\windows",
        "../sha256:" + HEX256,
        "sha256/../x:" + HEX256,
        "/sha256:" + HEX256,
        "sha256:/" + HEX256[1:],
        "sha256:" + HEX256 + "/",
        "sha256:" + HEX256 + "/..",
    ],
)
def test_path_traversal_is_refused(value: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(":", id="colon"),
        pytest.param("sha256", id="no-colon"),
        pytest.param("sha256:", id="no-encoded"),
        pytest.param(":" + HEX256, id="no-algorithm"),
        pytest.param(HEX256, id="bare-hex"),
        pytest.param("sha256::" + HEX256, id="double-colon"),
        pytest.param(f"sha256:{HEX256}:{HEX256}", id="two-digests"),
        pytest.param("sha256-:" + HEX256, id="trailing-separator-in-algorithm"),
        pytest.param("+sha256:" + HEX256, id="leading-separator-in-algorithm"),
        pytest.param("sha256:" + "g" * 64, id="non-hex"),
        pytest.param("sha256:" + "=" * 64, id="base64-padding"),
        pytest.param("sha256:" + "-" * 64, id="dashes"),
    ],
)
def test_malformed(value: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f" sha256:{HEX256}", id="leading-space"),
        pytest.param(f"sha256:{HEX256} ", id="trailing-space"),
        pytest.param(f"sha256: {HEX256}", id="space-after-colon"),
        pytest.param(f"\nsha256:{HEX256}", id="leading-newline"),
        pytest.param(f"sha256:{HEX256}\r\n", id="trailing-crlf"),
        pytest.param(f"sha256:{HEX256}\x00", id="trailing-nul"),
        pytest.param(f"sha256:{HEX256[:32]}\x00{HEX256[33:]}", id="embedded-nul"),
        pytest.param(f"sha256:{HEX256}\t", id="trailing-tab"),
    ],
)
def test_whitespace_and_control_characters(value: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(value)


def test_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(f"sha256:{HEX256}\n")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("sha256:" + "а" * 64, id="cyrillic-a"),
        pytest.param("sha256:" + "０" * 64, id="fullwidth-zero"),
        pytest.param("sha256:" + "٣" * 64, id="arabic-indic-three"),
        pytest.param("sha256:" + "²" * 64, id="superscript-two"),
        pytest.param("ѕha256:" + HEX256, id="cyrillic-s-in-algorithm"),
        pytest.param("sha256:" + HEX256[:63] + "\u0301", id="combining-accent"),
        pytest.param("sha256:" + HEX256[:63] + "\ud800", id="lone-surrogate"),
        pytest.param("sha256:" + "🐳" * 64, id="emoji"),
    ],
)
def test_unicode_look_alikes(value: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(value)


@pytest.mark.parametrize("length", [201, 1000, 1_000_000])
def test_very_long_values_are_refused_quickly(length: int) -> None:
    value = ("sha256:" + "a" * length)[:length]
    with pytest.raises(InvalidDigest, match="too long"):
        Digest.parse(value)


def test_long_pathological_algorithm_does_not_backtrack() -> None:
    # 200 characters of alternating component/separator: must fail fast, not hang.
    with pytest.raises(InvalidDigest):
        Digest.parse("a-" * 99 + "!")


def test_error_message_is_bounded() -> None:
    value = "x" * 200
    with pytest.raises(InvalidDigest) as info:
        Digest.parse(value)
    assert len(str(info.value)) < 150


@given(st.text(max_size=300))
def test_anything_accepted_round_trips_exactly(value: str) -> None:
    """Either refused, or canonical: the parsed Digest prints as exactly the input."""
    try:
        d = Digest.parse(value)
    except InvalidDigest:
        return
    assert str(d) == value
    assert d.algorithm in ALGORITHMS and len(d.hex) == ALGORITHMS[d.algorithm]


@given(st.sampled_from(["sha256", "sha512"]), st.text(alphabet="0123456789abcdef", max_size=130))
def test_hex_of_any_length_is_accepted_only_at_the_exact_length(algorithm: str, hex_: str) -> None:
    value = f"{algorithm}:{hex_}"
    if len(hex_) == ALGORITHMS[algorithm]:
        assert str(Digest.parse(value)) == value
    else:
        with pytest.raises(InvalidDigest):
            Digest.parse(value)


# --- is_digest --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"sha256:{HEX256}", True),
        ("md5:abc", True),  # digest-shaped (and then refused by parse), never a tag
        ("latest", False),
        ("v1.2.3", False),
        ("", False),
    ],
)
def test_is_digest_tells_digests_from_tags(value: str, expected: bool) -> None:
    assert is_digest(value) is expected
