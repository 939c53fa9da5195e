"""The metrics collector (mesh/service/metrics.py), read through prometheus_client's own
exposition and text parser, as Prometheus would scrape it."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mesh.service.metrics import (
    LABEL_VALUES_MAX,
    NodeCollector,
    Readings,
    bounded,
    election_source,
    node_families,
    node_registry,
)


def readings(**changes: Any) -> Readings:
    base: dict[str, Any] = {
        "node_id": "n1",
        "region": "north",
        "is_gateway": True,
        "incarnation": 3,
        "member_states": {"region": ["alive", "alive", "suspect", "dead"], "fleet": ["alive"]},
        "core_counters": {
            "region.probes": 40,
            "fleet.probes": 7,
            "region.suspicions": 2,
            "region.drop_not_admitted": 5,
            "fleet.drop_not_admitted": 1,
            "state.drop_stale": 9,
            "node.drop_app_unsent": 2,
            "drop_packet_too_large": 4,
            "region.refutations": 1,
            "region.probe_failures": 3,
        },
        "runtime_counters": {
            "datagrams_in": 100,
            "datagrams_out": 110,
            "bytes_in": 5000,
            "bytes_out": 6000,
            "streams_in": 3,
            "streams_out": 4,
            "drop_stream_timeout": 6,
        },
        "records_by_kind": {"inventory": 4, "admission": 4, "desired": 1},
        "tombstones": 2,
        "events_by_kind": {"member_joined": 3, "member_dead": 1},
        "events_held": 4,
        "commands_accepted": {"deploy": 2},
        "join_refusals": 8,
        "event_streams_open": 1,
        "stream_counters": {"stream_opened": 3, "stream_dropped_slow": 1},
        "network_key_epoch": 2,
    }
    base.update(changes)
    return Readings(**base)


def scrape(collector: NodeCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> labels -> value, from the text a scrape gets, parsed by prometheus_client."""
    text = generate_latest(node_registry(collector)).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_every_family_with_its_values() -> None:
    got = scrape(NodeCollector([lambda: node_families(readings())]))
    assert got["murmur_node_info"] == {(("node_id", "n1"), ("region", "north")): 1}
    assert got["murmur_gateway"][()] == 1
    members = got["murmur_members"]
    assert members[(("pool", "region"), ("state", "alive"))] == 2
    assert members[(("pool", "region"), ("state", "suspect"))] == 1
    assert members[(("pool", "region"), ("state", "left"))] == 0
    assert members[(("pool", "fleet"), ("state", "alive"))] == 1
    assert got["murmur_probes_total"] == {(("pool", "region"),): 40, (("pool", "fleet"),): 7}
    assert got["murmur_suspicions_total"][(("pool", "region"),)] == 2
    assert got["murmur_probe_failures_total"][(("pool", "region"),)] == 3
    assert got["murmur_gossip_bytes_total"] == {(("direction", "in"),): 5000, (("direction", "out"),): 6000}
    assert got["murmur_gossip_datagrams_total"][(("direction", "out"),)] == 110
    assert got["murmur_gossip_streams_total"][(("direction", "in"),)] == 3
    assert got["murmur_drops_total"] == {
        (("reason", "not_admitted"), ("source", "region")): 5,
        (("reason", "not_admitted"), ("source", "fleet")): 1,
        (("reason", "stale"), ("source", "state")): 9,
        (("reason", "app_unsent"), ("source", "node")): 2,
        (("reason", "packet_too_large"), ("source", "gossip")): 4,
        (("reason", "stream_timeout"), ("source", "runtime")): 6,
    }
    assert got["murmur_records"] == {
        (("kind", "admission"),): 4,
        (("kind", "desired"),): 1,
        (("kind", "inventory"),): 4,
    }
    assert got["murmur_record_tombstones"][()] == 2
    events = got["murmur_events_total"]
    assert events[(("kind", "member_joined"),)] == 3
    assert events[(("kind", "leader_elected"),)] == 0  # every kind from 0
    assert got["murmur_commands_accepted_total"][(("command", "deploy"),)] == 2
    assert got["murmur_commands_accepted_total"][(("command", "revoke"),)] == 0
    assert got["murmur_join_refusals_total"][()] == 8
    assert got["murmur_event_streams"][()] == 1
    assert got["murmur_event_streams_opened_total"][()] == 3
    assert got["murmur_event_streams_ended_total"] == {(("reason", "dropped_slow"),): 1}
    assert got["murmur_network_key_epoch"][()] == 2


def test_counters_are_read_at_scrape_time() -> None:
    counters = {"region.probes": 1}
    collector = NodeCollector([lambda: node_families(readings(core_counters=dict(counters)))])
    assert scrape(collector)["murmur_probes_total"][(("pool", "region"),)] == 1
    counters["region.probes"] = 5
    assert scrape(collector)["murmur_probes_total"][(("pool", "region"),)] == 5


def test_label_values_are_bounded_and_lower_snake() -> None:
    pairs = [(f"reason_{i:04d}", 1.0) for i in range(LABEL_VALUES_MAX + 50)]
    pairs += [('Evil"label\n', 2.0), ("x" * 100, 3.0), ("other", 4.0)]
    kept = dict(bounded(pairs))
    assert len(kept) == LABEL_VALUES_MAX
    assert kept["other"] == 51 + 2 + 3 + 4
    assert sum(kept.values()) == sum(v for _, v in pairs)  # nothing lost, only folded
    counters = {f"region.drop_{chr(97 + i % 26) * (1 + i // 26)}": 1 for i in range(1000)}
    got = scrape(NodeCollector([lambda: node_families(readings(core_counters=counters))]))
    region_drops = [labels for labels in got["murmur_drops_total"] if ("source", "region") in labels]
    assert len(region_drops) == LABEL_VALUES_MAX


def test_nodes_in_one_process_have_registries_of_their_own() -> None:
    a = NodeCollector([lambda: node_families(readings(node_id="a"))])
    b = NodeCollector([lambda: node_families(readings(node_id="b"))])
    assert list(scrape(a)["murmur_node_info"]) == [(("node_id", "a"), ("region", "north"))]
    assert list(scrape(b)["murmur_node_info"]) == [(("node_id", "b"), ("region", "north"))]


class StubElection:
    class hard_state:  # stands for a HardState value
        term = 7

    def __init__(self, leader: str | None) -> None:
        self._leader = leader

    def leader(self) -> str | None:
        return self._leader

    def counters(self) -> dict[str, int]:
        return {"elections_won": 2, "votes_granted": 5}


def test_a_source_is_one_line_the_election_s_for_example() -> None:
    collector = NodeCollector([lambda: node_families(readings())])
    collector.add(election_source(StubElection("n1"), "n1"))
    got = scrape(collector)
    assert got["murmur_election_term"][()] == 7
    assert got["murmur_election_leader"][()] == 1
    assert got["murmur_election_leader_known"][()] == 1
    assert got["murmur_election_events_total"][(("event", "votes_granted"),)] == 5
    follower = NodeCollector([election_source(StubElection("n2"), "n1")])
    assert scrape(follower)["murmur_election_leader"][()] == 0
    leaderless = NodeCollector([election_source(StubElection(None), "n1")])
    assert scrape(leaderless)["murmur_election_leader_known"][()] == 0
