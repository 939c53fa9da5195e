"""The admission scenario's watch: who got in, who never did, who was thrown out.

Three kinds of newcomers and one operator action, on a fleet in admission mode
(gossip/admission.py, docs/trust.md), measured from the cores' own events:
- joiners: new devices with a valid invite; joined when every live member of
  their region lists them alive (`joined_all_s`, from their start);
- intruders: devices with the network key but a forged, expired or other-cluster
  invite; never listed by any honest node in any pool (`sightings` must be 0,
  invariant `intruders_never_members`), their refusals counted by reason;
- revoked: nodes an operator revokes; expelled when no live member of their
  region (nor any gateway's fleet view) lists them alive or suspect
  (`expelled_all_s`, from the revocation's publication). A revoked node stops
  when it learns of its own revocation, as the agent does (invariant
  `revoked_expelled` at the end).
"""

from __future__ import annotations

import math
from typing import Any

from gossip.events import AdmissionRefused, Event, MemberChanged, MemberState, Revoked
from sim.fleet import Fleet
from sim.invariants import Invariants
from sim.observer import Observer
from sim.report import stats
from sim.slot import NodeSlot

INTRUDER_KINDS = ("forged", "expired", "other_cluster")
SIGHTING_EXAMPLES_MAX = 10
_LISTED = (MemberState.ALIVE, MemberState.SUSPECT)


class AdmissionWatch(Observer):
    """Listens to every core's events (through the fleet) and reports the admission figures."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.joiners: dict[str, float] = {}  # node id -> start time
        self.joined_s: dict[str, float] = {}  # node id -> seconds from start to listed by all
        self.intruders: dict[str, str] = {}  # node id -> kind
        self.sightings = 0
        self.sighting_examples: list[str] = []
        self.refusals: dict[str, int] = {}  # reason -> how many (observer, node) refusals
        self.revoked_at_s: dict[str, float] = {}  # node id -> when its revocation was published
        self.expelled_s: dict[str, float] = {}  # node id -> seconds until no one lists it
        self.stopped: set[str] = set()

    # -- what the scenario tells it ------------------------------------------------------

    def joiner(self, node_id: str, now: float) -> None:
        self.joiners[node_id] = now

    def intruder(self, node_id: str, kind: str) -> None:
        self.intruders[node_id] = kind

    def revoking(self, node_id: str, now: float) -> None:
        self.revoked_at_s[node_id] = now

    # -- the cores' events ----------------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        if type(event) is MemberChanged:
            self._member_changed(now, slot, event)
        elif type(event) is AdmissionRefused:
            self.refusals[event.reason] = self.refusals.get(event.reason, 0) + 1
        elif type(event) is Revoked and event.node_id == slot.node_id:
            self.stopped.add(slot.node_id)
            idx = slot.idx

            def stop(_t: float) -> None:
                self.fleet.stop_revoked(idx)  # like the agent: a node that learns it was revoked stops

            self.fleet.engine.call_at(now, stop)

    def _member_changed(self, now: float, slot: NodeSlot, ev: MemberChanged) -> None:
        fleet = self.fleet
        if ev.node_id in self.intruders and slot.idx not in fleet.outsiders:
            self.sightings += 1
            if len(self.sighting_examples) < SIGHTING_EXAMPLES_MAX:
                self.sighting_examples.append(
                    f"t={now:.3f}s {slot.node_id} lists intruder {ev.node_id} "
                    f"({self.intruders[ev.node_id]}) as {ev.state} in pool {ev.pool}"
                )
            return
        if ev.state == MemberState.ALIVE:
            self._maybe_joined(now, ev.node_id)
        elif ev.state not in _LISTED:
            self._maybe_expelled(now, ev.node_id)

    def _maybe_joined(self, now: float, node_id: str) -> None:
        if node_id not in self.joiners or node_id in self.joined_s:
            return
        if self._listed_by_region(node_id, alive_only=True) == len(self._region_peers(node_id)):
            self.joined_s[node_id] = now - self.joiners[node_id]

    def _maybe_expelled(self, now: float, node_id: str) -> None:
        if node_id not in self.revoked_at_s or node_id in self.expelled_s:
            return
        if self._still_listing(node_id) == 0:
            self.expelled_s[node_id] = now - self.revoked_at_s[node_id]

    def _region_peers(self, node_id: str) -> list[int]:
        fleet = self.fleet
        idx = fleet.idx_of[node_id]
        return [i for i in fleet.live(fleet.slots[idx].region) if i != idx]

    def _listed_by_region(self, node_id: str, *, alive_only: bool) -> int:
        views = self.fleet.views.region
        states = (MemberState.ALIVE,) if alive_only else _LISTED
        return sum(1 for i in self._region_peers(node_id) if views[i].get(node_id) in states)

    def _still_listing(self, node_id: str) -> int:
        """Live honest nodes that list node_id alive or suspect, in the region or fleet pool."""
        fleet = self.fleet
        region = self._listed_by_region(node_id, alive_only=False)
        fleet_views = fleet.views.fleet
        in_fleet = sum(
            1
            for i in fleet.live()
            if fleet.slots[i].node_id != node_id and fleet_views[i].get(node_id) in _LISTED
        )
        return region + in_fleet

    # -- the end ---------------------------------------------------------------------------

    def check_end(self, invariants: Invariants, now: float) -> None:
        invariants.check("intruders_never_members")
        for example in self.sighting_examples:
            invariants.violation(now, "intruders_never_members", example)
        invariants.check("revoked_expelled")
        for node_id in self.revoked_at_s:
            listing = self._still_listing(node_id)
            if listing:
                invariants.violation(
                    now, "revoked_expelled", f"{listing} live nodes still list revoked {node_id}"
                )
            if node_id not in self.stopped:
                invariants.violation(
                    now, "revoked_expelled", f"revoked {node_id} never learned it and kept running"
                )

    def report(self) -> dict[str, Any]:
        joined = [self.joined_s.get(n, math.inf) for n in self.joiners]
        expelled = [self.expelled_s.get(n, math.inf) for n in self.revoked_at_s]
        kinds: dict[str, int] = {}
        for kind in self.intruders.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "joiners": len(self.joiners),
            "joined_all_s": stats(joined),
            "not_joined": sum(1 for d in joined if math.isinf(d)),
            "intruders": len(self.intruders),
            "intruder_kinds": dict(sorted(kinds.items())),
            "sightings": self.sightings,
            "refusals": dict(sorted(self.refusals.items())),
            "revoked": len(self.revoked_at_s),
            "expelled_all_s": stats(expelled),
            "not_expelled": sum(1 for d in expelled if math.isinf(d)),
            "revoked_stopped": len(self.stopped),
        }
