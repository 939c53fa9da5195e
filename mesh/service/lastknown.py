"""The last member list each other region answered with, kept so an offline site still reads.

An unreachable region is the normal case at the edge (a site behind a broken
uplink). When a forwarded `GET /v1/nodes?region=X` finds none of X's API
addresses answering, the node serves the last list it got from X, each row
marked `last_known` with the unix time it was heard. The table is in memory
(a restart forgets it), bounded in regions and rows per region.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REGIONS_MAX = 256
ROWS_PER_REGION_MAX = 1024


@dataclass(frozen=True, slots=True)
class RegionAnswer:
    """A region's member list as last heard."""

    rows: tuple[dict[str, Any], ...]
    heard_unix: float

    def marked(self) -> list[dict[str, Any]]:
        """The rows as served while the region does not answer: marked, with when they were heard."""
        return [{**row, "last_known": True, "last_heard_unix": self.heard_unix} for row in self.rows]


class LastKnown:
    """Region -> its last answer; the least recently heard region is forgotten first."""

    def __init__(self, regions_max: int = REGIONS_MAX, rows_max: int = ROWS_PER_REGION_MAX) -> None:
        self._regions_max = regions_max
        self._rows_max = rows_max
        self._answers: collections.OrderedDict[str, RegionAnswer] = collections.OrderedDict()

    def remember(self, region: str, rows: Sequence[Any], heard_unix: float) -> None:
        """Keep `rows` (the dict ones, at most rows_max) as `region`'s answer heard at `heard_unix`."""
        kept = tuple(row for row in rows[: self._rows_max] if isinstance(row, dict))
        self._answers[region] = RegionAnswer(kept, heard_unix)
        self._answers.move_to_end(region)
        while len(self._answers) > self._regions_max:
            self._answers.popitem(last=False)

    def get(self, region: str) -> RegionAnswer | None:
        return self._answers.get(region)

    def __len__(self) -> int:
        return len(self._answers)
