"""The voter configuration of a region, its era, and the rule that chooses voters (pure).

A region's only replicated state is its voter configuration, treated as a
one-entry Raft log: `VoterConfig(epoch, voters, made_in_term)`. Terms are
counted inside an era: a term is `(era, n)`. An era is born when a region is
founded (`Era(0, founder_id)`) or reset by an operator (`Era(generation,
lowest voter id)`), and eras are totally ordered (`era_better`), so two
foundings that never heard of each other still never share a term
(docs/design.md, "Regional leaders").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Era:
    """Who began the current line of terms: a founding (generation 0) or an operator reset."""

    generation: int  # the operator's reset-voters generation (0 for a founding)
    founder: str  # the founder's id (for a reset: the lowest voter id)


def era_better(a: Era, b: Era | None) -> bool:
    """True if era a outranks b: the higher generation, then the LOWER founder id."""
    if b is None:
        return True
    if a.generation != b.generation:
        return a.generation > b.generation
    return a.founder < b.founder


@dataclass(frozen=True, slots=True)
class VoterConfig:
    """The voters of a region: epoch counts changes, made_in_term says which term made it."""

    epoch: int
    voters: tuple[str, ...]  # sorted, distinct
    made_in_term: int

    def __post_init__(self) -> None:
        if list(self.voters) != sorted(set(self.voters)) or not self.voters:
            raise ValueError("voters must be a non-empty, sorted tuple of distinct ids")
        if self.epoch < 1 or self.made_in_term < 0:
            raise ValueError("epoch must be 1 or more and made_in_term 0 or more")

    @property
    def rank(self) -> tuple[int, int]:
        """Raft's up-to-date order with the config as the log: (made_in_term, epoch)."""
        return (self.made_in_term, self.epoch)

    @property
    def quorum(self) -> int:
        """Votes (or acknowledgements) that make a majority of the voters."""
        return majority(len(self.voters))

    def has(self, node_id: str) -> bool:
        return node_id in self.voters


def majority(voters: int) -> int:
    """The smallest number of voters that is more than half of them."""
    return voters // 2 + 1


def founding_voters(live: Iterable[str], voters_max: int) -> tuple[str, ...]:
    """Founding or reset voters: up to voters_max of the given live ids, lowest ids first."""
    return tuple(sorted(set(live))[:voters_max])


def next_change(
    voters: tuple[str, ...], gone: Iterable[str], stable: Iterable[str], voters_max: int
) -> tuple[str, ...] | None:
    """The next voter set after ONE single-server change, or None if none is wanted.

    Voters confirmed gone are removed first (lowest id first), one at a time; then
    stable members that are not voters are added, lowest ids first, up to
    voters_max. A live voter is never swapped for another member: a set that works
    is left alone, so voters change only when members come and go.
    """
    gone_set = set(gone)
    for v in voters:
        if v in gone_set:
            return tuple(x for x in voters if x != v)
    if len(voters) < voters_max:
        for candidate in sorted(set(stable) - set(voters)):
            return tuple(sorted((*voters, candidate)))
    return None
