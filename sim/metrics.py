"""What the simulator measures, from the cores' events and from the wire.

Convergence is judged from each node's views rebuilt from its events
(sim/views.py), without asking the cores; the invariant checker compares those
views with what the cores list at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gossip.config import suspicion_timeout_s
from gossip.events import (
    BroadcastDelivered,
    Event,
    GatewayChanged,
    MemberChanged,
    MemberState,
    RecordsAccepted,
)
from gossip.node import GATEWAYS_PER_REGION, MemberView
from gossip.records import Record
from sim.fleet import Fleet
from sim.observer import Observer
from sim.report import RATE_DIGITS, TIME_DIGITS, stats
from sim.slot import NodeSlot
from sim.views import first_unseen, held_version

ALIVE = MemberState.ALIVE
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT
SUSPECT = MemberState.SUSPECT
# A node up for less than this in the traffic window has no meaningful rate.
TRAFFIC_UPTIME_MIN_S = 1.0


@dataclass(slots=True)
class CrashRecord:
    """One crash and how the fleet noticed it."""

    idx: int
    node_id: str
    at_s: float
    was_gateway: bool
    pending_region: dict[int, None] = field(default_factory=dict)
    pending_fleet: dict[int, None] = field(default_factory=dict)
    first_suspect_s: float | None = None
    all_dead_s: float | None = None


@dataclass(slots=True)
class Spread:
    """Something one node published at at_s, the nodes live then, and when each one had it."""

    origin_idx: int
    at_s: float
    live_at_start: list[int]
    delivered_s: dict[int, float] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Broadcast(Spread):
    """The injected fleet-wide broadcast and who has it."""

    key: tuple[str, int]


@dataclass(slots=True, kw_only=True)
class RecordTrack(Spread):
    """One published signed record and who holds it (or a newer version of its slot)."""

    slot: tuple[str, str]
    version: int


class Metrics(Observer):
    """Collects detection, false deaths, dissemination, traffic and convergence."""

    def __init__(self, fleet: Fleet, *, tolerate_suspect: bool = False) -> None:
        self.fleet = fleet
        self.views = fleet.views
        self._ok_states: tuple[MemberState, ...] = (ALIVE, SUSPECT) if tolerate_suspect else (ALIVE,)
        # The incarnation a node restarted above: death notices at or below it are about an earlier life.
        self.life_floor: list[int] = []
        self.crashes: list[CrashRecord] = []
        self._open_crashes: dict[str, CrashRecord] = {}
        self.false_dead_pairs: dict[tuple[int, int], float] = {}
        self.false_dead_examples: list[str] = []
        self.partition_dead_pairs: dict[tuple[int, int], None] = {}
        self.echo_dead_pairs: dict[tuple[int, int], None] = {}
        # A node leaving gracefully that an observer recorded dead rather than left.
        self.leave_seen_dead_pairs: dict[tuple[int, int], None] = {}
        self.broadcast: Broadcast | None = None
        # Published signed records, in publishing order.
        self.record_tracks: list[RecordTrack] = []
        # Partition bookkeeping: the groups of the last split and when it healed.
        self._split_group: list[int] = []
        self._healed_at_s: float | None = None
        # Convergence, by the views' change count it was computed at.
        self._convergence_cache: dict[str, tuple[int, bool]] = {}
        # Traffic snapshots: (bytes, msgs, uptime) per node at the window's start.
        self._window_start_s: float | None = None
        self._window: list[tuple[int, int, float]] = []
        self.stalls = 0

    # -- lifecycle hooks (from the fleet) -------------------------------------------------

    def on_spawn(self, idx: int, node_id: str, region: int, views: Sequence[MemberView]) -> None:
        """A node was created; `views` is its restored region view (warm start)."""
        self.life_floor.append(0)

    def on_crash(self, now: float, idx: int) -> None:
        """Node idx is about to crash: note who must notice."""
        fleet = self.fleet
        views = self.views
        slot = fleet.slots[idx]
        rec = CrashRecord(idx, slot.node_id, now, views.gateway[idx])
        for obs in fleet.live(slot.region):
            state = views.region[obs].get(slot.node_id)
            if obs != idx and state is not None and state not in (DEAD, LEFT):
                rec.pending_region[obs] = None
        if rec.was_gateway:
            for obs in fleet.live():
                state = views.fleet[obs].get(slot.node_id)
                if obs != idx and views.gateway[obs] and state is not None and state not in (DEAD, LEFT):
                    rec.pending_fleet[obs] = None
        self.crashes.append(rec)
        self._open_crashes[slot.node_id] = rec
        self._maybe_done(rec, now)

    def on_down(self, now: float, idx: int) -> None:
        """Node idx stopped (crash or retirement): it observes nothing any more."""
        for rec in list(self._open_crashes.values()):
            rec.pending_region.pop(idx, None)
            rec.pending_fleet.pop(idx, None)
            self._maybe_done(rec, now)

    def on_restart(self, now: float, slot: NodeSlot) -> None:
        """A node comes back with an empty view, above its persisted incarnation."""
        rec = self._open_crashes.pop(slot.node_id, None)
        del rec  # a crash not yet detected by all when the node came back stays undetected
        self.life_floor[slot.idx] = slot.incarnation

    def on_stall(self, now: float, idx: int, duration_s: float) -> None:
        """Node idx stalls."""
        self.stalls += 1

    def on_partition(self, groups: list[int]) -> None:
        """The network split; groups[idx] is each node's side."""
        self._split_group = list(groups)
        self._healed_at_s = None

    def on_heal(self, now: float) -> None:
        """The network is whole again."""
        self._healed_at_s = now

    def start_broadcast(self, now: float, origin_idx: int, key: tuple[str, int]) -> None:
        """Track the injected broadcast from now on."""
        live = self.fleet.live()
        self.broadcast = Broadcast(origin_idx, now, live, key=key)
        # The origin delivers to itself synchronously, before this call returns the key.
        self.broadcast.delivered_s.setdefault(origin_idx, now)

    def start_record(self, now: float, origin_idx: int, record: Record, accepted: bool) -> None:
        """Track a signed record published at origin_idx from now on."""
        track = RecordTrack(origin_idx, now, self.fleet.live(), slot=record.slot, version=record.version)
        self.record_tracks.append(track)
        # The origin's RecordsAccepted is drained after this call; it holds the record already.
        if accepted:
            track.delivered_s.setdefault(origin_idx, now)

    def start_traffic_window(self, now: float) -> None:
        """Start measuring traffic: snapshot every node's wire counters."""
        self._window_start_s = now
        self._window = [(s.tx_bytes, s.tx_msgs, s.uptime_until(now)) for s in self.fleet.slots]

    # -- core events ---------------------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        """Fold one core event into the views and the measurements."""
        if type(event) is MemberChanged:
            self._member_changed(now, slot, event)
        elif type(event) is BroadcastDelivered:
            b = self.broadcast
            if b is not None and (event.origin_id, event.seq) == b.key:
                b.delivered_s.setdefault(slot.idx, now)
        elif type(event) is RecordsAccepted:
            for r in event.records:
                for track in self.record_tracks:
                    # Holding a newer version of the slot counts as holding this one.
                    if track.slot == r.slot and track.version <= r.version:
                        track.delivered_s.setdefault(slot.idx, now)
        elif type(event) is GatewayChanged and not event.is_gateway:
            for rec in list(self._open_crashes.values()):
                rec.pending_fleet.pop(slot.idx, None)
                self._maybe_done(rec, now)

    def _member_changed(self, now: float, slot: NodeSlot, ev: MemberChanged) -> None:
        state = ev.state
        if ev.node_id == slot.node_id or state == ALIVE:
            return
        rec = self._open_crashes.get(ev.node_id)
        if rec is not None:
            if rec.first_suspect_s is None:
                rec.first_suspect_s = now - rec.at_s
            if state in (DEAD, LEFT):
                pending = rec.pending_region if ev.pool == "region" else rec.pending_fleet
                if slot.idx in pending:
                    del pending[slot.idx]
                    self._maybe_done(rec, now)
        if state == DEAD:
            self._judge_death(now, slot, ev)

    def _judge_death(self, now: float, obs: NodeSlot, ev: MemberChanged) -> None:
        fleet = self.fleet
        subj_idx = fleet.idx_of.get(ev.node_id)
        if subj_idx is None:
            return
        subj = fleet.slots[subj_idx]
        # A frozen (stalled) process is alive: declaring it dead is a false death too.
        if not subj.up or ev.node_id in fleet.revoked_ids:
            return  # (a revoked node is expelled on purpose)
        if ev.incarnation <= self.life_floor[subj_idx] or ev.addr != subj.addr:
            return  # a notice about an earlier life of a restarted node
        pair = (obs.idx, subj_idx)
        if fleet.leaving[subj_idx]:
            self.leave_seen_dead_pairs[pair] = None
            return
        if fleet.network.blocked(obs.idx, subj_idx):
            self.partition_dead_pairs[pair] = None
            return
        if self._after_heal(now, ev.pool):
            # Within one suspicion maximum of the healing: across the old split it is the
            # split's own doing; on the subject's own side it is a death notice from the
            # other side arriving with the healing (an echo), refuted once it is heard.
            if self._split_apart(pair):
                self.partition_dead_pairs[pair] = None
            else:
                self.echo_dead_pairs[pair] = None
            return
        if pair not in self.false_dead_pairs:
            self.false_dead_pairs[pair] = now
            if len(self.false_dead_examples) < 20:
                self.false_dead_examples.append(
                    f"t={now:.3f}s {obs.node_id} declared {subj.node_id} dead in pool {ev.pool} "
                    f"(incarnation {ev.incarnation})"
                )

    def _after_heal(self, now: float, pool: str) -> bool:
        """True within one suspicion maximum after a partition healed."""
        return self._healed_at_s is not None and now - self._healed_at_s <= self.suspicion_max_s(pool)

    def _split_apart(self, pair: tuple[int, int]) -> bool:
        """True if the pair was on two sides of the last partition."""
        a, b = pair
        groups = self._split_group
        return a < len(groups) and b < len(groups) and groups[a] != groups[b]

    def suspicion_max_s(self, pool: str) -> float:
        """The longest a suspicion can last in a pool of this fleet (Lifeguard's upper bound)."""
        fleet = self.fleet
        if pool == "region":
            cfg = fleet.region_config
            size = max((len(r) for r in fleet.by_region), default=1)
        else:
            cfg = fleet.fleet_config
            size = GATEWAYS_PER_REGION * fleet.region_count
        return (
            suspicion_timeout_s(cfg.suspicion_mult, size, cfg.probe_interval_s)
            * cfg.suspicion_max_timeout_mult
        )

    def _maybe_done(self, rec: CrashRecord, now: float) -> None:
        if rec.all_dead_s is None and not rec.pending_region and not rec.pending_fleet:
            rec.all_dead_s = now - rec.at_s
            self._open_crashes.pop(rec.node_id, None)

    # -- convergence -----------------------------------------------------------------------

    def converged(self, pools: str = "all") -> bool:
        """Every live node sees every live member of its pools alive (pools "region" or "all").

        "all" adds the fleet pool: with more than one region, each region with
        live nodes has 1 to GATEWAYS_PER_REGION gateways, and every gateway sees
        every other one alive in the fleet pool. Suspect counts as alive when the
        metrics were built with tolerate_suspect (lossy networks, stalls).
        """
        changes = self.views.changes
        cached = self._convergence_cache.get(pools)
        if cached is not None and cached[0] == changes:
            return cached[1]
        result = self._region_converged() and (pools == "region" or self._fleet_converged())
        self._convergence_cache[pools] = (changes, result)
        return result

    def settled_at_s(self, pools: str = "all") -> float:
        """When the last change towards convergence happened (a member turned alive, a gateway changed)."""
        views = self.views
        if pools == "region":
            return views.last_region_alive_s
        return max(views.last_region_alive_s, views.last_fleet_change_s)

    def _region_converged(self) -> bool:
        fleet = self.fleet
        return all(
            self._all_see_all(fleet.live(region), self.views.region) for region in range(fleet.region_count)
        )

    def _all_see_all(self, members: list[int], views: list[dict[str, MemberState]]) -> bool:
        """Every one of `members` holds every other as alive (or suspect, where tolerated) in `views`."""
        return first_unseen(members, self.fleet.slots, views.__getitem__, self._ok_states) is None

    def _fleet_converged(self) -> bool:
        fleet = self.fleet
        if fleet.region_count == 1:
            return True
        slots = fleet.slots
        gateways = [i for i in fleet.live() if self.views.gateway[i]]
        per_region = [0] * fleet.region_count
        for g in gateways:
            per_region[slots[g].region] += 1
        for region in range(fleet.region_count):
            if fleet.live(region) and not 1 <= per_region[region] <= GATEWAYS_PER_REGION:
                return False
        return self._all_see_all(gateways, self.views.fleet)

    # -- results ---------------------------------------------------------------------------

    def detection(self) -> dict[str, Any]:
        """detection: {crashed, undetected, first_suspect_s, all_dead_s}."""
        first = [r.first_suspect_s if r.first_suspect_s is not None else math.inf for r in self.crashes]
        all_dead = [r.all_dead_s if r.all_dead_s is not None else math.inf for r in self.crashes]
        return {
            "crashed": len(self.crashes),
            "undetected": sum(1 for r in self.crashes if r.all_dead_s is None),
            "first_suspect_s": stats(first),
            "all_dead_s": stats(all_dead),
        }

    def dissemination(self, gossip_interval_s: float) -> dict[str, Any] | None:
        """dissemination: per-node delivery delays of the injected broadcast ({p50, p99, max}).

        `max` is the time until every node had it; nodes that never did count as
        infinite (null). Only nodes up from the injection to the end count.
        """
        b = self.broadcast
        if b is None:
            return None
        return self._spread_stats(b, gossip_interval_s)

    def desired(self, gossip_interval_s: float) -> dict[str, Any] | None:
        """desired: the first published record's spread, as dissemination's; then each update's.

        `updates` holds the same figures for every later record (by publishing
        order), and final_version_everywhere says whether every live node ends
        holding the last published version of each slot.
        """
        if not self.record_tracks:
            return None
        first, *later = self.record_tracks
        out = self._spread_stats(first, gossip_interval_s)
        out["version"] = first.version
        out["updates"] = [
            {
                "version": t.version,
                "at_s": t.at_s,
                **self._spread_stats(t, gossip_interval_s),
            }
            for t in later
        ]
        out["final_version_everywhere"] = self.final_versions_everywhere()
        return out

    def final_versions_everywhere(self) -> bool:
        """Every live node holds, right now, the last published version of every tracked slot."""
        last: dict[tuple[str, str], int] = {}
        for t in self.record_tracks:
            last[t.slot] = t.version
        fleet = self.fleet
        for idx in fleet.live():
            core = fleet.core(idx)
            for (kind, key), version in last.items():
                if held_version(core, kind, key) != version:
                    return False
        return True

    def _spread_stats(self, spread: Spread, gossip_interval_s: float) -> dict[str, Any]:
        """{s_all, rounds_all, region_s_all, missing} over nodes up from its publication to the end."""
        fleet = self.fleet
        origin_region = fleet.slots[spread.origin_idx].region
        delays: list[float] = []
        region_delays: list[float] = []
        for idx in spread.live_at_start:
            slot = fleet.slots[idx]
            if not slot.up or fleet.crashed[idx] or fleet.left[idx]:
                continue
            t = spread.delivered_s.get(idx)
            d = t - spread.at_s if t is not None else math.inf
            delays.append(d)
            if slot.region == origin_region:
                region_delays.append(d)
        return {
            "s_all": stats(delays),
            "rounds_all": stats([d / gossip_interval_s for d in delays], 2),
            "region_s_all": stats(region_delays),
            "missing": sum(1 for d in delays if math.isinf(d)),
        }

    def traffic(self, now: float) -> dict[str, Any] | None:
        """traffic: outbound bytes and messages (envelope included) per node per second."""
        if self._window_start_s is None:
            return None
        bytes_rates, msgs_rates = self._rates(now, self._window)
        return {
            "window_s": round(now - self._window_start_s, TIME_DIGITS),
            "bytes_per_node_s": stats(bytes_rates, RATE_DIGITS),
            "msgs_per_node_s": stats(msgs_rates, RATE_DIGITS),
        }

    def warmup_traffic(self) -> dict[str, Any] | None:
        """Outbound bytes per node per second from the start to the traffic window."""
        if self._window_start_s is None:
            return None
        zero = [(0, 0, 0.0)] * len(self._window)
        rates, _ = self._rates(self._window_start_s, zero, end=self._window)
        return stats(rates, RATE_DIGITS)

    def _rates(
        self,
        now: float,
        start: list[tuple[int, int, float]],
        end: list[tuple[int, int, float]] | None = None,
    ) -> tuple[list[float], list[float]]:
        bytes_rates: list[float] = []
        msgs_rates: list[float] = []
        slots = self.fleet.slots
        for idx, slot in enumerate(slots):
            if end is not None:
                if idx >= len(end):
                    break
                b1, m1, up1 = end[idx]
            else:
                b1, m1, up1 = slot.tx_bytes, slot.tx_msgs, slot.uptime_until(now)
            b0, m0, up0 = start[idx] if idx < len(start) else (0, 0, 0.0)
            uptime = up1 - up0
            if uptime < TRAFFIC_UPTIME_MIN_S:
                continue
            bytes_rates.append((b1 - b0) / uptime)
            msgs_rates.append((m1 - m0) / uptime)
        return bytes_rates, msgs_rates
