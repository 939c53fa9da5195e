"""The cold-start scenario's watch: how long until every region is one pool, and islands left.

Every node starts cold (no restored view) within a small window, seeded only at
nodes of other regions (sim/scenarios.py), as a site does after a power cut
behind a switch that drops multicast. Each node is first alone in its region
pool; the regions must still end as one pool each (issue 8, finding 9):
- `region_merged_s`: per region, when every live member first listed every
  other live member alive (the last change towards it, found by a poll);
  a region that never got there counts as infinite (null percentiles) and in
  `unmerged_regions`;
- `islands_at_end`: per region, the groups of members that list each other
  alive (both ways), beyond one, summed over the regions; 0 when every region
  is one pool. `split_regions_at_end` counts the regions not one pool.
Invariants: `region_one_pool` (at the end, every live member of a region lists
every other alive; suspect tolerated under loss) and `region_pool_own_region`
(all along, no node ever lists a node of another region in its region pool).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gossip.events import Event, MemberChanged, MemberState
from gossip.node import MemberView
from sim.fleet import Fleet
from sim.invariants import Invariants
from sim.observer import Observer
from sim.report import stats
from sim.slot import NodeSlot
from sim.views import first_unseen, members

EXAMPLES_MAX = 10


class ColdStartWatch(Observer):
    """Follows each region from many one-member pools to one pool."""

    def __init__(self, fleet: Fleet, *, tolerate_suspect: bool, seeds_per_node: int, window_s: float) -> None:
        self.fleet = fleet
        self.seeds_per_node = seeds_per_node
        self.window_s = window_s
        self._ok: tuple[MemberState, ...] = (
            (MemberState.ALIVE, MemberState.SUSPECT) if tolerate_suspect else (MemberState.ALIVE,)
        )
        self._region_of: list[int] = []
        # Per region: the last time a member turned alive in a region view, and when it was one pool.
        self._last_alive_s = [0.0] * fleet.region_count
        self.merged_s: list[float | None] = [None] * fleet.region_count
        self.foreign_examples: list[str] = []
        self.foreign = 0
        self.islands_at_end: int | None = None
        self.split_regions_at_end: int | None = None

    def on_spawn(self, idx: int, node_id: str, region: int, views: Sequence[MemberView]) -> None:
        self._region_of.append(region)

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        if type(event) is not MemberChanged or event.pool != "region" or event.state != MemberState.ALIVE:
            return
        self._last_alive_s[slot.region] = now
        subject = self.fleet.idx_of.get(event.node_id)
        if subject is not None and self._region_of[subject] != slot.region:
            self.foreign += 1
            if len(self.foreign_examples) < EXAMPLES_MAX:
                self.foreign_examples.append(
                    f"{slot.node_id} (region {self.fleet.region_names[slot.region]}) lists "
                    f"{event.node_id} (region {self.fleet.region_names[self._region_of[subject]]}) "
                    f"alive in its region pool at t={now:.3f}s"
                )

    def watch(self, start_s: float, end_s: float, poll_s: float) -> None:
        """Poll the views from start_s until every region is one pool (or end_s)."""
        fleet = self.fleet

        def poll(now: float) -> None:
            views = fleet.views.region
            for region in range(fleet.region_count):
                if self.merged_s[region] is not None:
                    continue
                live = fleet.live(region)
                if first_unseen(live, fleet.slots, views.__getitem__, self._ok) is None:
                    self.merged_s[region] = self._last_alive_s[region]
            if any(m is None for m in self.merged_s) and now + poll_s <= end_s:
                fleet.engine.call_at(now + poll_s, poll)

        fleet.engine.call_at(start_s, poll)

    def _islands(self, region: int) -> int:
        """Groups of a region's live members that list each other (both ways), from the cores."""
        fleet = self.fleet
        live = fleet.live(region)
        ids = [fleet.slots[i].node_id for i in live]
        listed = [members(fleet.core(i), "region") for i in live]
        parent = list(range(len(live)))

        def root(k: int) -> int:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        for a in range(len(live)):
            for b in range(a + 1, len(live)):
                if listed[a].get(ids[b]) in self._ok and listed[b].get(ids[a]) in self._ok:
                    parent[root(a)] = root(b)
        return sum(1 for k in range(len(live)) if root(k) == k)

    def check_end(self, invariants: Invariants, now: float) -> None:
        """region_one_pool and region_pool_own_region, and the figures at the end."""
        fleet = self.fleet
        invariants.check("region_pool_own_region")
        for example in self.foreign_examples:
            invariants.violation(now, "region_pool_own_region", example)
        invariants.check("region_one_pool")
        self.islands_at_end = 0
        self.split_regions_at_end = 0
        for region in range(fleet.region_count):
            live = fleet.live(region)
            unseen = first_unseen(live, fleet.slots, lambda i: members(fleet.core(i), "region"), self._ok)
            if unseen is None:
                continue
            islands = self._islands(region)
            self.split_regions_at_end += 1
            self.islands_at_end += islands - 1
            obs, subj, state = unseen
            invariants.violation(
                now,
                "region_one_pool",
                f"region {fleet.region_names[region]} is {islands} pools at the end: "
                f"{fleet.slots[obs].node_id} lists {fleet.slots[subj].node_id} as {state}",
            )

    def report(self) -> dict[str, Any]:
        merged = [m if m is not None else math.inf for m in self.merged_s]
        return {
            "seeds_per_node": self.seeds_per_node,
            "window_s": self.window_s,
            "region_merged_s": stats(merged),
            "unmerged_regions": sum(1 for m in self.merged_s if m is None),
            "islands_at_end": self.islands_at_end,
            "split_regions_at_end": self.split_regions_at_end,
            "foreign_region_members": self.foreign,
        }
