"""Resumable hashing: an upload's running sha256/sha512 survives a save and a restore.

Rule (docs/architecture.md, uploads invariant 1): after each request the hash state is saved with
the session; whoever continues the upload restores it and must end with exactly hashlib's digest.
A state that cannot be loaded (other algorithm, other layout, corrupted) is refused, and
restore_hasher then answers None so that the caller re-hashes the stored bytes instead.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.oci import hashing
from moorage.oci.hashing import PlainHasher, ResumableHasher, new_hasher, restore_hasher

ALGORITHMS = ["sha256", "sha512"]

needs_libcrypto = pytest.mark.skipif(
    hashing._OSSL is None, reason="libcrypto is not loadable here: no resumable hashing"
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


# --- ResumableHasher --------------------------------------------------------------------------


@needs_libcrypto
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a",
        b"abc",
        b"x" * 55,
        b"x" * 56,
        b"x" * 63,
        b"x" * 64,
        b"x" * 111,
        b"x" * 112,
        b"x" * 127,
        b"x" * 128,
        bytes(range(256)) * 1000,
    ],
    ids=lambda d: f"{len(d)}B",
)
def test_matches_hashlib(algorithm: str, data: bytes) -> None:
    """Block-boundary lengths included (55/56/64 for sha256, 111/112/128 for sha512)."""
    h = ResumableHasher(algorithm)
    h.update(data)
    assert h.hexdigest() == hashlib.new(algorithm, data).hexdigest()


@needs_libcrypto
@settings(max_examples=200, deadline=None)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    data=st.binary(max_size=4096),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=8),
)
def test_save_and_restore_at_random_split_points_equals_hashlib(
    algorithm: str, data: bytes, cuts: list[int]
) -> None:
    """Each chunk goes to a fresh hasher restored from the previous one's saved state."""
    state = ResumableHasher(algorithm).state()
    for chunk in _split(data, cuts):
        h = ResumableHasher(algorithm, state)
        h.update(chunk)
        state = h.state()
    final = ResumableHasher(algorithm, state)
    assert final.hexdigest() == hashlib.new(algorithm, data).hexdigest()


@needs_libcrypto
@given(data=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=2048))
def test_memoryview_updates_equal_bytes_updates(data: bytes, cut: int) -> None:
    h = ResumableHasher("sha256")
    view = memoryview(data)
    h.update(view[:cut])
    h.update(view[cut:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


@needs_libcrypto
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hexdigest_does_not_finalize(algorithm: str) -> None:
    h = ResumableHasher(algorithm)
    h.update(b"first")
    first = h.hexdigest()
    assert h.hexdigest() == first  # asking twice gives the same answer
    h.update(b" second")
    assert h.hexdigest() == hashlib.new(algorithm, b"first second").hexdigest()


@needs_libcrypto
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_state_is_a_snapshot(algorithm: str) -> None:
    h = ResumableHasher(algorithm)
    h.update(b"abc")
    saved = h.state()
    h.update(b"def")  # later progress must not leak into the saved state
    assert (
        ResumableHasher(algorithm, saved).hexdigest() == hashlib.new(algorithm, b"abc").hexdigest()
    )


@needs_libcrypto
def test_empty_update_is_a_no_op() -> None:
    h = ResumableHasher("sha256")
    h.update(b"")
    h.update(memoryview(b""))
    assert h.hexdigest() == hashlib.sha256(b"").hexdigest()


@needs_libcrypto
@pytest.mark.parametrize(("saved_as", "restored_as"), [("sha256", "sha512"), ("sha512", "sha256")])
def test_state_from_the_other_algorithm_is_refused(saved_as: str, restored_as: str) -> None:
    h = ResumableHasher(saved_as)
    h.update(b"data")
    state = h.state()
    assert state is not None
    with pytest.raises(ValueError):
        ResumableHasher(restored_as, state)
    assert restore_hasher(restored_as, state) is None


@needs_libcrypto
@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s[:-1], id="truncated"),
        pytest.param(lambda s: s + b"\x00", id="extended"),
        pytest.param(lambda s: b"XXXX" + s[4:], id="wrong-magic"),
        pytest.param(
            lambda s: s.replace(hashing._OSSL.layout, b"riscv128-16", 1), id="other-layout"
        ),
        pytest.param(lambda s: b"", id="empty"),
        pytest.param(lambda s: b"garbage", id="garbage"),
    ],
)
def test_corrupted_or_foreign_state_is_refused(mangle: object) -> None:
    h = ResumableHasher("sha256")
    h.update(b"data")
    bad = mangle(h.state())  # type: ignore[operator]
    with pytest.raises(ValueError):
        ResumableHasher("sha256", bad)
    assert restore_hasher("sha256", bad) is None


@needs_libcrypto
def test_unknown_algorithm_is_not_resumable() -> None:
    with pytest.raises(RuntimeError):
        ResumableHasher("md5")


# --- new_hasher / restore_hasher / PlainHasher ------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_restore_hasher_none_means_rebuild(algorithm: str) -> None:
    assert restore_hasher(algorithm, None) is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_new_hasher_round_trip_through_restore_hasher(algorithm: str) -> None:
    h = new_hasher(algorithm)
    h.update(b"part one, ")
    restored = restore_hasher(algorithm, h.state())
    if hashing._OSSL is None:
        assert restored is None  # the plain fallback cannot travel
        return
    assert restored is not None
    restored.update(b"part two")
    assert restored.hexdigest() == hashlib.new(algorithm, b"part one, part two").hexdigest()


def test_new_hasher_defaults_to_sha256() -> None:
    h = new_hasher()
    assert h.algorithm == "sha256"
    h.update(b"x")
    assert h.hexdigest() == hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_plain_hasher_matches_hashlib_and_has_no_state(algorithm: str) -> None:
    h = PlainHasher(algorithm)
    h.update(b"abc")
    h.update(memoryview(b"def"))
    assert h.hexdigest() == hashlib.new(algorithm, b"abcdef").hexdigest()
    assert h.state() is None
    assert restore_hasher(algorithm, h.state()) is None
