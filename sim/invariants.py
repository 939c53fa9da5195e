"""Invariant checkers: they live outside the nodes and judge them from events, the wire and views.

Safety invariants are checked all along (the engine reports oversized packets,
core exceptions and timers that do not advance; events are checked here as
they arrive). Liveness invariants are checked at the end of the run, and only
when the run ended with a quiet phase long enough for the protocol to converge
(TigerBeetle's VOPR does the same: a safety phase with faults, then a
liveness phase that must converge).
"""

from __future__ import annotations

from collections.abc import Sequence

from gossip.events import BroadcastDelivered, Event, IncarnationChanged, MemberState
from gossip.node import GATEWAYS_PER_REGION, MemberView
from sim.fleet import Fleet
from sim.inventory import InventoryWatch
from sim.metrics import Metrics
from sim.observer import Observer
from sim.slot import NodeSlot
from sim.views import first_unseen, fleet_digest, members

VIOLATIONS_MAX = 50
# Quiet time needed before the end-of-run liveness checks, in probe intervals of each pool.
REGION_SETTLE_PROBES = 15
FLEET_SETTLE_PROBES = 6

STREAMING_CHECKS = (
    "no_core_exception",
    "timer_advances",
    "packet_max_bytes",
    "stream_max_bytes",
    "incarnation_monotonic",
    "broadcast_delivered_once",
)


class Invariants(Observer):
    """Records violations, each with the command that reproduces it."""

    def __init__(self, fleet: Fleet, seed: int, reproduce: str) -> None:
        self.fleet = fleet
        self.seed = seed
        self.reproduce = reproduce
        self.checked: list[str] = list(STREAMING_CHECKS)
        self.violations: list[str] = []
        self.violation_count = 0
        # The incarnation each node's next IncarnationChanged must exceed.
        self._floor: list[int] = []
        self._delivered: dict[tuple[int, str, int], None] = {}

    def violation(self, now: float, kind: str, detail: str) -> None:
        """Record one broken invariant."""
        self.violation_count += 1
        if len(self.violations) < VIOLATIONS_MAX:
            self.violations.append(
                f"t={now:.3f}s {kind}: {detail}; reproduce with --seed {self.seed}: {self.reproduce}"
            )

    def check(self, name: str) -> None:
        """Note that invariant `name` is checked in this run (listed in the report)."""
        if name not in self.checked:
            self.checked.append(name)

    # -- streaming checks ----------------------------------------------------------------

    def on_violation(self, now: float, kind: str, detail: str) -> None:
        """The engine saw a broken invariant."""
        self.violation(now, kind, detail)

    def on_spawn(self, idx: int, node_id: str, region: int, views: Sequence[MemberView]) -> None:
        """A node is being created."""
        while len(self._floor) <= idx:
            self._floor.append(0)

    def on_restart(self, now: float, slot: NodeSlot) -> None:
        """A node restarts: it must come back above the incarnation it persisted."""
        self._floor[slot.idx] = max(self._floor[slot.idx], slot.incarnation)

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        """Check one core event."""
        if type(event) is IncarnationChanged:
            idx = slot.idx
            while len(self._floor) <= idx:
                self._floor.append(0)
            if event.incarnation <= self._floor[idx]:
                self.violation(
                    now,
                    "incarnation_monotonic",
                    f"{slot.node_id} reported incarnation {event.incarnation}, "
                    f"not above {self._floor[idx]} (its previous or persisted one)",
                )
            self._floor[idx] = max(self._floor[idx], event.incarnation)
        elif type(event) is BroadcastDelivered:
            key = (slot.idx, event.origin_id, event.seq)
            if key in self._delivered:
                self.violation(
                    now,
                    "broadcast_delivered_once",
                    f"{slot.node_id} delivered broadcast {event.origin_id}#{event.seq} twice",
                )
            self._delivered[key] = None

    # -- end-of-run checks ------------------------------------------------------------------

    def check_end(
        self,
        metrics: Metrics,
        now: float,
        quiet_since_s: float,
        *,
        lossy: bool,
        after_split: bool = False,
        inventory: InventoryWatch | None = None,
    ) -> None:
        """The liveness checks that apply, given how long the run has been quiet.

        After a partition, members each side declared dead are only guaranteed
        to come back through push-pull (gossip to the dead is the fast path), so
        the quiet phase must also cover one push-pull interval of the pool.
        """
        fleet = self.fleet
        quiet_s = now - quiet_since_s
        self._check_views_match(fleet, now)
        region_settle_s = REGION_SETTLE_PROBES * fleet.region_config.probe_interval_s
        fleet_settle_s = FLEET_SETTLE_PROBES * fleet.fleet_config.probe_interval_s
        if after_split:
            region_settle_s += fleet.region_config.push_pull_interval_s
            fleet_settle_s += fleet.fleet_config.push_pull_interval_s
        if quiet_s >= region_settle_s:
            self._check_region_liveness(fleet, now, lossy=lossy)
            if fleet.region_count > 1:
                self._check_gateways(fleet, now)
        if fleet.region_count > 1 and quiet_s >= max(region_settle_s, fleet_settle_s):
            self._check_fleet_liveness(fleet, now)
        self._check_crashes_dead(fleet, metrics, now)
        if metrics.record_tracks and now - metrics.record_tracks[-1].at_s >= region_settle_s:
            self._check_records_agree(fleet, now)
        # Region records go once from their author to each member (docs/state.md): on a lossy
        # network a member may hold the previous version until the next refresh or push-pull,
        # which inventory_fresh bounds; holding every latest version is for a lossless one.
        if inventory is None:
            return
        if inventory.scheduled is not None and not lossy and now - inventory.last_s >= region_settle_s:
            self._check_inventory_held(fleet, inventory, now)
        if inventory.fresh_bound_s is not None:
            self._check_inventory_fresh(fleet, inventory, now)

    def _check_inventory_fresh(self, fleet: Fleet, inventory: InventoryWatch, now: float) -> None:
        """Every inventory version reached all live region peers within the bound (two refresh periods)."""
        self.check("inventory_fresh")
        late = inventory.late(now)
        if late:
            v = late[0]
            if v.done_s is not None:
                took = f"took {v.done_s - v.at_s:.3f} s"
            else:
                took = f"still misses {len(v.pending)} peers"
            self.violation(
                now,
                "inventory_fresh",
                f"{fleet.slots[v.author_idx].node_id}'s inventory version {v.version} published at "
                f"t={v.at_s:.3f}s {took}; the bound is {inventory.fresh_bound_s:g} s "
                f"({len(late)} versions late)",
            )

    def _check_inventory_held(self, fleet: Fleet, inventory: InventoryWatch, now: float) -> None:
        """Every live node holds the latest inventory of every live member of its region."""
        self.check("inventory_held")
        _, missing = inventory.missing()
        if missing:
            obs, author = missing[0]
            self.violation(
                now,
                "inventory_held",
                f"{fleet.slots[obs].node_id} lacks {fleet.slots[author].node_id}'s inventory version "
                f"{inventory.latest[author]} ({len(missing)} pairs missing)",
            )

    def _check_records_agree(self, fleet: Fleet, now: float) -> None:
        """After published records had time to spread, every live node holds the same fleet records.

        Compared by the fleet-only digest (author -> highest version, fingerprint),
        which is what gateways compare in the fleet pool.
        """
        self.check("records_agree")
        live = fleet.live()
        if not live:
            return
        first = live[0]
        want = fleet_digest(fleet.core(first))
        for idx in live[1:]:
            got = fleet_digest(fleet.core(idx))
            if got != want:
                self.violation(
                    now,
                    "records_agree",
                    f"{fleet.slots[idx].node_id}'s fleet-record digest {got} differs from "
                    f"{fleet.slots[first].node_id}'s {want}",
                )
                return

    def _check_views_match(self, fleet: Fleet, now: float) -> None:
        """The views rebuilt from MemberChanged events equal what members() says."""
        self.check("events_match_view")
        for idx in fleet.live():
            core = fleet.core(idx)
            me = fleet.slots[idx].node_id
            for pool in ("region", "fleet"):
                if pool == "fleet" and not core.is_gateway:
                    continue
                tracked = fleet.views.pool(pool)[idx]
                actual = members(core, pool)
                actual.pop(me, None)
                for node_id, state in actual.items():
                    if tracked.get(node_id) != state:
                        self.violation(
                            now,
                            "events_match_view",
                            f"{me} lists {node_id} as {state} in pool {pool}, but its "
                            f"events say {tracked.get(node_id)}",
                        )
                        return
                for node_id, state in tracked.items():
                    if node_id not in actual and state not in (MemberState.DEAD, MemberState.LEFT):
                        self.violation(
                            now,
                            "events_match_view",
                            f"{me}'s events left {node_id} {state} in pool {pool}, "
                            "but members() does not list it",
                        )
                        return

    def _check_region_liveness(self, fleet: Fleet, now: float, *, lossy: bool) -> None:
        """Every live node sees every live member of its region alive (suspect tolerated under loss)."""
        self.check("region_liveness")
        ok = (MemberState.ALIVE, MemberState.SUSPECT) if lossy else (MemberState.ALIVE,)
        slots = fleet.slots
        for region in range(fleet.region_count):
            live = [i for i in fleet.live(region) if not slots[i].stalled]
            unseen = first_unseen(live, slots, lambda i: members(fleet.core(i), "region"), ok)
            if unseen is not None:
                obs, subj, state = unseen
                self.violation(
                    now,
                    "region_liveness",
                    f"{slots[obs].node_id} sees live {slots[subj].node_id} as {state} "
                    f"at the end of the liveness phase",
                )
                return

    def _check_gateways(self, fleet: Fleet, now: float) -> None:
        """Once converged, every region has 1 to GATEWAYS_PER_REGION gateways."""
        self.check("gateways_per_region")
        for region in range(fleet.region_count):
            live = fleet.live(region)
            count = sum(1 for i in live if fleet.core(i).is_gateway)
            if live and not 1 <= count <= GATEWAYS_PER_REGION:
                self.violation(
                    now,
                    "gateways_per_region",
                    f"region {fleet.region_names[region]} has {count} gateways "
                    f"(want 1..{GATEWAYS_PER_REGION})",
                )

    def _check_fleet_liveness(self, fleet: Fleet, now: float) -> None:
        """Every live gateway sees every other live gateway in the fleet pool (not dead or left)."""
        self.check("fleet_liveness")
        slots = fleet.slots
        gateways = [i for i in fleet.live() if fleet.core(i).is_gateway and not slots[i].stalled]
        ok = (MemberState.ALIVE, MemberState.SUSPECT)
        unseen = first_unseen(gateways, slots, lambda i: members(fleet.core(i), "fleet"), ok)
        if unseen is not None:
            g, h, state = unseen
            self.violation(
                now,
                "fleet_liveness",
                f"gateway {slots[g].node_id} sees gateway {slots[h].node_id} as {state} in the fleet pool",
            )

    def _check_crashes_dead(self, fleet: Fleet, metrics: Metrics, now: float) -> None:
        """A node crashed for longer than the longest suspicion is dead at every live region member."""
        slots = fleet.slots
        limit_s = metrics.suspicion_max_s("region") + 10.0
        for rec in metrics.crashes:
            if now - rec.at_s < limit_s or slots[rec.idx].up:
                continue
            self.check("crashed_detected")
            region = slots[rec.idx].region
            for obs in fleet.live(region):
                state = members(fleet.core(obs), "region").get(rec.node_id)
                if state in (MemberState.ALIVE, MemberState.SUSPECT):
                    self.violation(
                        now,
                        "crashed_detected",
                        f"{slots[obs].node_id} still sees {rec.node_id} as {state} "
                        f"{now - rec.at_s:.1f}s after it crashed",
                    )
                    return
