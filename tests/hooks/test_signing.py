"""X-Moorage-Signature: the HMAC agrees with an independent implementation (openssl), the
header has exactly the contract's form, and verification refuses every tampering, stale or
malformed case with SignatureError (never another exception)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.hooks import signing
from moorage.hooks.signing import SignatureError, sign, verify

SECRET = "whsec-test-0123456789abcdef"
BODY = b'{"events":[{"action":"push"}]}'
T = 1_733_450_000


def test_header_has_the_contract_form() -> None:
    header = sign(SECRET, BODY, T)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header), header
    assert header.startswith(f"t={T},v1=")
    assert signing.HEADER == "X-Moorage-Signature"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_hmac_matches_openssl() -> None:
    """The signed string is "<t>.<body>"; openssl computes the same HMAC-SHA256 of it."""
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-r"],
        input=f"{T}.".encode() + BODY,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert sign(SECRET, BODY, T) == f"t={T},v1={out.split()[0]}"


def test_verify_accepts_and_returns_the_timestamp() -> None:
    assert verify(sign(SECRET, BODY, T), BODY, SECRET, now=T + 10) == T
    assert verify(sign(SECRET.encode(), BODY, T), BODY, [SECRET], now=T - 10) == T


@pytest.mark.parametrize(
    ("header", "body", "secrets", "now", "why"),
    [
        (sign(SECRET, BODY, T), BODY + b" ", SECRET, T, "does not match"),
        (sign(SECRET, BODY, T), BODY, "another-secret", T, "does not match"),
        (sign(SECRET, BODY, T), BODY, SECRET, T + 301, "replay window"),
        (sign(SECRET, BODY, T), BODY, SECRET, T - 301, "replay window"),  # from the future
        (sign(SECRET, BODY, T).replace(f"t={T}", f"t={T + 1}"), BODY, SECRET, T, "does not match"),
        (None, BODY, SECRET, T, "no X-Moorage-Signature"),
        ("", BODY, SECRET, T, "missing"),
        (f"t={T}", BODY, SECRET, T, "needs t= and v1="),
        (f"v1={'0' * 64}", BODY, SECRET, T, "needs t= and v1="),
        (f"t={T},t={T},v1={'0' * 64}", BODY, SECRET, T, "timestamp"),
        (f"t=-1,v1={'0' * 64}", BODY, SECRET, T, "timestamp"),
        (f"t={T},v1={'0' * 63}", BODY, SECRET, T, "malformed v1"),
        (f"t={T},v1={'G' * 64}", BODY, SECRET, T, "malformed v1"),
        (f"t={T},junk", BODY, SECRET, T, "malformed"),
        ("t=1," + "v1=" + "0" * 64 + "," * 3000, BODY, SECRET, T, "too long"),
        (",".join([f"t={T}"] + [f"v1={'0' * 64}"] * 9), BODY, SECRET, T, "too many"),
    ],
)
def test_verify_refuses(
    header: str | None, body: bytes, secrets: str, now: float, why: str
) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(header, body, secrets, now=now)


def test_rotation_signs_with_both_and_either_verifies() -> None:
    old, new = "old-secret-000000", "new-secret-111111"
    header = sign([new, old], BODY, T)
    assert header.count("v1=") == 2
    assert verify(header, BODY, old, now=T) == T
    assert verify(header, BODY, new, now=T) == T
    assert verify(sign(old, BODY, T), BODY, [new, old], now=T) == T
    with pytest.raises(SignatureError):
        verify(header, BODY, "neither-secret-22", now=T)


def test_unknown_schemes_are_ignored() -> None:
    header = sign(SECRET, BODY, T) + ",v2=" + "f" * 128
    assert verify(header, BODY, SECRET, now=T) == T


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        sign("", BODY, T)
    with pytest.raises(SignatureError):
        verify(sign(SECRET, BODY, T), BODY, [], now=T)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.binary(max_size=100))
def test_any_header_is_refused_cleanly(header: str, body: bytes) -> None:
    """Hostile header values raise SignatureError, nothing else (no ValueError from int(), no
    IndexError)."""
    with pytest.raises(SignatureError):
        verify(header, body, SECRET, now=T)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=10**11))
def test_round_trip(body: bytes, t: int) -> None:
    assert verify(sign(SECRET, body, t), body, SECRET, now=t) == t
