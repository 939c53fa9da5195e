"""The leaders watch: who leads each region, how long an election takes, and one leader per term.

Every simulated node hosts an election core (sim/fleet.py). This observer
reads their `LeaderChanged` events and, every POLL_S, asks the cores that
claim to lead whether they hold a lease (`ElectionCore.is_leader(now)`).
What it reports (`leaders` in the JSON of every scenario):

- max_per_region_term: the most distinct nodes that ever claimed to lead one
  (region, era, term); it must be 1 (invariant `one_leader_per_region_term`,
  checked as the events arrive, each violation printed with the seed);
- election_s {p50, p99, max}: for each leader that crashed while it led, the
  seconds from the crash until another node of its region held a lease (an
  election that never ended counts as infinite: its percentiles are null);
- regions_without_leader_s_max: the longest time any region had no node
  holding a lease, measured from `start_s` (the fault time: a warm-started
  fleet founds its regions in its first seconds), to the end of the run.

The poll adds at most POLL_S to each figure; the simulated clock makes it exact
otherwise.
"""

from __future__ import annotations

from typing import Any

from consensus.events import LeaderChanged
from gossip.events import Event
from sim.fleet import Fleet
from sim.invariants import Invariants
from sim.observer import Observer
from sim.report import TIME_DIGITS, stats
from sim.slot import NodeSlot

POLL_S = 0.05
CHECK = "one_leader_per_region_term"


class LeaderWatch(Observer):
    """Follows the region leaders of a simulated fleet (see the module docstring)."""

    def __init__(self, fleet: Fleet, invariants: Invariants, *, start_s: float) -> None:
        self.fleet = fleet
        self.invariants = invariants
        self.start_s = start_s
        invariants.check(CHECK)
        # (region, era generation, era founder, term) -> the nodes that claimed to lead it.
        self._claims: dict[tuple[str, int, str, int], list[str]] = {}
        # Per region index: the nodes whose latest LeaderChanged names themselves.
        self._claiming: list[dict[int, None]] = [{} for _ in range(fleet.region_count)]
        self._crashed_at: dict[int, float] = {}  # region -> when its leader crashed (not yet replaced)
        self._election_s: list[float] = []
        self._crashed_leaders = 0
        self._gap_since: dict[int, float] = {}  # region -> since when no node held a lease
        self._gap_max_s = 0.0
        fleet.engine.call_at(start_s, self._poll)

    # -- events ---------------------------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        if type(event) is not LeaderChanged:
            return
        claiming = self._claiming[slot.region]
        if event.leader_id != slot.node_id:
            claiming.pop(slot.idx, None)
            return
        claiming[slot.idx] = None
        era = event.era
        key = (event.region, era.generation if era else -1, era.founder if era else "", event.term)
        leaders = self._claims.setdefault(key, [])
        if slot.node_id not in leaders:
            leaders.append(slot.node_id)
            if len(leaders) > 1:
                self.invariants.violation(
                    now,
                    CHECK,
                    f"region {event.region} era {era} term {event.term} has leaders {', '.join(leaders)}",
                )

    def on_crash(self, now: float, idx: int) -> None:
        region = self.fleet.slots[idx].region
        if idx in self._claiming[region]:
            self._crashed_leaders += 1
            self._crashed_at.setdefault(region, now)

    def on_down(self, now: float, idx: int) -> None:
        self._claiming[self.fleet.slots[idx].region].pop(idx, None)

    # -- the lease poll -------------------------------------------------------------------

    def _holds_lease(self, region: int, now: float) -> bool:
        slots, cores = self.fleet.slots, self.fleet.elections
        for idx in self._claiming[region]:
            slot = slots[idx]
            if slot.up and cores[slot.node_id].is_leader(now):
                return True
        return False

    def _poll(self, now: float) -> None:
        for region in range(self.fleet.region_count):
            if self._holds_lease(region, now):
                crashed = self._crashed_at.pop(region, None)
                if crashed is not None:
                    self._election_s.append(now - crashed)
                since = self._gap_since.pop(region, None)
                if since is not None:
                    self._gap_max_s = max(self._gap_max_s, now - since)
            elif region not in self._gap_since and self.fleet.live(region):
                self._gap_since[region] = now
        self.fleet.engine.call_at(now + POLL_S, self._poll)

    # -- the end --------------------------------------------------------------------------

    def report(self, end_s: float) -> dict[str, Any]:
        """The `leaders` figures at end_s."""
        gaps = [end_s - since for since in self._gap_since.values()]
        unfinished = len(self._crashed_at)
        return {
            "max_per_region_term": max((len(v) for v in self._claims.values()), default=0),
            "election_s": stats(self._election_s + [float("inf")] * unfinished),
            "regions_without_leader_s_max": round(max([self._gap_max_s, *gaps]), TIME_DIGITS),
            "crashed_leaders": self._crashed_leaders,
            "elections_unfinished": unfinished,
        }
