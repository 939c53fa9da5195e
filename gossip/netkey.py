"""The `netkey` record: the operator's announcement of a new network key (sans-IO).

A rotation of the network key (docs/security.md, "Rotating the network key") is
announced by one fleet-wide record, kind `netkey`, slot `current`, signed by a
root operator key. Its payload names the new key by its id, never the key: the
key itself travels only sealed to one receiver's public key (node/netkeys.py).
Every node checks a key a member offers against the id in the record it holds,
so no member can plant a key of its own.

Payload (a format byte, then one msgpack array). A one-step rotation
(`murmur keys rotate`, `murmur revoke`) is format 1:

    [epoch, key_id, grace_s, reason, revoked]

- epoch: strictly increasing over rotations; a node ignores a record whose epoch
  is not above the one it holds;
- key_id: network_key_id(key), 32 hex characters;
- grace_s: seconds a node keeps its older keys after it obtained the new one;
- reason: free text ("manual", "revocation of <id>"), for people;
- revoked: the node ids this rotation shuts out (a revocation's), which no node
  ever hands the key to, even before their revocation record reaches it.

A staged change (`murmur keys install|use|remove`, as Consul's `keyring
-install/-use/-remove`) is format 2, and says the whole keyring the fleet
should hold, not the step that led to it, so a node that missed a step (offline
through an install and a use) lands on the same keyring as every other:

    [epoch, key_id, 0, reason, revoked, stage, [[key id, epoch added], ...]]

- stage: "install", "use" or "remove" (what changed, for people and logs);
- key_id: the primary (the key that seals), one of the listed keys;
- the list: every key members hold (at most STAGED_KEYS_MAX), each with the
  epoch of the record that added it; a key not listed is dropped at once;
- grace_s is 0: a staged key goes only when a `remove` leaves it out.

The epoch orders both formats together: a staged record supersedes a rotation
of a lower epoch and the other way round.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import msgpack

from gossip.wire import DecodeError, unpack_versioned

NETKEY_FORMAT = 1  # a one-step rotation
NETKEY_STAGED_FORMAT = 2  # a staged change: the whole keyring
ROTATE = "rotate"
STAGES = ("install", "use", "remove")
# The keyring holds 8 keys (gossip/envelope.py); one slot stays free for the key a node still
# seals with while it fetches the new primary.
STAGED_KEYS_MAX = 7
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
    stage: str = ROTATE  # ROTATE, or one of STAGES
    keys: tuple[tuple[str, int], ...] = ()  # a staged change's keyring: (key id, epoch added)

    @property
    def staged(self) -> bool:
        """True for a staged change (install, use, remove): the record lists the whole keyring."""
        return self.stage != ROTATE

    @property
    def wanted_ids(self) -> tuple[str, ...]:
        """The ids of the keys every member should hold: the listed ones, or a rotation's new key."""
        return tuple(k for k, _epoch in self.keys) if self.staged else (self.key_id,)

    def key_epoch(self, key_id: str) -> int | None:
        """The epoch of the record that added `key_id`, if this notice says (None: it does not)."""
        if not self.staged:
            return self.epoch if key_id == self.key_id else None
        return next((epoch for k, epoch in self.keys if k == key_id), None)


def network_key_id(key: bytes) -> str:
    """The public name of a network key: sha256 of it (domain-separated), 32 hex characters."""
    return hashlib.sha256(KEY_ID_DOMAIN + bytes(key)).hexdigest()[:KEY_ID_HEX_CHARS]


def encode_notice(notice: NetKeyNotice) -> bytes:
    """The payload of a `netkey` record; ValueError if a field is out of bounds."""
    problem = _problem(notice)
    if problem is not None:
        raise ValueError(f"netkey notice: {problem}")
    fields: list[object] = [notice.epoch, notice.key_id, notice.grace_s, notice.reason, list(notice.revoked)]
    if notice.staged:
        fields += [notice.stage, [[k, epoch] for k, epoch in notice.keys]]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes([NETKEY_STAGED_FORMAT if notice.staged else NETKEY_FORMAT]) + packed


def decode_notice(payload: bytes) -> NetKeyNotice:
    """A `netkey` payload; raises DecodeError (never anything else)."""
    if len(payload) > NETKEY_PAYLOAD_MAX_BYTES:
        raise DecodeError("oversized")
    staged = payload[:1] == bytes([NETKEY_STAGED_FORMAT])
    fields = unpack_versioned(
        payload,
        NETKEY_STAGED_FORMAT if staged else NETKEY_FORMAT,
        NETKEY_PAYLOAD_MAX_BYTES,
        max_array_len=REVOKED_MAX + 8,
    )
    if type(fields) is not list or len(fields) != (7 if staged else 5):
        raise DecodeError("bad_arity")
    epoch, key_id, grace_s, reason, revoked = fields[:5]
    if type(revoked) is not list or not all(type(r) is str for r in revoked):
        raise DecodeError("bad_field")
    stage, keys = ROTATE, tuple[tuple[str, int], ...]()
    if staged:
        stage, listed = fields[5], fields[6]
        if type(stage) is not str or stage not in STAGES or type(listed) is not list:
            raise DecodeError("bad_field")
        pairs = (type(k) is list and len(k) == 2 and type(k[0]) is str and type(k[1]) is int for k in listed)
        if not all(pairs):
            raise DecodeError("bad_field")
        keys = tuple((k[0], k[1]) for k in listed)
    if (
        type(epoch) is not int
        or type(grace_s) is not int
        or type(key_id) is not str
        or type(reason) is not str
    ):
        raise DecodeError("bad_field")
    notice = NetKeyNotice(epoch, key_id, grace_s, reason, tuple(revoked), stage, keys)
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
    if not n.staged:
        return None if not n.keys else "a rotation lists no keys (only a staged change does)"
    return _staged_problem(n)


def _staged_problem(n: NetKeyNotice) -> str | None:
    if n.stage not in STAGES:
        return f"stage must be one of {', '.join((ROTATE, *STAGES))}, got {n.stage[:20]!r}"
    if n.grace_s != 0:
        return "a staged change has no grace period (grace_s 0): a key goes when a remove leaves it out"
    ids = [k for k, _epoch in n.keys]
    if not 1 <= len(ids) <= STAGED_KEYS_MAX:
        return f"a staged change lists 1 to {STAGED_KEYS_MAX} keys, got {len(ids)}"
    if not all(_KEY_ID.fullmatch(k) for k in ids) or len(set(ids)) != len(ids):
        return f"the listed keys must be distinct ids of {KEY_ID_HEX_CHARS} hex characters"
    if not all(0 <= epoch <= n.epoch for _k, epoch in n.keys):
        return f"a listed key's epoch must be 0..{n.epoch} (the record's own)"
    if n.key_id not in ids:
        return "the primary (key_id) must be one of the listed keys"
    return None
