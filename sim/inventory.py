"""The inventory scenario's watch: how fast each node's own inventory record reaches its region.

Every node publishes signed `inventory` records of its own (scope its region,
sim/scenarios.py); this observer follows every published version until each
region peer live at its publication holds it or a newer one, and at the end
counts who lacks an author's latest version. The invariant checker reads it
(inventory_held, inventory_fresh); the report's `inventory` key is `report()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gossip.events import Event, RecordsAccepted
from gossip.kinds import INVENTORY_KIND
from gossip.records import Record
from sim.fleet import Fleet
from sim.observer import Observer
from sim.report import stats
from sim.slot import NodeSlot
from sim.views import held_version


@dataclass(slots=True)
class InventoryVersion:
    """One published inventory version and the live region peers that do not hold it (or newer) yet."""

    author_idx: int
    version: int
    at_s: float
    pending: dict[int, None]
    peers: int
    urgent: bool = False
    done_s: float | None = None


class InventoryWatch(Observer):
    """Follows every node's own inventory records, from publication to every region peer."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        # Records the nodes are to publish (set once the scenario is drawn), how many they
        # did, when the last one was, each author's latest version.
        self.scheduled: int | None = None
        self.published = 0
        self.last_s = 0.0
        self.latest: dict[int, int] = {}
        # Freshness: every published version, those not yet held by all (by author id), per-peer delays.
        self.versions: list[InventoryVersion] = []
        self._open: dict[str, list[InventoryVersion]] = {}
        self.peer_delays: list[float] = []
        # The inventory_fresh invariant's bound (the scenario sets it: two refresh periods).
        self.fresh_bound_s: float | None = None

    def expect(self, scheduled: int, fresh_bound_s: float | None = None) -> None:
        """The run's nodes will publish `scheduled` inventory records in all.

        fresh_bound_s: every version must reach all live region peers within it.
        """
        self.scheduled = scheduled
        self.fresh_bound_s = fresh_bound_s

    def on_published(
        self, now: float, idx: int, record: Record, accepted: bool, *, urgent: bool = False
    ) -> None:
        """Node idx published its own inventory record (accepted: its store took it; urgent: a change)."""
        if accepted:
            self.published += 1
            self.last_s = now
            self.latest[idx] = max(record.version, self.latest.get(idx, 0))
            fleet = self.fleet
            pending = dict.fromkeys(i for i in fleet.live(fleet.slots[idx].region) if i != idx)
            v = InventoryVersion(idx, record.version, now, pending, len(pending), urgent)
            if not pending:
                v.done_s = now
            self.versions.append(v)
            if pending:
                self._open.setdefault(record.key, []).append(v)

    # -- what the fleet tells it --------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        if type(event) is RecordsAccepted and self._open:
            for r in event.records:
                if r.kind == INVENTORY_KIND:
                    self._received(now, slot.idx, r)

    def on_down(self, now: float, idx: int) -> None:
        if self._open:
            # A node that stopped is no longer a peer anyone must reach.
            for author_id in list(self._open):
                for v in self._open[author_id]:
                    if v.pending.pop(idx, 1) is None and not v.pending:
                        v.done_s = now
                self._close(author_id)

    def _received(self, now: float, obs: int, record: Record) -> None:
        """obs accepted an inventory record: it now holds that version and every older one."""
        versions = self._open.get(record.key)
        if not versions:
            return
        for v in versions:
            if v.version <= record.version and v.pending.pop(obs, 1) is None:
                self.peer_delays.append(now - v.at_s)
                if not v.pending:
                    v.done_s = now
        self._close(record.key)

    def _close(self, author_id: str) -> None:
        open_ = [v for v in self._open[author_id] if v.done_s is None]
        if open_:
            self._open[author_id] = open_
        else:
            del self._open[author_id]

    # -- results ---------------------------------------------------------------------------

    def late(self, now: float) -> list[InventoryVersion]:
        """Versions that reached all live region peers later than the bound, or still lack some past it."""
        bound = self.fresh_bound_s
        if bound is None:
            return []
        return [
            v for v in self.versions if (v.done_s - v.at_s if v.done_s is not None else now - v.at_s) > bound
        ]

    def freshness(self, now: float) -> dict[str, Any]:
        """Per published version, the time until every live region peer held it (or a newer one)."""
        versions = self.versions
        pairs = sum(v.peers for v in versions)
        pending = sum(len(v.pending) for v in versions if v.done_s is None)

        def took(v: InventoryVersion) -> float:
            return v.done_s - v.at_s if v.done_s is not None else math.inf

        return {
            "versions": len(versions),
            "all_peers_s": stats([took(v) for v in versions]),
            # The same for the meaningful changes alone (published urgent).
            "changes_all_peers_s": stats([took(v) for v in versions if v.urgent]),
            "peer_s": stats(self.peer_delays),
            "incomplete": sum(1 for v in versions if v.done_s is None),
            "missing_fraction": round(pending / pairs, 6) if pairs else None,
            "bound_s": self.fresh_bound_s,
            "late": len(self.late(now)),
        }

    def missing(self) -> tuple[int, list[tuple[int, int]]]:
        """(pairs, missing): live (observer, author) pairs of one region, the author having
        published, and those where the observer lacks the author's latest inventory."""
        fleet = self.fleet
        pairs = 0
        missing: list[tuple[int, int]] = []
        for region in range(fleet.region_count):
            live = fleet.live(region)
            authors = [(a, fleet.slots[a].node_id, self.latest[a]) for a in live if a in self.latest]
            for obs in live:
                core = fleet.core(obs)
                for a, author_id, version in authors:
                    if a == obs:
                        continue
                    pairs += 1
                    held = held_version(core, INVENTORY_KIND, author_id)
                    if held is None or held < version:
                        missing.append((obs, a))
        return pairs, missing

    def report(self, now: float) -> dict[str, Any] | None:
        """published, records_per_node_expected, held_fraction, missing, freshness (None until expected)."""
        if self.scheduled is None:
            return None
        pairs, missing = self.missing()
        nodes = len(self.fleet.slots)
        return {
            "published": self.published,
            "records_per_node_expected": round(self.scheduled / nodes, 3) if nodes else None,
            "held_fraction": round(1.0 - len(missing) / pairs, 6) if pairs else None,
            "missing": len(missing),
            "freshness": self.freshness(now),
        }
