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
from typing import Protocol

from consensus.config import Era, VoterConfig


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
