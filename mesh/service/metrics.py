"""`GET /metrics`: this node's counters in the Prometheus text format (prometheus_client).

Nothing is counted twice and the hot path is untouched: the cores and the runtime keep
their plain counters as always, and a custom collector reads them when Prometheus
scrapes (`NodeCollector`). Each node has its own CollectorRegistry (never the
process-global one), so several nodes in one process (the tests) do not collide.

A source is a function returning metric families; `NodeCollector.add(source)` is
the one line that adds one (the election's, `election_source`, once launch.py hosts
the election core; placement's and the replicas' when they exist: docs/observability.md).

Label values come from fixed sets: pools and member states are enums, drop reasons
and record kinds are string literals in the code (`drop_<reason>` counter keys), event
kinds come from mesh/service/eventkinds.py's table. As a safety net against a future
bug, a label value that is not lower_snake, or beyond LABEL_VALUES_MAX of one family,
is folded into `other`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from mesh.service.eventkinds import COMMANDS, KINDS

POOLS = ("region", "fleet")
MEMBER_STATES = ("alive", "suspect", "dead", "left")
LABEL_VALUES_MAX = 256  # distinct values of one label in one family; the rest are "other"
_LABEL_VALUE = re.compile(r"[a-z0-9_]{1,64}")
# Where a drop was counted: the prefix of the core's counter key (docs/core-api.md), or the runtime.
_DROP_SOURCES = {"region.": "region", "fleet.": "fleet", "state.": "state", "node.": "node"}

Source = Callable[[], Iterable[Metric]]


@dataclass(frozen=True, slots=True)
class Readings:
    """What one scrape reads from the node (mesh/service/agent.py `metric_readings`)."""

    node_id: str
    region: str
    is_gateway: bool
    incarnation: int
    member_states: Mapping[str, Sequence[str]]  # pool -> the state of every member, itself included
    core_counters: Mapping[str, int]  # node.counters: prefixed by pool, state., node.
    runtime_counters: Mapping[str, int]
    records_by_kind: Mapping[str, int]  # live records held, by kind
    tombstones: int
    events_by_kind: Mapping[str, int]
    events_held: int
    commands_accepted: Mapping[str, int]
    join_refusals: int
    event_streams_open: int
    stream_counters: Mapping[str, int] = field(default_factory=dict)  # stream_<what>
    network_key_epoch: int = 0


def bounded(values: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """(label value, number) pairs with at most LABEL_VALUES_MAX distinct values, in sorted order:
    a value that is not lower_snake (at most 64 characters), or one beyond the limit, adds to "other"."""
    totals: dict[str, float] = {}
    for value, number in values:
        label = value if _LABEL_VALUE.fullmatch(value) and value != "other" else "other"
        totals[label] = totals.get(label, 0) + number
    kept: dict[str, float] = {}
    other = totals.pop("other", 0.0)
    for label in sorted(totals):
        if len(kept) < LABEL_VALUES_MAX - 1:
            kept[label] = totals[label]
        else:
            other += totals[label]
    if other:
        kept["other"] = other
    return sorted(kept.items())


def _drops(readings: Readings) -> Iterator[tuple[str, str, int]]:
    """(source, reason, count) of every drop counter: the cores' and the runtime's."""
    for key, count in readings.core_counters.items():
        prefix, dot, name = key.rpartition(".")
        if not name.startswith("drop_"):
            continue
        source = _DROP_SOURCES.get(prefix + dot, "gossip") if dot else "gossip"
        yield source, name.removeprefix("drop_"), count
    for key, count in readings.runtime_counters.items():
        if key.startswith("drop_"):
            yield "runtime", key.removeprefix("drop_"), count


def node_families(readings: Readings) -> list[Metric]:
    """The metric families of one node's readings (docs/observability.md lists them)."""
    out: list[Metric] = []
    info = GaugeMetricFamily("murmur_node_info", "This node: always 1", labels=["node_id", "region"])
    info.add_metric([readings.node_id, readings.region], 1)
    out.append(info)
    out.append(
        GaugeMetricFamily(
            "murmur_gateway", "1 if this node is a gateway of its region", value=int(readings.is_gateway)
        )
    )
    out.append(
        GaugeMetricFamily("murmur_incarnation", "This node's SWIM incarnation", value=readings.incarnation)
    )

    members = GaugeMetricFamily(
        "murmur_members",
        "Members in this node's view, by pool and state (itself included)",
        labels=["pool", "state"],
    )
    for pool in POOLS:
        states = list(readings.member_states.get(pool, ()))
        for state in MEMBER_STATES:
            members.add_metric([pool, state], states.count(state))
    out.append(members)

    per_pool = (
        ("murmur_probes", "Probes this node started (one member pinged per probe interval)", "probes"),
        ("murmur_probe_failures", "Probes of an alive member that went unanswered", "probe_failures"),
        ("murmur_suspicions", "Members this node started to suspect", "suspicions"),
        ("murmur_refutations", "Suspicions of this node that it refuted", "refutations"),
        ("murmur_members_declared_dead", "Suspects this node declared dead", "declared_dead"),
    )
    for name, doc, key in per_pool:
        family = CounterMetricFamily(name, doc, labels=["pool"])
        for pool in POOLS:
            family.add_metric([pool], readings.core_counters.get(f"{pool}.{key}", 0))
        out.append(family)

    runtime = readings.runtime_counters
    for name, doc, key in (
        ("murmur_gossip_datagrams", "Gossip datagrams received (in) and sent (out)", "datagrams"),
        ("murmur_gossip_bytes", "Sealed gossip datagram bytes received (in) and sent (out)", "bytes"),
        ("murmur_gossip_streams", "Gossip TCP exchanges (push-pull) answered (in) and made (out)", "streams"),
    ):
        family = CounterMetricFamily(name, doc, labels=["direction"])
        for direction in ("in", "out"):
            family.add_metric([direction], runtime.get(f"{key}_{direction}", 0))
        out.append(family)

    drops = CounterMetricFamily(
        "murmur_drops", "Inputs dropped, by where (source) and why (reason)", labels=["source", "reason"]
    )
    by_source: dict[str, list[tuple[str, float]]] = {}
    for source, reason, count in _drops(readings):
        by_source.setdefault(source, []).append((reason, count))
    for source in sorted(by_source):
        for reason, total in bounded(by_source[source]):
            drops.add_metric([source, reason], total)
    out.append(drops)

    records = GaugeMetricFamily(
        "murmur_records", "Live records held in the state store, by kind", labels=["kind"]
    )
    for kind, held in bounded(readings.records_by_kind.items()):
        records.add_metric([kind], held)
    out.append(records)
    out.append(
        GaugeMetricFamily(
            "murmur_record_tombstones", "Deleted records held (tombstones)", value=readings.tombstones
        )
    )

    events = CounterMetricFamily("murmur_events", "Events this node recorded, by kind", labels=["kind"])
    # Every kind and command from 0, so that rate() and absent() work before the first one.
    for kind, seen in bounded({**dict.fromkeys(KINDS, 0), **readings.events_by_kind}.items()):
        events.add_metric([kind], seen)
    out.append(events)
    out.append(
        GaugeMetricFamily(
            "murmur_events_held", "Events held in this node's event log", value=readings.events_held
        )
    )
    commands = CounterMetricFamily(
        "murmur_commands_accepted", "Operator commands this node accepted through its API", labels=["command"]
    )
    for command, accepted in bounded({**dict.fromkeys(COMMANDS, 0), **readings.commands_accepted}.items()):
        commands.add_metric([command], accepted)
    out.append(commands)
    out.append(
        CounterMetricFamily(
            "murmur_join_refusals",
            "Admissions this node refused (invites not valid)",
            value=readings.join_refusals,
        )
    )
    out.append(
        GaugeMetricFamily(
            "murmur_event_streams", "Open GET /v1/events/stream readers", value=readings.event_streams_open
        )
    )
    streams = readings.stream_counters
    out.append(
        CounterMetricFamily(
            "murmur_event_streams_opened",
            "Event streams this node opened",
            value=streams.get("stream_opened", 0),
        )
    )
    ended = CounterMetricFamily(
        "murmur_event_streams_ended",
        "Event streams this node refused (refused_full), cut off (dropped_slow) or saw end (client_gone, "
        "closed_shutdown)",
        labels=["reason"],
    )
    for what, total_ended in bounded(
        (k.removeprefix("stream_"), v)
        for k, v in streams.items()
        if k.startswith("stream_") and k != "stream_opened"
    ):
        ended.add_metric([what], total_ended)
    out.append(ended)
    out.append(
        GaugeMetricFamily(
            "murmur_network_key_epoch",
            "Epoch of the newest network key this node holds",
            value=readings.network_key_epoch,
        )
    )
    return out


class ElectionView(Protocol):
    """What the election source reads (consensus.election.ElectionCore)."""

    @property
    def hard_state(self) -> object: ...
    def leader(self) -> str | None: ...
    def counters(self) -> dict[str, int]: ...


def election_source(core: ElectionView, node_id: str) -> Source:
    """The election's metrics: add with `collector.add(election_source(core, node_id))`."""

    def families() -> list[Metric]:
        # hard_state is a consensus.hardstate.HardState; read loosely, so stubs do in tests.
        term = getattr(core.hard_state, "term", 0)
        leader = core.leader()
        out: list[Metric] = [
            GaugeMetricFamily("murmur_election_term", "The election term this node is in", value=term),
            GaugeMetricFamily(
                "murmur_election_leader",
                "1 if this node believes it leads its region",
                value=int(leader == node_id),
            ),
            GaugeMetricFamily(
                "murmur_election_leader_known",
                "1 if this node knows a leader of its region",
                value=int(bool(leader)),
            ),
        ]
        events = CounterMetricFamily(
            "murmur_election_events", "The election core's counters", labels=["event"]
        )
        for key, count in bounded(core.counters().items()):
            events.add_metric([key], count)
        out.append(events)
        return out

    return families


class PlacementView(Protocol):
    """What the placement source reads (inference.placing.PlacementCore)."""

    def replicas(self) -> Sequence[Any]: ...
    def counters(self) -> dict[str, int]: ...


REPLICA_STATES = ("assigned", "loading", "ready", "failed", "provisional")


def placement_source(core: PlacementView, moves: Mapping[str, int]) -> Source:
    """Placement's metrics: the applied placement's replicas by state (as this node sees its
    region), the replicas moved by the placements applied here (`moves`: added, moved,
    removed, kept by mesh/service/placements.py) and the core's counters."""

    def families() -> list[Metric]:
        states = {state: 0 for state in REPLICA_STATES}
        for view in core.replicas():
            state = str(getattr(view, "state", "other"))
            states[state] = states.get(state, 0) + 1
        by_state = GaugeMetricFamily(
            "murmur_placement_replicas",
            "Replicas of this node's region in its applied placement, by state",
            labels=["state"],
        )
        for state, count in bounded(states.items()):
            by_state.add_metric([state], count)
        moved = CounterMetricFamily(
            "murmur_placement_moves",
            "Replica changes of the placements applied here, by kind",
            labels=["kind"],
        )
        for kind, count in bounded(moves.items()):
            moved.add_metric([kind], count)
        events = CounterMetricFamily(
            "murmur_placement_events", "The placement core's counters", labels=["event"]
        )
        for key, count in bounded(core.counters().items()):
            events.add_metric([key], count)
        return [by_state, moved, events]

    return families


class NodeCollector:
    """A prometheus_client collector reading its sources at scrape time."""

    def __init__(self, sources: Sequence[Source] = ()) -> None:
        self._sources: list[Source] = list(sources)

    def add(self, source: Source) -> None:
        """Add a source of metric families (read at every scrape)."""
        self._sources.append(source)

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source()


def node_registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry of its own for one node (never prometheus_client's global REGISTRY)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
