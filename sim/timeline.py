"""The time series behind `murmur sim --report`: what one run looked like over time.

sim/run.py registers a Timeline only when a run is asked for its pictures, so a
run without --report does no extra work. The Timeline only reads: it samples
the fleet on its own clock calls (which draw nothing and change nothing), and
run.py leaves those calls out of the report's event count, so a run's JSON is
the same with or without --report (except wall_s and peak_rss_bytes).

`series(metrics, end_s)` returns one JSON-able dict, the same for the same seed:

- spread: per broadcast (the injected one, then each tracked signed record), the
  sorted delays (s) after which each node up from its sending to the end had it,
  and how many such nodes there were (`nodes`; the rest never had it);
- detection: per crash, the seconds to its first suspicion and until every
  live node of its pools held it dead (null: never);
- traffic: every TRAFFIC_SAMPLE_S, the median, p99 and max of the bytes/s each
  node up through the interval sent;
- replicas: every REPLICA_SAMPLE_S, per region, the deployment set's replicas
  ready and on their way (assigned or loading) on live nodes; the desired count;
- leaders: per region, segments [from_s, to_s, leader] where leader is the node
  holding a lease, "" for none, null while the region has no live node (sampled
  every LEADER_SAMPLE_S, the lease as sim/leaders.py reads it); and `doubles`,
  [t_s, region, term] whenever a second node claimed one region-term;
- marks: [t_s, what] of the faults that happened (crashes, stalls, partitions,
  heals), the first MARKS_MAX of them.
"""

from __future__ import annotations

from typing import Any

from consensus.events import LeaderChanged
from gossip.events import Event
from inference.assignments import ReplicaState
from inference.manifest import Deployment
from sim.fleet import Fleet
from sim.metrics import Metrics, Spread
from sim.observer import Observer
from sim.report import RATE_DIGITS, TIME_DIGITS, percentile
from sim.slot import NodeSlot

TRAFFIC_SAMPLE_S = 1.0
REPLICA_SAMPLE_S = 0.5
LEADER_SAMPLE_S = 0.1
# A node up for less than this share of a traffic interval has no meaningful rate in it.
TRAFFIC_UPTIME_SHARE = 0.5
# Fault marks kept for the charts (churn and stalls could make thousands).
MARKS_MAX = 40
ON_THE_WAY = (ReplicaState.ASSIGNED, ReplicaState.LOADING, ReplicaState.PROVISIONAL)


def _r(t: float) -> float:
    return round(t, TIME_DIGITS)


def _maybe(t: float | None) -> float | None:
    return None if t is None else _r(t)


class Timeline(Observer):
    """Samples a running fleet for the pictures (see the module docstring)."""

    def __init__(self, fleet: Fleet, deployments: list[Deployment], *, end_s: float) -> None:
        self.fleet = fleet
        self.end_s = end_s
        self.names = sorted(d.name for d in deployments)
        self.desired = [sum(d.replicas.for_region(name) for d in deployments) for name in fleet.region_names]
        # The clock calls this timeline scheduled: run.py leaves them out of the report's event count.
        self.polls = 0
        self._tx: list[tuple[int, float]] = []  # (bytes sent, uptime) per node at the last traffic sample
        self._traffic: dict[str, list[float]] = {"t_s": [], "p50": [], "p99": [], "max": []}
        self._replicas: dict[str, Any] = {"t_s": [], "ready": [], "on_the_way": []}
        # Per region index: the nodes whose latest LeaderChanged names themselves.
        self._claiming: list[dict[int, None]] = [{} for _ in range(fleet.region_count)]
        self._claims: dict[tuple[str, int, str, int], list[str]] = {}
        self._segments: list[list[list[Any]]] = [[] for _ in range(fleet.region_count)]
        self._doubles: list[list[Any]] = []
        self._marks: list[list[Any]] = []
        for at_s, fn in ((0.0, self._sample_leaders), (0.0, self._sample_replicas)):
            self._call(at_s, fn)
        self._call(TRAFFIC_SAMPLE_S, self._sample_traffic)

    def _call(self, at_s: float, fn: Any) -> None:
        if at_s <= self.end_s:
            self.polls += 1
            self.fleet.engine.call_at(at_s, fn)

    # -- faults and events -------------------------------------------------------------

    def _mark(self, now: float, what: str) -> None:
        last = self._marks[-1] if self._marks else None
        if last is not None and last[0] == _r(now) and last[1] == what:
            return
        if len(self._marks) < MARKS_MAX:
            self._marks.append([_r(now), what])

    def on_crash(self, now: float, idx: int) -> None:
        self._mark(now, "crash")

    def on_stall(self, now: float, idx: int, duration_s: float) -> None:
        self._mark(now, "stall")

    def on_partition(self, groups: list[int]) -> None:
        self._mark(self.fleet.now, "partition")

    def on_heal(self, now: float) -> None:
        self._mark(now, "heal")

    def on_down(self, now: float, idx: int) -> None:
        self._claiming[self.fleet.slots[idx].region].pop(idx, None)

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
        claimers = self._claims.setdefault(key, [])
        if slot.node_id not in claimers:
            claimers.append(slot.node_id)
            if len(claimers) > 1:
                self._doubles.append([_r(now), slot.region, event.term])

    # -- samples -----------------------------------------------------------------------

    def _sample_leaders(self, now: float) -> None:
        fleet = self.fleet
        slots, cores = fleet.slots, fleet.elections
        for region in range(fleet.region_count):
            leader: str | None = None
            if fleet.live(region):
                leader = ""
                for idx in self._claiming[region]:
                    slot = slots[idx]
                    if slot.up and cores[slot.node_id].is_leader(now):
                        leader = slot.node_id
                        break
            segments = self._segments[region]
            if segments and segments[-1][2] == leader:
                segments[-1][1] = _r(now)
            else:
                if segments:
                    segments[-1][1] = _r(now)
                segments.append([_r(now), _r(now), leader])
        self._call(now + LEADER_SAMPLE_S, self._sample_leaders)

    def _sample_replicas(self, now: float) -> None:
        fleet = self.fleet
        ready = [0] * fleet.region_count
        on_the_way = [0] * fleet.region_count
        if fleet.placing_on:
            wanted = set(self.names)
            for region in range(fleet.region_count):
                for idx in fleet.live(region):
                    core = fleet.placements.get(fleet.slots[idx].node_id)
                    for replica in core.own_replicas() if core is not None else ():
                        if replica.deployment not in wanted:
                            continue
                        if replica.state is ReplicaState.READY:
                            ready[region] += 1
                        elif replica.state in ON_THE_WAY:
                            on_the_way[region] += 1
        self._replicas["t_s"].append(_r(now))
        self._replicas["ready"].append(ready)
        self._replicas["on_the_way"].append(on_the_way)
        self._call(now + REPLICA_SAMPLE_S, self._sample_replicas)

    def _sample_traffic(self, now: float) -> None:
        rates: list[float] = []
        previous = self._tx
        current: list[tuple[int, float]] = []
        for idx, slot in enumerate(self.fleet.slots):
            sent, up = slot.tx_bytes, slot.uptime_until(now)
            current.append((sent, up))
            sent0, up0 = previous[idx] if idx < len(previous) else (0, 0.0)
            if up - up0 >= TRAFFIC_UPTIME_SHARE * TRAFFIC_SAMPLE_S:
                rates.append((sent - sent0) / (up - up0))
        self._tx = current
        traffic = self._traffic
        traffic["t_s"].append(_r(now))
        if rates:
            rates.sort()
            traffic["p50"].append(round(percentile(rates, 50), RATE_DIGITS))
            traffic["p99"].append(round(percentile(rates, 99), RATE_DIGITS))
            traffic["max"].append(round(rates[-1], RATE_DIGITS))
        else:
            for key in ("p50", "p99", "max"):
                traffic[key].append(0.0)
        self._call(now + TRAFFIC_SAMPLE_S, self._sample_traffic)

    # -- the end -----------------------------------------------------------------------

    def _spread(self, label: str, spread: Spread) -> dict[str, Any]:
        fleet = self.fleet
        delays: list[float] = []
        nodes = 0
        for idx in spread.live_at_start:
            slot = fleet.slots[idx]
            # As the report's dissemination figures: nodes up from the sending to the end.
            if not slot.up or fleet.crashed[idx] or fleet.left[idx]:
                continue
            nodes += 1
            t = spread.delivered_s.get(idx)
            if t is not None:
                delays.append(_r(t - spread.at_s))
        return {"label": label, "at_s": _r(spread.at_s), "nodes": nodes, "delays_s": sorted(delays)}

    def series(self, metrics: Metrics, end_s: float) -> dict[str, Any]:
        """Every series of the run (the module docstring says what each holds)."""
        spread: list[dict[str, Any]] = []
        if metrics.broadcast is not None:
            spread.append(self._spread("broadcast", metrics.broadcast))
        for track in metrics.record_tracks:
            spread.append(self._spread(f"{track.slot[0]} record v{track.version}", track))
        for segments in self._segments:
            if segments:
                segments[-1][1] = _r(end_s)
        return {
            "end_s": _r(end_s),
            "regions": list(self.fleet.region_names),
            "spread": spread,
            "detection": {
                "first_suspect_s": [_maybe(c.first_suspect_s) for c in metrics.crashes],
                "all_dead_s": [_maybe(c.all_dead_s) for c in metrics.crashes],
            },
            "traffic": self._traffic,
            "replicas": {**self._replicas, "desired": self.desired, "deployments": self.names},
            "leaders": {"segments": self._segments, "doubles": self._doubles},
            "marks": self._marks,
        }
