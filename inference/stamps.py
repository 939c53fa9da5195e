"""The order of placements: a stamp (era, term, epoch) and which of two stamps is newer (pure).

A region's leader stamps each placement it publishes with the era and term its
certificate proves (consensus/certificate.py) and an epoch that counts its
placements within that term. Every node applies the placement with the newest
stamp it has ever seen: a better era first (consensus.config.era_better: a
higher generation, then the lower founder id), then a higher term, then a higher
epoch. So a deposed leader's placements, whose term is older, never displace its
successor's, whatever order they arrive in.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.config import Era, era_better


@dataclass(frozen=True, slots=True)
class Stamp:
    """Placement `epoch` of `term` in `era`."""

    era: Era
    term: int
    epoch: int

    def same_term(self, other: Stamp | None) -> bool:
        """True if `other` was stamped in this stamp's era and term."""
        return other is not None and (self.era, self.term) == (other.era, other.term)


def newer(a: Stamp, b: Stamp | None) -> bool:
    """True if a is strictly newer than b (anything is newer than None)."""
    if b is None:
        return True
    if a.era != b.era:
        return era_better(a.era, b.era)
    return (a.term, a.epoch) > (b.term, b.epoch)


def stamp_doc(stamp: Stamp) -> list[int | str]:
    """A stamp as JSON: [generation, founder, term, epoch]."""
    return [stamp.era.generation, stamp.era.founder, stamp.term, stamp.epoch]
