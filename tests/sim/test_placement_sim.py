"""Placement in whole simulated fleets (sim/placing.py, sim/placewatch.py, sim/swarm.py): the
deployment set is placed in every scenario, crashes are healed, a heal leaves no duplicates, the
invariant checkers catch a bad placement, and a swarm of seeds breaks no invariant."""

from __future__ import annotations

import random

import pytest

from consensus.config import Era
from gossip.config import LAN, WAN
from gossip.kinds import INVENTORY_KIND, PLACEMENT_KIND
from gossip.trust import StaticTrust
from inference import inventory
from inference.assignments import Assignment, ReplicaState
from inference.placement_record import PlacementRecord
from inference.placing import Applied
from inference.placing_ports import PlacementApplied
from inference.resources import NodeResources, node_from_inventory, requirement_problem
from inference.stamps import Stamp
from sim.cli import main
from sim.fleet import SIM_CLUSTER_ID, Fleet
from sim.invariants import Invariants
from sim.network import Network
from sim.placewatch import CHECK_CONSTRAINTS, CHECK_STALE, PlacementWatch
from sim.placing import FleetTrust, SimRuntime, deployment_set, device_inventory
from sim.run import run_simulation
from sim.scenarios import operator_key
from sim.swarmrun import parse_seeds, run_swarm

OPERATOR = operator_key(7)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_crash_is_healed_by_placement_meeting_every_constraint(seed: int) -> None:
    report = run_simulation(40, 3, "crash", seed, 40.0, 0.05)
    placement = report["placement"]
    why = f"seed={seed}: {placement} {report['invariants']['violations']}"
    assert report["invariants"]["violations"] == [], why
    assert {CHECK_STALE, CHECK_CONSTRAINTS} <= set(report["invariants"]["checked"])
    # The crash scenarios crash one replica holder per region: replicas are lost, and come back.
    assert placement["lost_replicas"] >= 3, why
    assert placement["unrestored"] == 0 and placement["replicas_restored_s"]["max"] is not None, why
    assert placement["constraint_violations"] == 0 and placement["stale_applied"] == 0, why
    assert placement["moved_others"] == 0, why
    assert placement["unplaced"] == 0, why


@pytest.mark.parametrize("seed", [1, 2])
def test_a_partition_heals_without_duplicate_replicas(seed: int) -> None:
    report = run_simulation(40, 3, "partition", seed, 60.0)
    placement = report["placement"]
    why = f"seed={seed}: {placement} {report['invariants']['violations']}"
    assert report["invariants"]["violations"] == [], why
    assert placement["duplicate_replicas_after_heal"] == 0, why
    assert placement["unplaced"] == 0, why


def test_every_scenario_places_the_deployment_set() -> None:
    report = run_simulation(20, 2, "steady", 4, 25.0)
    assert report["placement"]["inventories_published"] == 20
    assert report["placement"]["unplaced"] == 0
    assert report["placement"]["deployments"] == 3


def test_a_swarm_of_seeds_breaks_no_invariant() -> None:
    # 30 nodes, 3 regions, 45 s each. Seeds 1-10 draw every kind of fault (crash, process-crash,
    # partition, loss, stall, leader-crash) between them; the full sweep is `murmur sim --swarm
    # 1-200` (docs/simulation-placement.md), and seeds that once broke an invariant have their own
    # tests (test_gateway_swarm_seeds.py).
    summary = run_swarm(list(range(1, 11)))
    assert summary["seeds"] == 10
    assert summary["failed"] == [], summary["failed"]


def test_the_swarm_command_and_bad_seeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--swarm", "1", "--nodes", "12", "--duration", "25"]) == 0
    assert "swarm: 1 seeds, 0 broke an invariant" in capsys.readouterr().out
    assert main(["--swarm", "5-1"]) == 2
    assert main(["--swarm", "x"]) == 2


def test_seeds_parse() -> None:
    assert parse_seeds("1-3,7,9-10") == [1, 2, 3, 7, 9, 10]
    for bad in ("", "a", "3-1", "1-", "-4", "1-999999999"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_the_runtime_loads_then_serves_and_loads_again_after_a_drop() -> None:
    runtime = SimRuntime(random.Random(1))
    d = deployment_set()[0]
    assert runtime.replica_state(d, 10.0) is ReplicaState.LOADING
    assert runtime.replica_state(d, 13.0) is ReplicaState.READY  # loads take at most 3 s
    runtime.drop(d.name)
    assert runtime.replica_state(d, 13.0) is ReplicaState.LOADING


def test_the_fleet_trust_lets_a_node_write_only_its_own_node_records() -> None:
    node_keys = {"aa": b"\x01" * 32}
    trust = FleetTrust(StaticTrust(operators=[bytes(OPERATOR.verify_key)]), node_keys)
    assert trust.public_key("aa") == b"\x01" * 32
    assert trust.may_write("aa", INVENTORY_KIND, "aa") and trust.may_write("aa", PLACEMENT_KIND, "aa")
    assert not trust.may_write("aa", INVENTORY_KIND, "bb")
    assert not trust.may_write("aa", "desired", "aa")
    assert not trust.may_write("aa", "no-such-kind", "aa")
    assert trust.public_key("zz") is None


def test_some_nodes_miss_each_requirement_and_every_region_has_some_that_meet_it() -> None:
    nodes = [_node(p) for p in range(8)]
    for d in deployment_set():
        meet = [n for n in nodes if requirement_problem(n, d.requirements) is None]
        assert 2 <= len(meet) < len(nodes), d.name


def _node(position: int) -> NodeResources:
    inv = device_inventory(1, f"n{position}", "r0", position)
    doc = inventory.decode(inventory.encode(inv))
    assert doc is not None
    return node_from_inventory(f"n{position}", doc)


def _watched_fleet() -> tuple[Fleet, Invariants, PlacementWatch]:
    fleet = Fleet(
        seed=5,
        region_count=1,
        network=Network(random.Random(0), 1),
        region_config=LAN,
        fleet_config=WAN,
        rng=random.Random(1),
        trust=StaticTrust(operators=[bytes(OPERATOR.verify_key)], cluster_id=SIM_CLUSTER_ID),
    )
    invariants = fleet.observe(Invariants(fleet, 5, "replay"))
    watch = fleet.observe(PlacementWatch(fleet, invariants, deployment_set(), publish=True))
    fleet.warm_start(4)
    fleet.engine.run_until(3.0)
    return fleet, invariants, watch


def test_the_checkers_catch_a_stale_placement_and_a_broken_constraint() -> None:
    fleet, invariants, watch = _watched_fleet()
    slot = fleet.slots[0]
    era = (0, slot.node_id)
    watch.on_event(3.0, slot, PlacementApplied("r0", era, 2, 1, slot.node_id, ()))
    watch.on_event(3.0, slot, PlacementApplied("r0", era, 1, 5, slot.node_id, ()))
    assert watch.violations[CHECK_STALE] == 1
    assert any(CHECK_STALE in v and "--seed 5" in v for v in invariants.violations)
    # Every deployment on the one node that lacks all three requirements (position 3: no
    # accelerator, no camera label; memory drawn, so the big-memory one may fit).
    lacking = fleet.slots[3].node_id
    detect = deployment_set()[0]
    assert requirement_problem(watch.devices[lacking], detect.requirements) is not None
    record = PlacementRecord("r0", (0, 1), 1, (Assignment(detect.name, 0, lacking),))
    watch._check_constraints(3.0, slot, Applied(record, Stamp(Era(0, slot.node_id), 1, 1), slot.node_id))
    assert watch.violations[CHECK_CONSTRAINTS] == 1
    assert any(CHECK_CONSTRAINTS in v and lacking in v for v in invariants.violations)
