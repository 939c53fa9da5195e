"""The election's hard state and where the driver keeps it (the persist-before-send rule).

`HardState` is everything a node must remember across a crash to keep "one
vote per term" and "an old era never wins again" true: the era, the term in
it, whom it voted for in that term, its voter configuration and whether that
configuration is established (proven by a leader's certificate or given by an
operator) or only a founding proposal. The core calls `HardStateStore.save`
and waits for it to return BEFORE it queues any message that depends on the
new state (docs/core-api.md, "The election core").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from consensus.certificate import VOTERS_MAX, decode_config, encode_config
from consensus.config import Era, VoterConfig
from gossip.wire import ID_MAX_CHARS, DecodeError, ident, text, u64, unpack_versioned

HARD_STATE_VERSION = 0xE5
HARD_STATE_MAX_BYTES = 2048


@dataclass(frozen=True, slots=True)
class HardState:
    """What survives a crash: (era, term, voted_for, config) and whether config is established."""

    era: Era | None = None  # None: never founded, never reset
    term: int = 0
    voted_for: str = ""  # "" = no vote in this term
    config: VoterConfig | None = None
    established: bool = False  # False: config is a founding proposal, not proven yet


class HardStateStore(Protocol):
    """Durable storage of one node's HardState (SQLite in mesh/, a per-slot dict in sim/)."""

    def load(self) -> HardState | None:
        """The last state saved, or None if none was ever saved."""
        ...

    def save(self, state: HardState) -> None:
        """Store state durably; return only once it would survive a crash (fsync)."""
        ...


class MemoryStore:
    """A HardStateStore in memory, for tests: it outlives the core that uses it (a crash)."""

    def __init__(self, state: HardState | None = None) -> None:
        self.state = state
        self.saves = 0

    def load(self) -> HardState | None:
        return self.state

    def save(self, state: HardState) -> None:
        self.state = state
        self.saves += 1


def encode_hard_state(state: HardState) -> bytes:
    """The bytes a driver stores (one version byte, then a msgpack array)."""
    era = [state.era.generation, state.era.founder] if state.era is not None else None
    config = encode_config(state.config) if state.config is not None else None
    packed: bytes = msgpack.packb([era, state.term, state.voted_for, config, state.established])
    return bytes([HARD_STATE_VERSION]) + packed


def decode_hard_state(data: bytes) -> HardState:
    """A stored hard state; raises only DecodeError (a damaged store: the driver stops)."""
    m = unpack_versioned(data, HARD_STATE_VERSION, HARD_STATE_MAX_BYTES, max_array_len=VOTERS_MAX)
    if type(m) is not list or len(m) != 5 or type(m[4]) is not bool:
        raise DecodeError("malformed")
    raw_era: Any = m[0]
    era: Era | None = None
    if raw_era is not None:
        if type(raw_era) is not list or len(raw_era) != 2:
            raise DecodeError("malformed")
        era = Era(u64(raw_era[0]), ident(raw_era[1]))
    config = decode_config(m[3]) if m[3] is not None else None
    return HardState(era, u64(m[1]), text(m[2], ID_MAX_CHARS), config, m[4])
