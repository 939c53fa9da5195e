"""The pairwise envelope: frames between members are proven to come from their sender.

Issue 8, finding 1: holding the network key must not be enough to speak as a
member. A pairwise frame opens only with the two members' keys, names its
sender, and is exactly as long as a network-key frame.
"""

from __future__ import annotations

import hashlib

import nacl.signing
from hypothesis import given
from hypothesis import strategies as st

from gossip.config import ENVELOPE_OVERHEAD_BYTES
from gossip.envelope import (
    ENVELOPE_VERSION,
    FRAME_OVERHEAD_MAX_BYTES,
    PAIRWISE_VERSION,
    SEALED_REPLY_OVERHEAD_BYTES,
    SEALED_REPLY_VERSION,
    Keyring,
    PeerEnvelope,
)

NETWORK_KEY = b"\x01" * 32
NONCE = b"\x05" * 24


def _key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([i]) * 32)


def _id(key: nacl.signing.SigningKey) -> str:
    return hashlib.sha256(bytes(key.verify_key)).hexdigest()[:16]


A, B, C = _key(1), _key(2), _key(3)
KEYS = {_id(k): bytes(k.verify_key) for k in (A, B, C)}


def _env(key: nacl.signing.SigningKey | None) -> PeerEnvelope:
    return PeerEnvelope(Keyring([NETWORK_KEY]), key)


def test_a_pairwise_frame_names_and_proves_its_sender() -> None:
    frame = _env(A).seal(b"ping", NONCE, bytes(B.verify_key))
    assert frame[0] == PAIRWISE_VERSION
    assert len(frame) == len(b"ping") + ENVELOPE_OVERHEAD_BYTES  # packet budgets unchanged
    assert _env(B).open(frame, KEYS.get) == (b"ping", _id(A))


def test_a_network_key_holder_cannot_forge_a_members_frame() -> None:
    # C holds the network key and a node key of its own; it writes A's id into the nonce.
    forged = bytearray(_env(C).seal(b"dead", NONCE, bytes(B.verify_key)))
    forged[1:9] = bytes.fromhex(_id(A))
    assert _env(B).open(bytes(forged), KEYS.get) == (None, "unsealed")
    # Without a node key at all, it can only seal under the network key: no sender is proven.
    assert _env(None).seal(b"dead", NONCE, bytes(B.verify_key))[0] == ENVELOPE_VERSION
    assert _env(B).open(_env(None).seal(b"dead", NONCE), KEYS.get) == (b"dead", "")


def test_only_the_receiver_opens_it() -> None:
    frame = _env(A).seal(b"x", NONCE, bytes(B.verify_key))
    assert _env(C).open(frame, KEYS.get) == (None, "unsealed")
    assert _env(A).open(frame, KEYS.get) == (None, "unsealed")  # reflected back to its sender
    assert _env(None).open(frame, KEYS.get) == (None, "unsealed")


def test_a_sender_the_receiver_does_not_know_is_counted_apart() -> None:
    frame = _env(A).seal(b"x", NONCE, bytes(B.verify_key))
    assert _env(B).open(frame, lambda node_id: None) == (None, "sender_unknown")


def test_every_tampered_byte_is_refused() -> None:
    frame = _env(A).seal(b"hello", NONCE, bytes(B.verify_key))
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x40
        plaintext, _ = _env(B).open(bytes(bad), KEYS.get)
        assert plaintext is None, i


def test_a_peer_key_that_is_no_curve_point_falls_back_to_the_network_key() -> None:
    bad_point = next(bytes([i]) * 32 for i in range(256) if _not_a_point(bytes([i]) * 32))
    frame = _env(A).seal(b"x", NONCE, bad_point)
    assert frame[0] == ENVELOPE_VERSION
    assert _env(B).open(frame, KEYS.get) == (b"x", "")


def _not_a_point(key: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key).to_curve25519_public_key()
    except Exception:
        return True
    return False


@given(st.binary(max_size=1400), st.binary(min_size=24, max_size=24))
def test_round_trip(plaintext: bytes, nonce: bytes) -> None:
    assert _env(B).open(_env(A).seal(plaintext, nonce, bytes(B.verify_key)), KEYS.get) == (plaintext, _id(A))


@given(st.binary(max_size=200))
def test_junk_never_raises(data: bytes) -> None:
    plaintext, reason = _env(B).open(data, KEYS.get)
    assert plaintext is None and reason in ("unsealed", "sender_unknown")
    for version in (PAIRWISE_VERSION, SEALED_REPLY_VERSION):
        plaintext, reason = _env(B).open(bytes([version]) + data, KEYS.get)
        assert plaintext is None


def test_a_network_key_frame_names_its_sender_as_a_claim_only() -> None:
    frame = _env(A).seal(b"join", NONCE)
    assert frame[0] == ENVELOPE_VERSION
    assert PeerEnvelope.claimed_sender(frame) == _id(A)
    assert _env(B).open(frame, KEYS.get) == (b"join", "")  # unproven: no sender id handed on
    assert PeerEnvelope.claimed_sender(_env(None).seal(b"x", NONCE)) == NONCE[:8].hex()


def test_a_joins_answer_opens_only_for_the_node_it_is_sealed_to() -> None:
    answer = _env(B).seal_to(b"members and records", NONCE, bytes(A.verify_key))
    assert answer[0] == SEALED_REPLY_VERSION
    assert (
        len(answer)
        == len(b"members and records") + SEALED_REPLY_OVERHEAD_BYTES
        <= (len(b"members and records") + FRAME_OVERHEAD_MAX_BYTES)
    )
    assert _env(A).open(answer, KEYS.get) == (b"members and records", "")
    # Whoever replayed A's admission holds the network key, maybe a node key: not A's.
    assert _env(C).open(answer, KEYS.get) == (None, "unsealed")
    assert _env(None).open(answer, KEYS.get) == (None, "unsealed")
    assert Keyring([NETWORK_KEY]).open(answer) is None
    # Nobody's key known: the network key, as before.
    assert _env(B).seal_to(b"x", NONCE, None)[0] == ENVELOPE_VERSION
