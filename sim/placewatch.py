"""The placement watch: every node's device record, the deployment set, and what placement did.

It publishes (sim/placing.py's inventories, at each node's start and restart)
and measures, in every scenario (the report's `placement` key):

- replicas_restored_s, per lost replica: from a crash until the replica's
  deployment again has its full count in that region (or as many as the live
  nodes that meet its requirements allow) of replicas on live nodes that meet
  its requirements, in the region's newest applied placement, each reported
  READY by its node. A replica never restored counts as infinite
  (its percentiles are null) and in `unrestored`.
- moves_per_failure, per crashed node that held replicas: replicas of the
  region that left their node between the crash and the restoration; only the
  crashed node's own should (`moved_others` counts the rest, over the run).
- unplaced: replicas of the deployment set missing from their region's newest
  placement (or on dead nodes) at the end.
- duplicate_replicas_after_heal: at the end, replicas held by live nodes beyond
  the desired count (after a partition heals, both sides held some).

And checks two invariants as it goes (violations carry the seed, sim/invariants.py):
`placement_not_stale` (a node applies placements in strictly newer (era, term,
epoch) order within one life) and `placement_constraints` (every applied
placement meets each deployment's requirements and every node's capacity, by
inference/resources.py's and inference/ledger.py's rules).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from consensus.config import Era
from gossip.events import Event
from gossip.kinds import DESIRED_KIND, INVENTORY_KIND
from gossip.records import Record, sign_record
from inference import inventory
from inference.assignments import ReplicaState
from inference.inventory import encode, inventory_scope
from inference.ledger import Held, Ledger
from inference.manifest import Deployment
from inference.placement import DEFAULT_OPTIONS
from inference.placing import Applied
from inference.placing_inputs import deployments_of
from inference.placing_ports import PlacementApplied, ReplicaDropped
from inference.resources import NodeResources, node_from_inventory, requirement_problem, reservation
from inference.stamps import Stamp, newer
from node.core import Node
from sim.fleet import Fleet
from sim.invariants import Invariants
from sim.observer import Observer
from sim.placing import device_inventory
from sim.report import stats
from sim.slot import NodeSlot

CHECK_STALE = "placement_not_stale"
CHECK_CONSTRAINTS = "placement_constraints"
POLL_S = 0.1
# A node publishes its device record this soon after it starts (drawn) or restarts.
PUBLISH_S = (0.1, 2.0)
RESTART_PUBLISH_S = 0.5
CONSTRAINT_CHECKS_KEPT = 100_000


@dataclass(slots=True)
class _Loss:
    """One crash of a node that held replicas, until each lost one is back."""

    idx: int
    region: int
    at_s: float
    lost: list[str]  # a deployment name per lost replica
    before: set[tuple[str, str]]
    restored_s: dict[int, float] = field(default_factory=dict)  # position in lost -> delay
    placed_s: dict[int, float] = field(default_factory=dict)  # the same, ready or not


class PlacementWatch(Observer):
    """Publishes device records, measures and checks placement (see the module docstring)."""

    def __init__(
        self, fleet: Fleet, invariants: Invariants, deployments: list[Deployment], *, publish: bool
    ) -> None:
        self.fleet = fleet
        self.invariants = invariants
        self.deployments = {d.name: d for d in deployments}
        self.publish = publish
        self.devices: dict[str, NodeResources] = {}
        self._lives: dict[str, int] = {}
        self._last_applied: dict[int, Stamp] = {}
        self._checked: dict[tuple[str, Stamp], None] = {}
        self._losses: list[_Loss] = []
        self._open: list[_Loss] = []
        self._polling = False
        self.moves: list[int] = []
        self.moved_others = 0
        self.published = 0
        self.violations = {CHECK_STALE: 0, CHECK_CONSTRAINTS: 0}
        invariants.check(CHECK_STALE)
        invariants.check(CHECK_CONSTRAINTS)

    # -- publishing -------------------------------------------------------------------------

    def _schedule_publish(self, at_s: float, idx: int) -> None:
        fleet = self.fleet

        def go(now: float) -> None:
            s = fleet.slots[idx]
            if s.up:
                fleet.engine.call_node_at(now, idx, self._publisher(idx, s.node_id))

        fleet.engine.call_at(at_s, go)

    def _publisher(self, idx: int, node_id: str) -> Any:
        fleet = self.fleet

        def publish(core: Any, t: float) -> None:
            region = fleet.region_names[fleet.slots[idx].region]
            position = fleet.by_region[fleet.slots[idx].region].index(idx)
            inv = device_inventory(fleet.seed, node_id, region, position)
            version = self._lives[node_id] = self._lives.get(node_id, 0) + 1
            record = sign_record(
                fleet.node_signing_key(node_id),
                INVENTORY_KIND,
                node_id,
                version,
                inventory_scope(region),
                encode(inv),
            )
            self.devices[node_id] = node_from_inventory(node_id, inventory_doc(record))
            if core.publish_record(t, record):
                self.published += 1

        return publish

    def on_spawn(self, idx: int, node_id: str, region: int, views: Any) -> None:
        if self.publish:
            rng = random.Random(f"murmur-sim-publish/{self.fleet.seed}/{node_id}")
            self._schedule_publish(self.fleet.now + rng.uniform(*PUBLISH_S), idx)

    def on_restart(self, now: float, slot: NodeSlot) -> None:
        self._last_applied.pop(slot.idx, None)
        if self.publish:
            self._schedule_publish(now + RESTART_PUBLISH_S, slot.idx)

    # -- events -----------------------------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        if type(event) is PlacementApplied:
            stamp = Stamp(Era(*event.era), event.term, event.epoch)
            last = self._last_applied.get(slot.idx)
            if last is not None and not newer(stamp, last):
                self.violations[CHECK_STALE] += 1
                self.invariants.violation(
                    now,
                    CHECK_STALE,
                    f"{slot.node_id} applied placement {stamp} of {event.region} after {last}",
                )
            self._last_applied[slot.idx] = stamp
            applied = self.fleet.placements[slot.node_id].applied()
            if applied is not None and (event.region, stamp) not in self._checked:
                if len(self._checked) < CONSTRAINT_CHECKS_KEPT:
                    self._checked[(event.region, stamp)] = None
                self._check_constraints(now, slot, applied)
        elif type(event) is ReplicaDropped:
            runtime = self.fleet.runtimes.get(slot.node_id)
            if runtime is not None:
                runtime.drop(event.deployment)

    def _node(self, slot: NodeSlot, node_id: str) -> NodeResources | None:
        device = self.devices.get(node_id)
        if device is not None:
            return device
        core = slot.core
        for record in core.gossip.state.records(INVENTORY_KIND) if isinstance(core, Node) else []:
            if record.key == node_id:
                return node_from_inventory(node_id, inventory_doc(record))
        return None

    def _check_constraints(self, now: float, slot: NodeSlot, applied: Applied) -> None:
        record = applied.record
        core = slot.core
        held = core.gossip.state.records(DESIRED_KIND) if isinstance(core, Node) else []
        deployments = {**deployments_of(held, {}), **self.deployments}
        nodes: dict[str, NodeResources] = {}
        problems: list[str] = []
        for a in record.assignments:
            node = nodes.get(a.node_id) or self._node(slot, a.node_id)
            if node is None:
                problems.append(f"{a.deployment}#{a.slot} on {a.node_id}, whose inventory is unknown")
                continue
            nodes[a.node_id] = node
            d = deployments.get(a.deployment)
            if d is None:
                continue
            problem = requirement_problem(node, d.requirements)
            if problem is not None:
                problems.append(f"{a.deployment}#{a.slot} on {a.node_id}: {problem}")
        ledger = Ledger(
            nodes.values(), DEFAULT_OPTIONS.memory_budget_percent, DEFAULT_OPTIONS.cpu_budget_percent
        )
        for a in record.assignments:
            d = deployments.get(a.deployment)
            if d is not None and a.node_id in nodes:
                ledger.add(Held(a.deployment, a.slot, a.node_id, a.state, d.priority, reservation(d)))
        for node_id in sorted(nodes):
            if ledger.over_budget(node_id):
                problems.append(f"{node_id} over its capacity")
        for p in problems:
            self.violations[CHECK_CONSTRAINTS] += 1
            self.invariants.violation(
                now,
                CHECK_CONSTRAINTS,
                f"placement {applied.stamp} of {record.region} applied by {slot.node_id}: {p}",
            )

    # -- the region's truth -------------------------------------------------------------------

    def newest(self, region: int) -> Applied | None:
        """The newest placement applied by a live node of the region."""
        best: Applied | None = None
        for i in self.fleet.live(region):
            applied = self.fleet.placements[self.fleet.slots[i].node_id].applied()
            if applied is not None and (best is None or newer(applied.stamp, best.stamp)):
                best = applied
        return best

    def _ready(self, node_id: str) -> set[str]:
        core = self.fleet.placements[node_id]
        return {r.deployment for r in core.own_replicas() if r.state is ReplicaState.READY}

    def _full(self, region: int, deployment: str, applied: Applied | None, *, ready: bool = True) -> bool:
        d = self.deployments[deployment]
        fleet = self.fleet
        # As many as the region's live nodes allow: with too few nodes that meet the requirements
        # left, the rest is unplaced (reported so), not waiting to be restored.
        eligible = 0
        for i in fleet.live(region):
            node = self.devices.get(fleet.slots[i].node_id)
            if node is not None and requirement_problem(node, d.requirements) is None:
                eligible += 1
        need = min(d.replicas.for_region(fleet.region_names[region]), eligible)
        if applied is None:
            return need == 0
        good = 0
        for a in applied.record.assignments:
            if a.deployment != deployment:
                continue
            idx = fleet.idx_of.get(a.node_id)
            node = self.devices.get(a.node_id)
            if idx is None or not fleet.slots[idx].up or node is None:
                continue
            if requirement_problem(node, d.requirements) is None and (
                not ready or deployment in self._ready(a.node_id)
            ):
                good += 1
        return good >= need

    def crash_holders(self, now: float, rng: random.Random, *, host_lost: bool) -> None:
        """Crash one live node per region that holds replicas in the newest placement (drawn from rng),
        so the crash scenario always loses replicas (1% of the nodes rarely hold any)."""
        fleet = self.fleet
        for r in range(fleet.region_count):
            applied = self.newest(r)
            if applied is None:
                continue
            live = {fleet.slots[i].node_id for i in fleet.live(r)}
            holders = sorted({a.node_id for a in applied.record.assignments if a.node_id in live})
            if holders:
                fleet.fault_counts["crashes"] += 1
                fleet.crash(fleet.idx_of[rng.choice(holders)], host_lost=host_lost)

    # -- crashes --------------------------------------------------------------------------------

    def on_crash(self, now: float, idx: int) -> None:
        region = self.fleet.slots[idx].region
        applied = self.newest(region)
        if applied is None:
            return
        node_id = self.fleet.slots[idx].node_id
        lost = [
            a.deployment
            for a in applied.record.assignments
            if a.node_id == node_id and a.deployment in self.deployments
        ]
        if not lost:
            return
        before = {(a.deployment, a.node_id) for a in applied.record.assignments}
        loss = _Loss(idx, region, now, lost, before)
        self._losses.append(loss)
        self._open.append(loss)
        if not self._polling:
            self._polling = True
            self.fleet.engine.call_at(now + POLL_S, self._poll)

    def _poll(self, now: float) -> None:
        still: list[_Loss] = []
        for loss in self._open:
            applied = self.newest(loss.region)
            for k, deployment in enumerate(loss.lost):
                if k not in loss.placed_s and self._full(loss.region, deployment, applied, ready=False):
                    loss.placed_s[k] = now - loss.at_s
                if k not in loss.restored_s and self._full(loss.region, deployment, applied):
                    loss.restored_s[k] = now - loss.at_s
            if len(loss.restored_s) < len(loss.lost):
                still.append(loss)
                continue
            after = {(a.deployment, a.node_id) for a in applied.record.assignments} if applied else set()
            moved = loss.before - after
            self.moves.append(len(moved))
            crashed = {
                self.fleet.slots[i].node_id for i in range(len(self.fleet.slots)) if self.fleet.crashed[i]
            }
            self.moved_others += sum(1 for _, n in moved if n not in crashed)
        self._open = still
        if still:
            self.fleet.engine.call_at(now + POLL_S, self._poll)
        else:
            self._polling = False

    # -- the end ---------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        fleet = self.fleet
        samples: list[float] = []
        placed_samples: list[float] = []
        unrestored = 0
        for loss in self._losses:
            for k in range(len(loss.lost)):
                placed_samples.append(loss.placed_s.get(k, math.inf))
                delay = loss.restored_s.get(k)
                samples.append(delay if delay is not None else math.inf)
                unrestored += delay is None
        unplaced = 0
        duplicates = 0
        for r in range(fleet.region_count):
            applied = self.newest(r)
            name = fleet.region_names[r]
            held: dict[str, int] = {}
            for i in fleet.live(r):
                for view in fleet.placements[fleet.slots[i].node_id].own_replicas():
                    held[view.deployment] = held.get(view.deployment, 0) + 1
            for d in self.deployments.values():
                need = d.replicas.for_region(name)
                placed = 0
                if applied is not None:
                    for a in applied.record.assignments:
                        idx = fleet.idx_of.get(a.node_id)
                        if a.deployment == d.name and idx is not None and fleet.slots[idx].up:
                            placed += 1
                unplaced += max(0, need - placed)
                duplicates += max(0, held.get(d.name, 0) - need)
        ordered = sorted(self.moves)
        return {
            "deployments": len(self.deployments),
            "inventories_published": self.published,
            "replicas_restored_s": stats(samples),
            # The same until the replacement is in the placement (ready or not): the rest is loading.
            "replicas_placed_s": stats(placed_samples),
            "lost_replicas": len(samples),
            "unrestored": unrestored,
            "constraint_violations": self.violations[CHECK_CONSTRAINTS],
            "stale_applied": self.violations[CHECK_STALE],
            "moves_per_failure": {
                "p50": ordered[(len(ordered) - 1) // 2] if ordered else None,
                "max": ordered[-1] if ordered else None,
            },
            "moved_others": self.moved_others,
            "unplaced": unplaced,
            "duplicate_replicas_after_heal": duplicates,
        }


def inventory_doc(record: Record) -> dict[str, Any]:
    """The decoded inventory of a record (one this watch signed, or a checked one from a store)."""
    doc = inventory.decode(record.payload)
    if doc is None:
        raise ValueError(f"bad inventory record of {record.key}")
    return doc
