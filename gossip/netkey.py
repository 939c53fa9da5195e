"""The `netkey` record: the operator's announcement of a new network key (sans-IO).

A rotation of the network key (docs/security.md, "Rotating the network key") is
announced by one fleet-wide record, kind `netkey`, slot `current`, signed by a
root operator key. Its payload names the new key by its id, never the key: the
key itself travels only sealed to one receiver's public key (node/netkeys.py).
Every node checks a key a member offers against the id in the record it holds,
so no member can plant a key of its own.

Payload (NETKEY_FORMAT, then one msgpack array):

    [epoch, key_id, grace_s, reason, revoked]

- epoch: strictly increasing over rotations; a node ignores a record whose epoch
  is not above the one it holds;
- key_id: network_key_id(key), 32 hex characters;
- grace_s: seconds a node keeps its older keys after it obtained the new one;
- reason: free text ("manual", "revocation of <id>"), for people;
- revoked: the node ids this rotation shuts out (a revocation's), which no node
  ever hands the key to, even before their revocation record reaches it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import msgpack

from gossip.wire import DecodeError, unpack_versioned

NETKEY_FORMAT = 1
NETKEY_SLOT = "current"  # the one key of kind `netkey`: the latest announcement supersedes
KEY_ID_HEX_CHARS = 32  # 128 bits: a planted key would need a second preimage of sha256
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_NODE_ID = re.compile(r"[0-9a-f]{16}")
KEY_ID_DOMAIN = b"murmur-network-key-id\x00"
NETWORK_KEY_BYTES = 32
EPOCH_MAX = 2**62
# A week: long enough for a site that is offline over a weekend; the operator picks less.
GRACE_MAX_S = 7 * 24 * 3600
REASON_MAX_CHARS = 200
REVOKED_MAX = 16
NETKEY_PAYLOAD_MAX_BYTES = 1024


@dataclass(frozen=True, slots=True)
class NetKeyNotice:
    """What a `netkey` record says: the new key's epoch and id, the grace period and why."""

    epoch: int
    key_id: str
    grace_s: int
    reason: str = ""
    revoked: tuple[str, ...] = ()


def network_key_id(key: bytes) -> str:
    """The public name of a network key: sha256 of it (domain-separated), 32 hex characters."""
    return hashlib.sha256(KEY_ID_DOMAIN + bytes(key)).hexdigest()[:KEY_ID_HEX_CHARS]


def encode_notice(notice: NetKeyNotice) -> bytes:
    """The payload of a `netkey` record; ValueError if a field is out of bounds."""
    problem = _problem(notice)
    if problem is not None:
        raise ValueError(f"netkey notice: {problem}")
    fields = [notice.epoch, notice.key_id, notice.grace_s, notice.reason, list(notice.revoked)]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes([NETKEY_FORMAT]) + packed


def decode_notice(payload: bytes) -> NetKeyNotice:
    """A `netkey` payload; raises DecodeError (never anything else)."""
    if len(payload) > NETKEY_PAYLOAD_MAX_BYTES:
        raise DecodeError("oversized")
    fields = unpack_versioned(payload, NETKEY_FORMAT, NETKEY_PAYLOAD_MAX_BYTES, max_array_len=REVOKED_MAX + 8)
    if type(fields) is not list or len(fields) != 5:
        raise DecodeError("bad_arity")
    epoch, key_id, grace_s, reason, revoked = fields
    if type(revoked) is not list or not all(type(r) is str for r in revoked):
        raise DecodeError("bad_field")
    if (
        type(epoch) is not int
        or type(grace_s) is not int
        or type(key_id) is not str
        or type(reason) is not str
    ):
        raise DecodeError("bad_field")
    notice = NetKeyNotice(epoch, key_id, grace_s, reason, tuple(revoked))
    if _problem(notice) is not None:
        raise DecodeError("bad_field")
    return notice


def notice_problem(payload: bytes) -> str | None:
    """The `netkey` kind's payload check (gossip/kinds.py): why it is not a notice, or None."""
    try:
        decode_notice(payload)
    except DecodeError as exc:
        return f"not a netkey notice ({exc.reason})"
    return None


def _problem(n: NetKeyNotice) -> str | None:
    if not 1 <= n.epoch <= EPOCH_MAX:
        return f"epoch must be 1..{EPOCH_MAX}, got {n.epoch}"
    if not _KEY_ID.fullmatch(n.key_id):
        return f"key_id must be {KEY_ID_HEX_CHARS} hex characters"
    if not 0 <= n.grace_s <= GRACE_MAX_S:
        return f"grace_s must be 0..{GRACE_MAX_S}, got {n.grace_s}"
    if len(n.reason) > REASON_MAX_CHARS:
        return f"reason is limited to {REASON_MAX_CHARS} characters"
    if len(n.revoked) > REVOKED_MAX or not all(_NODE_ID.fullmatch(r) for r in n.revoked):
        return f"revoked must be at most {REVOKED_MAX} node ids (16 hex characters)"
    return None
