"""The envelope: round trips, tampering, wrong keys, rotation, garbage in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.config import ENVELOPE_OVERHEAD_BYTES
from gossip.envelope import ENVELOPE_VERSION, KEYS_MAX, NONCE_BYTES, Keyring

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
KEY_C = b"\xc3" * 32


def nonce(seed: int) -> bytes:
    return random.Random(seed).randbytes(NONCE_BYTES)


def test_round_trip() -> None:
    ring = Keyring([KEY_A])
    frame = ring.seal(b"ping from n1", nonce(1))
    assert ring.open(frame) == b"ping from n1"


def test_empty_plaintext_round_trips() -> None:
    ring = Keyring([KEY_A])
    frame = ring.seal(b"", nonce(2))
    assert len(frame) == ENVELOPE_OVERHEAD_BYTES
    assert ring.open(frame) == b""


def test_wire_layout() -> None:
    ring = Keyring([KEY_A])
    n = nonce(3)
    frame = ring.seal(b"x" * 100, n)
    assert len(frame) == 100 + ENVELOPE_OVERHEAD_BYTES == 141
    assert frame[0] == ENVELOPE_VERSION == 0x01
    assert frame[1 : 1 + NONCE_BYTES] == n
    assert b"x" * 16 not in frame  # encrypted, not just authenticated


def test_another_node_with_the_same_key_opens_it() -> None:
    frame = Keyring([KEY_A]).seal(b"hello", nonce(4))
    assert Keyring([KEY_A]).open(frame) == b"hello"


def test_tampered_byte_at_every_position_is_rejected() -> None:
    ring = Keyring([KEY_A])
    frame = ring.seal(b"suspect n7 incarnation 3", nonce(5))
    for position in range(len(frame)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(frame)
            tampered[position] ^= flip
            assert ring.open(bytes(tampered)) is None, f"byte {position} ^ {flip:#x} accepted"


def test_wrong_key_is_rejected() -> None:
    frame = Keyring([KEY_A]).seal(b"secret", nonce(6))
    assert Keyring([KEY_B]).open(frame) is None


def test_every_installed_key_opens_primary_seals() -> None:
    ring = Keyring([KEY_A, KEY_B])
    assert ring.keys == (KEY_A, KEY_B)
    from_b = Keyring([KEY_B]).seal(b"from b", nonce(7))
    assert ring.open(from_b) == b"from b"
    # The ring seals with its primary only: a node holding just KEY_B cannot read it.
    assert Keyring([KEY_B]).open(ring.seal(b"to b?", nonce(8))) is None
    assert Keyring([KEY_A]).open(ring.seal(b"to a", nonce(9))) == b"to a"


def test_rotation_without_downtime() -> None:
    ring = Keyring([KEY_A])
    old_frame = ring.seal(b"sealed under the old key", nonce(10))

    ring.install(KEY_B)
    assert ring.keys == (KEY_A, KEY_B)
    ring.use(KEY_B)
    assert ring.keys == (KEY_B, KEY_A)
    assert ring.primary == KEY_B
    # In flight during the rotation: still opens.
    assert ring.open(old_frame) == b"sealed under the old key"
    new_frame = ring.seal(b"sealed under the new key", nonce(11))
    assert Keyring([KEY_B]).open(new_frame) == b"sealed under the new key"
    assert Keyring([KEY_A]).open(new_frame) is None

    ring.remove(KEY_A)
    assert list(ring.keys) == [KEY_B]
    assert ring.open(old_frame) is None
    assert ring.open(new_frame) == b"sealed under the new key"


def test_primary_cannot_be_removed() -> None:
    ring = Keyring([KEY_A, KEY_B])
    with pytest.raises(ValueError, match="cannot remove the primary"):
        ring.remove(KEY_A)
    assert ring.keys == (KEY_A, KEY_B)


def test_remove_absent_key_is_a_no_op() -> None:
    ring = Keyring([KEY_A])
    ring.remove(KEY_B)
    assert ring.keys == (KEY_A,)


def test_use_requires_an_installed_key() -> None:
    ring = Keyring([KEY_A])
    with pytest.raises(ValueError, match="not installed"):
        ring.use(KEY_B)
    assert ring.keys == (KEY_A,)


def test_install_is_idempotent_and_duplicates_collapse() -> None:
    ring = Keyring([KEY_A, KEY_B, KEY_A])
    assert ring.keys == (KEY_A, KEY_B)
    ring.install(KEY_B)
    assert ring.keys == (KEY_A, KEY_B)


def test_keyring_is_bounded() -> None:
    ring = Keyring([bytes([i]) * 32 for i in range(KEYS_MAX)])
    with pytest.raises(ValueError, match="keyring is full"):
        ring.install(KEY_C)
    assert len(ring.keys) == KEYS_MAX


@pytest.mark.parametrize("bad", [b"", b"short", bytes(31), bytes(33), bytes(64)])
def test_key_of_wrong_length_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        Keyring([bad])
    ring = Keyring([KEY_A])
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        ring.install(bad)


def test_empty_keyring_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])


def test_a_single_key_instead_of_a_list_is_refused() -> None:
    with pytest.raises(ValueError, match="list of keys"):
        Keyring(KEY_A)  # type: ignore[arg-type]


def test_nonce_of_wrong_length_is_refused() -> None:
    ring = Keyring([KEY_A])
    with pytest.raises(ValueError, match="nonce must be exactly 24 bytes"):
        ring.seal(b"x", b"\x00" * 12)


def test_repr_hides_key_material() -> None:
    text = repr(Keyring([KEY_A, KEY_B]))
    assert text == "Keyring(keys=2)"
    assert KEY_A.hex() not in text


@pytest.mark.parametrize("cut", [0, 1, 24, 25, 40])
def test_truncated_frames_are_rejected(cut: int) -> None:
    ring = Keyring([KEY_A])
    frame = ring.seal(b"", nonce(12))
    assert ring.open(frame[:cut]) is None


def test_truncated_tail_is_rejected() -> None:
    ring = Keyring([KEY_A])
    frame = ring.seal(b"a longer payload of some size", nonce(13))
    for cut in range(len(frame)):
        assert ring.open(frame[:cut]) is None
    assert ring.open(frame + b"\x00") is None


def test_empty_and_garbage_are_rejected() -> None:
    ring = Keyring([KEY_A])
    assert ring.open(b"") is None
    assert ring.open(b"\x01") is None
    assert ring.open(b"\x01" + bytes(40)) is None
    assert ring.open(b"\x01" + bytes(200)) is None


@pytest.mark.parametrize("version", [0x00, 0x02, 0x7F, 0xFF])
def test_version_byte_mismatch_is_rejected(version: int) -> None:
    ring = Keyring([KEY_A])
    frame = ring.seal(b"payload", nonce(14))
    assert ring.open(bytes([version]) + frame[1:]) is None


@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    ring = Keyring([KEY_A, KEY_B])
    assert ring.open(data) is None


@given(st.binary(max_size=64))
def test_random_bytes_after_a_valid_header_never_raise(tail: bytes) -> None:
    ring = Keyring([KEY_A])
    assert ring.open(bytes([ENVELOPE_VERSION]) + tail) is None


@given(st.binary(max_size=1400), st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES))
def test_round_trip_property(plaintext: bytes, n: bytes) -> None:
    ring = Keyring([KEY_A, KEY_B])
    frame = ring.seal(plaintext, n)
    assert len(frame) == len(plaintext) + ENVELOPE_OVERHEAD_BYTES
    assert ring.open(frame) == plaintext
