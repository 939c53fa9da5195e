"""The `voters-reset` record: an operator re-seeds a region's election voters (sans-IO).

After a region lost a majority of its voters for good, no leader can be elected
there again: `murmur region reset-voters REGION` signs one fleet-wide record,
kind `voters-reset`, keyed by the region, that every node of that region hands
to its election core (`ElectionCore.reset`, docs/design.md "Regional leaders").
The CLI reads the region's live members from a node before it signs, so every
node resets to the same list.

Payload (VOTERS_RESET_FORMAT, then one msgpack array):
    [region, generation, members]
- region: the region reset (the record's key too);
- generation: above every reset of that region before (the era's generation);
- members: the region's live members, sorted and distinct, the lowest
  MEMBERS_MAX ids at most (the core takes the lowest `voters_max` of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from gossip.wire import ID_MAX_CHARS, DecodeError, unpack_versioned

VOTERS_RESET_FORMAT = 1
GENERATION_MAX = 2**62
MEMBERS_MAX = 64  # far above the 5 voters a region has: the core picks the lowest ids
REGION_MAX_CHARS = 64  # as gossip/kinds.py's
VOTERS_RESET_PAYLOAD_MAX_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class VotersReset:
    """What a `voters-reset` record says."""

    region: str
    generation: int
    members: tuple[str, ...]


def encode_reset(reset: VotersReset) -> bytes:
    """The payload of a `voters-reset` record; ValueError if a field is out of bounds."""
    problem = _problem(reset)
    if problem is not None:
        raise ValueError(f"voters-reset: {problem}")
    packed: bytes = msgpack.packb([reset.region, reset.generation, list(reset.members)], use_bin_type=True)
    return bytes([VOTERS_RESET_FORMAT]) + packed


def decode_reset(payload: bytes) -> VotersReset:
    """A `voters-reset` payload; raises DecodeError (never anything else)."""
    if len(payload) > VOTERS_RESET_PAYLOAD_MAX_BYTES:
        raise DecodeError("oversized")
    fields = unpack_versioned(
        payload, VOTERS_RESET_FORMAT, VOTERS_RESET_PAYLOAD_MAX_BYTES, max_array_len=MEMBERS_MAX
    )
    if type(fields) is not list or len(fields) != 3:
        raise DecodeError("bad_arity")
    region, generation, members = fields
    if type(region) is not str or type(generation) is not int or type(members) is not list:
        raise DecodeError("bad_field")
    if not all(type(m) is str for m in members):
        raise DecodeError("bad_field")
    reset = VotersReset(region, generation, tuple(members))
    if _problem(reset) is not None:
        raise DecodeError("bad_field")
    return reset


def reset_problem(payload: bytes) -> str | None:
    """The `voters-reset` kind's payload check (gossip/kinds.py): why it is not one, or None."""
    try:
        decode_reset(payload)
    except DecodeError as exc:
        return f"not a voters-reset ({exc.reason})"
    return None


def _problem(r: VotersReset) -> str | None:
    if not 0 < len(r.region) <= REGION_MAX_CHARS:
        return f"region must be 1..{REGION_MAX_CHARS} characters"
    if not 1 <= r.generation <= GENERATION_MAX:
        return f"generation must be 1..{GENERATION_MAX}, got {r.generation}"
    if not 0 < len(r.members) <= MEMBERS_MAX:
        return f"members must name 1..{MEMBERS_MAX} nodes"
    if list(r.members) != sorted(set(r.members)):
        return "members must be sorted and distinct"
    if not all(0 < len(m) <= ID_MAX_CHARS for m in r.members):
        return f"a member id must be 1..{ID_MAX_CHARS} characters"
    return None
