"""Properties of the seeded network model."""

from __future__ import annotations

import random
import statistics

import pytest

from sim.network import INTER_MEDIAN_S, INTRA_MEDIAN_S, Network
from tests.sim.test_engine import make_engine


@pytest.mark.parametrize("p", [0.0, 0.05, 0.10, 0.30])
def test_loss_rate_is_close_to_p(p: float) -> None:
    net = Network(random.Random(1), 1, loss=p, duplicate=0.0)
    draws = 40_000
    lost = sum(1 for _ in range(draws) if net.copies() == 0)
    # Four standard deviations of a binomial.
    assert abs(lost / draws - p) <= 4 * (p * (1 - p) / draws) ** 0.5 + 1e-9


def test_duplication_rate_is_close_to_its_probability() -> None:
    net = Network(random.Random(2), 1, loss=0.1, duplicate=0.02)
    draws = 40_000
    dups = sum(1 for _ in range(draws) if net.copies() == 2)
    assert abs(dups / draws - 0.02) < 0.004


def test_latency_is_lan_like_in_a_region_and_wan_like_between_regions() -> None:
    net = Network(random.Random(3), 4)
    intra = [net.delay_s(1, 1) for _ in range(5000)]
    inter = [net.delay_s(0, 3) for _ in range(5000)]
    assert INTRA_MEDIAN_S[0] * 0.8 < statistics.median(intra) < INTRA_MEDIAN_S[1] * 1.2
    assert INTER_MEDIAN_S[0] * 0.8 < statistics.median(inter) < INTER_MEDIAN_S[1] * 1.2
    assert min(intra) > 0.0
    # Symmetric and fixed per region pair.
    assert net.median_s[0][3] == net.median_s[3][0]
    assert len({round(net.median_s[r][q], 9) for r in range(4) for q in range(4) if r != q}) == 6


def test_same_seed_same_network() -> None:
    a, b = Network(random.Random(4), 5, loss=0.1), Network(random.Random(4), 5, loss=0.1)
    assert a.median_s == b.median_s
    assert [a.delay_s(0, 1) for _ in range(100)] == [b.delay_s(0, 1) for _ in range(100)]
    assert [a.copies() for _ in range(100)] == [b.copies() for _ in range(100)]


def test_partitioned_packets_are_never_delivered_and_healing_restores_delivery() -> None:
    engine, cores, _ = make_engine(21, 6, loss=0.0)
    left, right = [0, 1, 2], [3, 4, 5]
    engine.run_until(2.0)
    engine.network.partition([left, right])
    split_at = engine.now
    engine.run_until(20.0)
    for i, core in enumerate(cores):
        others = right if i in left else left
        other_addrs = [cores[j].addr for j in others]
        crossed = [
            entry
            for entry in core.log
            if entry[0] > split_at and entry[1] == "dgram" and entry[2].split(" ")[0] in other_addrs
        ]
        assert crossed == [], f"node {i} received across the partition"
    assert engine.drops["partition"] > 0
    engine.network.heal()
    healed_at = engine.now
    engine.run_until(30.0)
    assert any(
        entry[0] > healed_at and entry[1] == "dgram" and entry[2].startswith(cores[3].addr)
        for entry in cores[0].log
    )


def test_packets_in_flight_when_a_partition_starts_are_dropped() -> None:
    engine, cores, _ = make_engine(22, 2, regions=2)  # ~20-80 ms between the two
    engine.call_node_at(1.0, 0, lambda core, now: core.send(cores[1].addr, "late:1"))
    engine.call_at(1.001, lambda now: engine.network.partition([[0], [1]]))
    engine.run_until(2.0)
    assert not any("late:1" in text for _, _, text in cores[1].log)


def test_duplicates_and_reordering_happen() -> None:
    engine, cores, _ = make_engine(23, 2, duplicate=0.05)
    burst = 400

    def send_burst(core: object, now: float) -> None:
        for k in range(burst):
            cores[0].send(cores[1].addr, f"seq:{k}")

    engine.call_node_at(1.0, 0, send_burst)
    engine.run_until(2.0)
    got = [
        int(text.rsplit(":", 1)[1]) for _, kind, text in cores[1].log if kind == "dgram" and "seq:" in text
    ]
    assert len(got) > burst, "some packets were duplicated"
    assert engine.duplicated == len(got) - burst
    assert got != sorted(got), "jitter reordered some packets"
    assert sorted(set(got)) == list(range(burst))
