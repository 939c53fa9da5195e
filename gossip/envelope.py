"""The envelope: authenticated encryption of every datagram and stream frame.

Two kinds of frame: pairwise frames between admitted members (`PeerEnvelope`,
below), and network-key frames for everything else (joins, replies to
strangers, and every frame of a node without a node key). A network-key frame
is laid out as

    version (1 byte, 0x01) | nonce (24 bytes) | ciphertext + Poly1305 tag (len(plaintext) + 16)

with XSalsa20-Poly1305 (`nacl.secret.SecretBox`) under the cluster's network key.
A `Keyring` holds up to `KEYS_MAX` keys: the primary seals, and every installed key
is tried on receipt, so a key rotates without downtime (install the new key
everywhere, `use` it everywhere, then `remove` the old one).

Sans-IO: the caller passes the nonce. Drivers draw it from `nacl.utils.random(24)`;
the simulator draws it from its seeded RNG so a run stays reproducible. A nonce
must never repeat under one key; 24 random bytes make a collision negligible.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import nacl.public
import nacl.signing
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from gossip.config import ENVELOPE_OVERHEAD_BYTES, INTRO_KEY_BYTES

ENVELOPE_VERSION = 0x01
VERSION_BYTES = 1
NONCE_BYTES = SecretBox.NONCE_SIZE
TAG_BYTES = SecretBox.MACBYTES
KEY_BYTES = SecretBox.KEY_SIZE
# Opening tries every installed key, so the ring is small by construction: a
# rotation needs two keys, a few more leave room for an overlapping one.
KEYS_MAX = 8

assert VERSION_BYTES + NONCE_BYTES + TAG_BYTES == ENVELOPE_OVERHEAD_BYTES
assert KEY_BYTES == 32 and NONCE_BYTES == 24

_VERSION_PREFIX = bytes([ENVELOPE_VERSION])


def _checked_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise ValueError(f"network key must be {KEY_BYTES} bytes, got a {type(key).__name__}")
    key = bytes(key)
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"network key must be exactly {KEY_BYTES} bytes, got {len(key)}; "
            "use the key from the cluster's join token (murmur cluster init)"
        )
    return key


class Keyring:
    """The network keys of one node: the primary (first) seals, all of them open."""

    __slots__ = ("_boxes", "_keys")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if isinstance(keys, bytes | bytearray | memoryview):
            raise ValueError("Keyring takes a list of keys, not a single key: Keyring([key])")
        if not keys:
            raise ValueError("a keyring needs at least one key (the primary, which seals)")
        self._keys: list[bytes] = []
        self._boxes: list[SecretBox] = []
        for key in keys:
            self.install(key)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The installed keys, primary first."""
        return tuple(self._keys)

    @property
    def primary(self) -> bytes:
        """The key that seals."""
        return self._keys[0]

    def install(self, key: bytes) -> None:
        """Add a key that opens frames (it does not seal until `use`); no-op if installed."""
        key = _checked_key(key)
        if key in self._keys:
            return
        if len(self._keys) >= KEYS_MAX:
            raise ValueError(
                f"keyring is full ({KEYS_MAX} keys); remove a retired key before installing another"
            )
        self._keys.append(key)
        self._boxes.append(SecretBox(key))

    def use(self, key: bytes) -> None:
        """Make an installed key the primary, the one that seals."""
        key = _checked_key(key)
        try:
            index = self._keys.index(key)
        except ValueError:
            raise ValueError("cannot use a key that is not installed; install it first") from None
        self._keys.insert(0, self._keys.pop(index))
        self._boxes.insert(0, self._boxes.pop(index))

    def remove(self, key: bytes) -> None:
        """Remove a non-primary key; frames sealed under it no longer open. No-op if absent."""
        key = _checked_key(key)
        if key == self._keys[0]:
            raise ValueError("cannot remove the primary key; use another key first, then remove this one")
        if key in self._keys:
            index = self._keys.index(key)
            del self._keys[index]
            del self._boxes[index]

    def seal(self, plaintext: bytes, nonce: bytes) -> bytes:
        """Encrypt and authenticate `plaintext` under the primary key with a fresh 24-byte nonce."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be exactly {NONCE_BYTES} bytes, got {len(nonce)}")
        # SecretBox.encrypt returns nonce || ciphertext || tag.
        sealed = self._boxes[0].encrypt(bytes(plaintext), bytes(nonce))
        return _VERSION_PREFIX + bytes(sealed)

    def open(self, data: bytes) -> bytes | None:
        """The plaintext of a sealed frame, or None if no key authenticates it. Never raises."""
        try:
            if len(data) < ENVELOPE_OVERHEAD_BYTES or data[0] != ENVELOPE_VERSION:
                return None
            frame = bytes(data)
        except Exception:
            # Not bytes-like at all: the contract is None, never an exception.
            return None
        nonce = frame[VERSION_BYTES : VERSION_BYTES + NONCE_BYTES]
        ciphertext = frame[VERSION_BYTES + NONCE_BYTES :]
        for box in self._boxes:
            try:
                return bytes(box.decrypt(ciphertext, nonce))
            except CryptoError:
                continue
        return None

    def __repr__(self) -> str:
        # Never print key material.
        return f"Keyring(keys={len(self._keys)})"


# --- the pairwise envelope: frames between admitted members --------------------------
#
# A pairwise frame is laid out like a network-key frame, with another version byte:
#
#     version (1 byte, 0x02) | nonce (24 bytes) | ciphertext + Poly1305 tag
#
# sealed with `nacl.public.Box`: XSalsa20-Poly1305 under the X25519 key the two
# members share (each side's Ed25519 node key converted to X25519). The first 8
# bytes of the nonce are the sender's node id (the first 8 bytes of sha256 of its
# public key), the other 16 are random: the receiver finds the sender's key by
# that id and the tag proves the frame came from that key's holder (or from
# the receiver itself). Only the two ends can open or forge it: holding the
# network key is not enough to speak as a member. The frame is exactly as long
# as a network-key frame, so packet budgets do not change.

PAIRWISE_VERSION = 0x02
# A stream's answer to a network-key request from a node whose key we know (a
# join): `nacl.public.SealedBox` to that node's X25519 key, so only the node the
# request names can read the pool's members and records, not whoever replayed
# its admission. Layout: 0x03 | ephemeral public key (32) | ciphertext + tag (16).
SEALED_REPLY_VERSION = 0x03
SEALED_REPLY_OVERHEAD_BYTES = VERSION_BYTES + 32 + TAG_BYTES
# A pairwise frame that also carries the sender's public key: the receiver can
# open it even before it learnt the sender's key (its admission spreads by
# gossip), and hands on the proven id, which the core treats as a stranger's
# until it is a member. A sender uses it until the peer has shown it knows our
# key (a pairwise frame from it opened here), and only if it fits the packet.
# Layout: 0x04 | sender Ed25519 public key (32) | nonce (24) | ciphertext + tag.
INTRO_VERSION = 0x04
PUBLIC_KEY_BYTES = INTRO_KEY_BYTES
INTRO_OVERHEAD_BYTES = ENVELOPE_OVERHEAD_BYTES + PUBLIC_KEY_BYTES
# What a stream reader must allow beyond the plaintext limit, whichever frame comes.
FRAME_OVERHEAD_MAX_BYTES = max(ENVELOPE_OVERHEAD_BYTES, SEALED_REPLY_OVERHEAD_BYTES, INTRO_OVERHEAD_BYTES)
SENDER_ID_BYTES = 8
# Boxes precomputed per peer public key (an X25519 scalar multiplication each):
# enough for the largest region pool plus the fleet pool.
BOXES_MAX = 4096

_PAIRWISE_PREFIX = bytes([PAIRWISE_VERSION])
_SEALED_REPLY_PREFIX = bytes([SEALED_REPLY_VERSION])
_INTRO_PREFIX = bytes([INTRO_VERSION])


@runtime_checkable
class PeerKeys(Protocol):
    """Who is who, as the core knows it (gossip.node.GossipNode, node.core.Node)."""

    def peer_at(self, addr: str) -> str | None:
        """The id of the admitted member at addr (None: a stranger, or not authenticated)."""
        ...

    def peer_key(self, node_id: str) -> bytes | None:
        """An admitted, unrevoked member's Ed25519 public key (None: unknown)."""
        ...


class PeerEnvelope:
    """Seals to a member with the pair's key, to anyone else with the network keyring.

    `seal(plaintext, nonce, peer_key)` uses the pairwise box when this node has a
    node key and the receiver's public key is known, else the keyring (a join to
    a seed, a reply to a stranger). `open(data, key_of)` answers (plaintext,
    sender id), with sender id "" for a network-key frame, or (None, reason).
    """

    __slots__ = ("_boxes", "_id_bytes", "_public", "_secret", "keyring", "keys_derived")

    def __init__(self, keyring: Keyring, node_key: nacl.signing.SigningKey | None = None) -> None:
        self.keyring = keyring
        self._secret: nacl.public.PrivateKey | None = None
        self._id_bytes = b""
        self._public = b""
        if node_key is not None:
            self._secret = node_key.to_curve25519_private_key()
            self._public = bytes(node_key.verify_key)
            self._id_bytes = hashlib.sha256(bytes(node_key.verify_key)).digest()[:SENDER_ID_BYTES]
        # peer Ed25519 public key -> its Box (None: the key is not a valid curve point)
        self._boxes: OrderedDict[bytes, nacl.public.Box | None] = OrderedDict()
        # X25519 multiplications so far (one per key not cached): what a driver rate-limits.
        self.keys_derived = 0

    @property
    def pairwise(self) -> bool:
        """Whether this node seals to members with pairwise keys (it has a node key)."""
        return self._secret is not None

    def seal(
        self, plaintext: bytes, nonce: bytes, peer_key: bytes | None = None, *, introduce: bool = False
    ) -> bytes:
        """Seal to the peer whose public key is peer_key (None or no node key: the network key).

        Either way the nonce starts with our id: proven in a pairwise frame, a mere
        claim in a network-key frame, which says whom to seal a stream's answer to.
        introduce: carry our public key too (INTRO_VERSION), for a peer that may not
        know it yet.
        """
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be exactly {NONCE_BYTES} bytes, got {len(nonce)}")
        nonce = self._id_bytes + bytes(nonce[len(self._id_bytes) :])
        box = self._box(peer_key) if peer_key is not None and self._secret is not None else None
        if box is None:
            return self.keyring.seal(plaintext, nonce)
        if introduce:
            return _INTRO_PREFIX + self._public + bytes(box.encrypt(bytes(plaintext), nonce))
        return _PAIRWISE_PREFIX + bytes(box.encrypt(bytes(plaintext), nonce))

    def seal_to(self, plaintext: bytes, nonce: bytes, public_key: bytes | None) -> bytes:
        """Seal so that only public_key's holder opens it (a join's answer); the network key if None."""
        box = self._sealed_box(public_key) if public_key is not None else None
        if box is None:
            return self.seal(plaintext, nonce)
        return _SEALED_REPLY_PREFIX + bytes(box.encrypt(bytes(plaintext)))

    @staticmethod
    def claimed_sender(data: bytes) -> str:
        """The sender id a network-key or pairwise frame names (unproven for a network-key frame)."""
        if len(data) < ENVELOPE_OVERHEAD_BYTES or data[0] not in (ENVELOPE_VERSION, PAIRWISE_VERSION):
            return ""  # an introducing frame's sender is proven: it never needs this
        return bytes(data[VERSION_BYTES : VERSION_BYTES + SENDER_ID_BYTES]).hex()

    def open(
        self, data: bytes, key_of: Callable[[str], bytes | None], *, new_keys_allowed: bool = True
    ) -> tuple[bytes, str] | tuple[None, str]:
        """(plaintext, sender id) of a frame ("" for a network-key frame or a sealed
        answer, whose sender is unproven), or (None, why not).

        Reasons: "unsealed" (no key opens it, or it is not a frame at all),
        "sender_unknown" (a pairwise frame from an id that key_of does not know:
        not admitted, revoked, or not yet learnt) and "new_key_refused" (a frame
        introducing a key key_of does not know, while new_keys_allowed is False:
        each such key costs an X25519 multiplication, so the driver bounds their
        rate). An introducing frame's sender is proven to hold the key it
        carries, not to be a member: the core decides that. Never raises.
        """
        try:
            if len(data) < ENVELOPE_OVERHEAD_BYTES:
                return None, "unsealed"
            version = data[0]
        except Exception:
            return None, "unsealed"
        if version == SEALED_REPLY_VERSION:
            return self._open_sealed_reply(data)
        if version == INTRO_VERSION:
            return self._open_intro(bytes(data), key_of, new_keys_allowed)
        if version != PAIRWISE_VERSION:
            plaintext = self.keyring.open(data)
            return (plaintext, "") if plaintext is not None else (None, "unsealed")
        if self._secret is None:
            return None, "unsealed"
        frame = bytes(data)
        sender_id = frame[VERSION_BYTES : VERSION_BYTES + SENDER_ID_BYTES].hex()
        public_key = key_of(sender_id)
        box = self._box(public_key) if public_key is not None else None
        if box is None:
            return None, "sender_unknown"
        nonce = frame[VERSION_BYTES : VERSION_BYTES + NONCE_BYTES]
        try:
            return bytes(box.decrypt(frame[VERSION_BYTES + NONCE_BYTES :], nonce)), sender_id
        except CryptoError:
            return None, "unsealed"

    def _open_intro(
        self, frame: bytes, key_of: Callable[[str], bytes | None], new_keys_allowed: bool
    ) -> tuple[bytes, str] | tuple[None, str]:
        if self._secret is None or len(frame) < INTRO_OVERHEAD_BYTES:
            return None, "unsealed"
        public_key = frame[VERSION_BYTES : VERSION_BYTES + PUBLIC_KEY_BYTES]
        nonce = frame[VERSION_BYTES + PUBLIC_KEY_BYTES : VERSION_BYTES + PUBLIC_KEY_BYTES + NONCE_BYTES]
        sender_id = nonce[:SENDER_ID_BYTES].hex()
        if hashlib.sha256(public_key).digest()[:SENDER_ID_BYTES] != nonce[:SENDER_ID_BYTES]:
            return None, "unsealed"  # the id it names is not its key's
        if public_key not in self._boxes and key_of(sender_id) != public_key and not new_keys_allowed:
            return None, "new_key_refused"
        box = self._box(public_key)
        if box is None:
            return None, "unsealed"
        try:
            return bytes(
                box.decrypt(frame[VERSION_BYTES + PUBLIC_KEY_BYTES + NONCE_BYTES :], nonce)
            ), sender_id
        except CryptoError:
            return None, "unsealed"

    def _open_sealed_reply(self, data: bytes) -> tuple[bytes, str] | tuple[None, str]:
        """A sealed answer to us: its sender is unproven (""), as a network-key frame's."""
        if self._secret is None or len(data) < SEALED_REPLY_OVERHEAD_BYTES:
            return None, "unsealed"
        try:
            return bytes(nacl.public.SealedBox(self._secret).decrypt(bytes(data[VERSION_BYTES:]))), ""
        except CryptoError:
            return None, "unsealed"

    @staticmethod
    def _sealed_box(public_key: bytes) -> nacl.public.SealedBox[nacl.public.PublicKey] | None:
        try:
            return nacl.public.SealedBox(nacl.signing.VerifyKey(public_key).to_curve25519_public_key())
        except (CryptoError, ValueError, TypeError):
            return None

    def _box(self, public_key: bytes) -> nacl.public.Box | None:
        boxes = self._boxes
        if public_key in boxes:
            boxes.move_to_end(public_key)
            return boxes[public_key]
        assert self._secret is not None
        self.keys_derived += 1
        box: nacl.public.Box | None
        try:
            box = nacl.public.Box(self._secret, nacl.signing.VerifyKey(public_key).to_curve25519_public_key())
        except (CryptoError, ValueError, TypeError):
            box = None  # not a valid Ed25519 point: nothing can be sealed to it or opened from it
        boxes[public_key] = box
        if len(boxes) > BOXES_MAX:
            boxes.popitem(last=False)
        return box

    def __repr__(self) -> str:
        return f"PeerEnvelope(pairwise={self.pairwise}, {self.keyring!r}, peers={len(self._boxes)})"
