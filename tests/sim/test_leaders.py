"""Region leaders in whole simulated fleets: one leader per term, a new one after a crash, bounded."""

from __future__ import annotations

import random

import pytest

from consensus.hardstate import MemoryStore
from gossip.config import LAN, WAN
from sim.fleet import Fleet
from sim.invariants import Invariants
from sim.leaders import LeaderWatch
from sim.network import Network
from sim.run import run_simulation

# A bound, not a timing of this machine: simulated seconds, the same on every run of a seed.
ELECTION_BOUND_S = 5.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_leader_crash_elects_one_new_leader_in_every_region(seed: int) -> None:
    report = run_simulation(60, 3, "leader-crash", seed, 25.0, 0.05)
    why = f"seed={seed}: {report['invariants']['violations']}"
    leaders = report["leaders"]
    assert report["invariants"]["violations"] == [], why
    assert "one_leader_per_region_term" in report["invariants"]["checked"]
    assert leaders["max_per_region_term"] == 1, why
    assert leaders["crashed_leaders"] == 3 and report["faults"]["crashes"] == 3, why
    assert leaders["elections_unfinished"] == 0, why
    assert leaders["election_s"]["max"] is not None and leaders["election_s"]["max"] <= ELECTION_BOUND_S, why


@pytest.mark.parametrize("seed", [1, 2])
def test_every_scenario_reports_leaders_and_a_partition_keeps_one_per_term(seed: int) -> None:
    report = run_simulation(40, 2, "partition", seed, 45.0, 0.05)
    leaders = report["leaders"]
    assert set(leaders) >= {"max_per_region_term", "election_s", "regions_without_leader_s_max"}
    assert leaders["max_per_region_term"] == 1, f"seed={seed}"
    assert report["invariants"]["violations"] == [], f"seed={seed}"
    steady = run_simulation(20, 2, "steady", seed, 20.0)["leaders"]
    assert steady["max_per_region_term"] == 1 and steady["regions_without_leader_s_max"] == 0.0


def _fleet(seed: int) -> tuple[Fleet, Invariants]:
    fleet = Fleet(
        seed=seed,
        region_count=1,
        network=Network(random.Random(seed), 1),
        region_config=LAN,
        fleet_config=WAN,
        rng=random.Random(seed),
    )
    invariants = fleet.observe(Invariants(fleet, seed, "test"))
    return fleet, invariants


def test_a_restarted_node_keeps_its_hard_state_and_votes() -> None:
    fleet, invariants = _fleet(3)
    fleet.observe(LeaderWatch(fleet, invariants, start_s=0.0))
    fleet.warm_start(5)
    fleet.engine.run_until(8.0)
    (leader,) = fleet.leaders(8.0)
    node_id = fleet.slots[leader].node_id
    store = fleet.election_stores[node_id]
    assert isinstance(store, MemoryStore) and store.state is not None
    held = store.state
    fleet.crash(leader)
    fleet.engine.run_until(12.0)
    assert fleet.leaders(12.0) and leader not in fleet.leaders(12.0)
    fleet.restart(leader, new_addr=False)
    # The new core starts from the hard state its earlier life saved, never below it.
    core = fleet.elections[node_id]
    assert core.hard_state.era == held.era and core.hard_state.term >= held.term
    fleet.engine.run_until(20.0)
    assert invariants.violations == []


def test_two_leaders_of_one_term_are_reported_with_the_seed() -> None:
    from consensus.config import Era
    from consensus.events import LeaderChanged

    fleet, invariants = _fleet(4)
    watch = fleet.observe(LeaderWatch(fleet, invariants, start_s=0.0))
    fleet.warm_start(3)
    a, b = fleet.slots[0], fleet.slots[1]
    watch.on_event(1.0, a, LeaderChanged("r0", Era(0, a.node_id), 5, a.node_id))
    watch.on_event(1.0, b, LeaderChanged("r0", Era(0, a.node_id), 5, b.node_id))
    assert invariants.violation_count == 1
    assert "one_leader_per_region_term" in invariants.violations[0] and "--seed 4" in invariants.violations[0]
    assert watch.report(2.0)["max_per_region_term"] == 2
