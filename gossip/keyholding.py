"""The `keyring` record: which network keys one node holds, and which one seals (sans-IO).

`murmur keys list` counts, for every key, how many members hold it and at how
many it is the primary. A node's keys are known only to that node, so each node
says so itself: one record of kind `keyring`, keyed by its id, signed by its node
key, region-scoped (like its inventory), republished when its keyring changes
(node/netkeys.py). It names keys by their ids only, never a key.

Payload (KEYRING_FORMAT, then one msgpack array):

    [epoch, primary key id, [key id, ...]]

- epoch: the `netkey` record the node follows (0: none yet, the join token's keys);
- the primary is one of the listed ids; at most KEYS_MAX ids (the keyring's limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgpack

from gossip.netkey import EPOCH_MAX, KEY_ID_HEX_CHARS
from gossip.wire import DecodeError, unpack_versioned

# How long after its keyring changes a node republishes this record, a random time in
# [min, max] s by default (node/netkeys.py; `murmur agent --keyring-report-delay`). Here, not in
# the core that uses it, so that `murmur`'s parser can show it without importing the core.
REPORT_DELAY_S = (10.0, 30.0)

KEYRING_FORMAT = 1
HELD_MAX = 8  # as gossip.envelope.KEYS_MAX (envelope.py is not imported by the store's kinds)
KEYRING_PAYLOAD_MAX_BYTES = 512  # 8 ids of 32 characters and the rest: about 320 bytes
_KEY_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class KeyHolding:
    """What a node's `keyring` record says: the epoch it follows, its primary, every key it holds."""

    epoch: int
    primary: str
    held: tuple[str, ...]


def encode_holding(holding: KeyHolding) -> bytes:
    """The payload of a `keyring` record; ValueError if a field is out of bounds."""
    problem = _problem(holding)
    if problem is not None:
        raise ValueError(f"keyring record: {problem}")
    packed: bytes = msgpack.packb([holding.epoch, holding.primary, list(holding.held)], use_bin_type=True)
    return bytes([KEYRING_FORMAT]) + packed


def decode_holding(payload: bytes) -> KeyHolding:
    """A `keyring` payload; raises DecodeError (never anything else)."""
    if len(payload) > KEYRING_PAYLOAD_MAX_BYTES:
        raise DecodeError("oversized")
    fields = unpack_versioned(payload, KEYRING_FORMAT, KEYRING_PAYLOAD_MAX_BYTES, max_array_len=HELD_MAX)
    if type(fields) is not list or len(fields) != 3:
        raise DecodeError("bad_arity")
    epoch, primary, held = fields
    if type(epoch) is not int or type(primary) is not str or type(held) is not list:
        raise DecodeError("bad_field")
    if not all(type(k) is str for k in held):
        raise DecodeError("bad_field")
    holding = KeyHolding(epoch, primary, tuple(held))
    if _problem(holding) is not None:
        raise DecodeError("bad_field")
    return holding


def holding_problem(payload: bytes) -> str | None:
    """The `keyring` kind's payload check (gossip/kinds.py): why it is not one, or None."""
    try:
        decode_holding(payload)
    except DecodeError as exc:
        return f"not a keyring record ({exc.reason})"
    return None


def _problem(h: KeyHolding) -> str | None:
    if not 0 <= h.epoch <= EPOCH_MAX:
        return f"epoch must be 0..{EPOCH_MAX}, got {h.epoch}"
    if not 1 <= len(h.held) <= HELD_MAX or len(set(h.held)) != len(h.held):
        return f"held must be 1 to {HELD_MAX} distinct key ids"
    if not all(_KEY_ID.fullmatch(k) for k in h.held):
        return f"key ids are {KEY_ID_HEX_CHARS} hex characters"
    if h.primary not in h.held:
        return "the primary must be one of the held keys"
    return None
