"""Region summaries: what the fleet knows of each region (sans-IO).

The primary gateway of a region publishes a small, versioned summary of it
(members alive, gateways, API addresses); summaries travel in both pools and in
push-pull, and a redirect answers a node that asked the wrong place with them.
This module is the table of summaries and its rules; gossip/node.py moves them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gossip import codec

# Regions whose summaries (and gateway hints) a node keeps.
SUMMARIES_MAX = 4096
# A primary gateway republishes its region's summary at most this often.
SUMMARY_MIN_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class RegionSummary:
    """What the fleet knows of one region."""

    region: str
    alive: int
    gateways: tuple[tuple[str, str], ...]
    api_addrs: tuple[str, ...]
    version: int


def newer(a: codec.Summary, b: codec.Summary | None) -> bool:
    """True if summary a supersedes b: higher version, ties broken by author id."""
    return b is None or (a.version, a.author_id) > (b.version, b.author_id)


def _content(s: codec.Summary) -> tuple[object, ...]:
    return (s.alive, s.gateways, s.api_addrs)


class SummaryTable:
    """The newest summary of each region, and gateway hints learned from redirects."""

    # One per node: slots, not a dict per instance (a simulation holds thousands of nodes).
    __slots__ = ("_by_region", "_count", "_hints", "own_region")

    def __init__(self, own_region: str, count: Callable[[str], None]) -> None:
        self.own_region = own_region
        self._by_region: dict[str, codec.Summary] = {}
        # region -> (the version of the summary the redirect was fresh at, its gateways)
        self._hints: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = {}
        self._count = count

    def get(self, region: str) -> codec.Summary | None:
        return self._by_region.get(region)

    def store(self, s: codec.Summary) -> bool:
        """Keep s if it is news; True if stored (the caller relays it)."""
        if not s.region:
            return False
        if not newer(s, self._by_region.get(s.region)):
            return False
        if s.region not in self._by_region and len(self._by_region) >= SUMMARIES_MAX:
            self._count("drop_summaries_full")
            return False
        self._by_region[s.region] = s
        return True

    def hint(self, fresh: codec.Summary) -> bool:
        """Remember the gateways a redirect named for its own region (`fresh`, computed when it
        answered); True if they are new directions."""
        held = self._hints.get(fresh.region)
        changed = held is None or held[1] != fresh.gateways
        if held is not None or len(self._hints) < SUMMARIES_MAX:
            self._hints[fresh.region] = (fresh.version, fresh.gateways)
        return changed

    def known_regions(self) -> list[str]:
        """Every region we have a summary or a hint for, sorted."""
        return sorted({*self._by_region, *self._hints})

    def gateways_of(self, region: str) -> tuple[tuple[str, str], ...]:
        """Where to reach region's gateways: a redirect's hint, unless a newer summary came since.

        A redirect names its region's gateways as they were when it answered,
        fresher than the summary of the same version; a summary published after
        it is fresher still. Without that, one redirect in a cold start (naming
        the lone node that was its region then) hid every later summary for good.
        """
        hint = self._hints.get(region)
        s = self._by_region.get(region)
        if hint is not None and (s is None or hint[0] >= s.version):
            return hint[1]
        return s.gateways if s is not None else ()

    def others(self) -> tuple[codec.Summary, ...]:
        """Every region's summary but our own, sorted by region."""
        return tuple(s for r, s in sorted(self._by_region.items()) if r != self.own_region)

    def with_own(self, own: Callable[[], codec.Summary]) -> tuple[codec.Summary, ...]:
        """Every summary, ours from own() when none was published yet, sorted by region."""
        out = dict(self._by_region)
        if self.own_region not in out:
            out[self.own_region] = own()
        return tuple(out[r] for r in sorted(out))

    def next_own(self, fresh: codec.Summary) -> codec.Summary | None:
        """Our region's next summary if what we see changed since the last one, else None."""
        prev = self._by_region.get(self.own_region)
        if prev is not None and _content(prev) == _content(fresh):
            return None
        version = (prev.version if prev else 0) + 1
        s = codec.Summary(
            fresh.region, version, fresh.author_id, fresh.alive, fresh.gateways, fresh.api_addrs
        )
        self._by_region[self.own_region] = s
        return s

    def views(self, own: codec.Summary) -> dict[str, RegionSummary]:
        """Every region's summary for readers, with `own` (fresh) for our region."""
        out = {
            r: RegionSummary(s.region, s.alive, s.gateways, s.api_addrs, s.version)
            for r, s in sorted(self._by_region.items())
        }
        out[self.own_region] = RegionSummary(own.region, own.alive, own.gateways, own.api_addrs, own.version)
        return out
