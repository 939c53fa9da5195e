"""The envelope: authenticated encryption of every datagram and stream frame.

A sealed frame is laid out as

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

from collections.abc import Sequence

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from gossip.config import ENVELOPE_OVERHEAD_BYTES

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
