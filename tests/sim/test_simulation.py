"""Small whole-fleet simulations of the real gossip core, over several seeds per scenario.

Every assertion message carries the command that reproduces the run.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from gossip.config import LAN, WAN
from gossip.events import MemberState
from gossip.records import key_id
from gossip.trust import StaticTrust
from sim.fleet import SIM_CLUSTER_ID, Fleet, sim_invite
from sim.network import Network
from sim.observer import Observer
from sim.report import summary
from sim.run import reproduce_command, run_simulation
from sim.scenarios import operator_key

OPERATOR = operator_key(3)

SEEDS = (1, 2, 3)


def simulate(
    nodes: int, regions: int, scenario: str, seed: int, duration_s: float, loss: float | None = None
) -> tuple[dict[str, Any], str]:
    report = run_simulation(nodes, regions, scenario, seed, duration_s, loss)
    how = reproduce_command(nodes, regions, scenario, seed, duration_s, report["loss"], "lan", False)
    return report, f"seed {seed}; reproduce with: {how}\n{summary(report)}"


def assert_invariants_hold(report: dict[str, Any], why: str) -> None:
    assert report["invariants"]["violations"] == [], why
    assert "events_match_view" in report["invariants"]["checked"], why


def without_host_figures(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("wall_s", "peak_rss_bytes")}


def test_same_seed_gives_the_same_report_byte_for_byte() -> None:
    a = run_simulation(40, 2, "crash", 11, 25.0, 0.05)
    b = run_simulation(40, 2, "crash", 11, 25.0, 0.05)
    assert without_host_figures(a) == without_host_figures(b)
    c = run_simulation(40, 2, "crash", 12, 25.0, 0.05)
    assert without_host_figures(c) != without_host_figures(a)


def test_the_real_envelope_changes_only_the_cost() -> None:
    plain = run_simulation(20, 2, "steady", 5, 20.0)
    sealed = run_simulation(20, 2, "steady", 5, 20.0, encrypt=True)
    assert sealed["wire"]["dropped"]["unopenable"] == 0
    plain.pop("encrypt"), sealed.pop("encrypt")
    assert without_host_figures(plain) == without_host_figures(sealed)


@pytest.mark.parametrize("seed", SEEDS)
def test_steady(seed: int) -> None:
    report, why = simulate(45, 3, "steady", seed, 30.0)
    assert_invariants_hold(report, why)
    assert report["false_dead"] == 0, why
    assert {"region_liveness", "gateways_per_region", "fleet_liveness"} <= set(
        report["invariants"]["checked"]
    )
    dis = report["dissemination"]
    assert dis["missing"] == 0 and dis["s_all"]["max"] is not None, why
    assert dis["region_s_all"]["max"] <= dis["s_all"]["max"], why
    assert report["warmup"]["converged_s"] is not None and report["warmup"]["converged_s"] < 10.0, why
    assert report["traffic"]["bytes_per_node_s"]["p50"] > 0, why
    assert report["detection"] is None and report["partition"] is None


@pytest.mark.parametrize("seed", SEEDS)
def test_desired_state_reaches_every_node_and_the_update_wins(seed: int) -> None:
    report, why = simulate(60, 3, "desired", seed, 30.0)
    assert_invariants_hold(report, why)
    assert "records_agree" in report["invariants"]["checked"], why
    assert report["false_dead"] == 0, why
    assert report["dissemination"] is None, why
    des = report["desired"]
    assert des["version"] == 1 and des["missing"] == 0 and des["s_all"]["max"] is not None, why
    assert des["region_s_all"]["max"] <= des["s_all"]["max"], why
    assert [u["version"] for u in des["updates"]] == [2], why
    assert des["updates"][0]["missing"] == 0 and des["updates"][0]["s_all"]["max"] is not None, why
    assert des["final_version_everywhere"] is True, why


def test_desired_without_time_for_the_update_publishes_one_version() -> None:
    report, why = simulate(20, 2, "desired", 4, 19.0)
    des = report["desired"]
    assert des["missing"] == 0 and des["updates"] == [] and des["final_version_everywhere"] is True, why


def test_same_seed_gives_the_same_desired_report_byte_for_byte() -> None:
    a = run_simulation(30, 2, "desired", 9, 25.0)
    b = run_simulation(30, 2, "desired", 9, 25.0)
    assert without_host_figures(a) == without_host_figures(b)


@pytest.mark.parametrize("seed", (1, 2))
def test_inventory_every_node_holds_its_region_peers_latest_inventory(seed: int) -> None:
    report, why = simulate(60, 3, "inventory", seed, 40.0)
    assert_invariants_hold(report, why)
    assert "inventory_held" in report["invariants"]["checked"], why
    assert report["false_dead"] == 0, why
    inv = report["inventory"]
    # One record each in the first 5 s, plus a meaningful change for 10% of the nodes.
    assert inv["records_per_node_expected"] == 1.1 and inv["published"] == 66, why
    assert inv["held_fraction"] == 1.0 and inv["missing"] == 0, why
    assert report["dissemination"]["missing"] == 0, why
    # Each author sends its record straight to every region peer: all hold it within latency.
    fresh = inv["freshness"]
    assert "inventory_fresh" in report["invariants"]["checked"], why
    assert fresh["versions"] == 66 and fresh["incomplete"] == 0 and fresh["late"] == 0, why
    assert fresh["missing_fraction"] == 0.0 and fresh["bound_s"] == 120.0, why
    assert fresh["all_peers_s"]["max"] < 0.1 and fresh["changes_all_peers_s"]["max"] < 0.1, why


def test_inventory_under_loss_stays_within_the_freshness_bound() -> None:
    report, why = simulate(60, 3, "inventory", 4, 40.0, loss=0.05)
    assert_invariants_hold(report, why)
    checked = report["invariants"]["checked"]
    assert "inventory_fresh" in checked and "inventory_held" not in checked, why
    fresh = report["inventory"]["freshness"]
    assert fresh["versions"] == 66 and fresh["late"] == 0, why
    # Most peers get a version in the author's datagram; what loss took, repairs bring later.
    assert fresh["peer_s"]["p50"] < 0.1 < fresh["peer_s"]["max"], why


def _fleet(node_keys: bool, placing: bool = True) -> Fleet:
    return Fleet(
        seed=3,
        region_count=2,
        network=Network(random.Random(0), 2),
        region_config=LAN,
        fleet_config=WAN,
        rng=random.Random(1),
        trust=StaticTrust(operators=[bytes(OPERATOR.verify_key)], cluster_id=SIM_CLUSTER_ID),
        invite=sim_invite(OPERATOR, 3) if node_keys else None,
        placing=placing,
    )


def test_only_a_keyed_fleet_names_nodes_by_their_keys_and_holds_region_peers_admissions() -> None:
    plain = _fleet(False, placing=False)
    plain.warm_start(4)
    assert [s.node_id for s in plain.slots] == ["n00000", "n00001", "n00002", "n00003"]
    keyed = _fleet(True)
    keyed.warm_start(4)
    ids = [key_id(bytes(keyed.node_key(n).verify_key)) for n in range(4)]
    assert [s.node_id for s in keyed.slots] == ids
    # With placement a node publishes records, whose author is its key's id: named by its key too.
    placing = _fleet(False)
    placing.warm_start(4)
    assert [s.node_id for s in placing.slots] == ids
    assert keyed.node_key(0).encode() == _fleet(True).node_key(0).encode()
    for slot in keyed.slots:
        for peer in keyed.slots:
            if peer.region == slot.region:
                assert keyed.core(slot.idx).state.admitted_key(peer.node_id) == keyed.public_key(peer.node_id)
    assert run_simulation(6, 2, "steady", 3, 20.0)["inventory"] is None


class HookLog(Observer):
    """Notes every lifecycle hook the fleet calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_spawn(self, idx: int, node_id: str, region: int, views: Any) -> None:
        self.calls.append(("spawn", idx))

    def on_crash(self, now: float, idx: int) -> None:
        self.calls.append(("crash", idx))

    def on_down(self, now: float, idx: int) -> None:
        self.calls.append(("down", idx))

    def on_restart(self, now: float, slot: Any) -> None:
        self.calls.append(("restart", slot.idx))

    def on_stall(self, now: float, idx: int, duration_s: float) -> None:
        self.calls.append(("stall", idx))

    def on_partition(self, groups: list[int]) -> None:
        self.calls.append(("partition", len(groups)))

    def on_heal(self, now: float) -> None:
        self.calls.append(("heal", -1))


def test_a_registered_observer_hears_every_lifecycle_hook_and_late_ones_are_refused() -> None:
    fleet = _fleet(False)
    log = fleet.observe(HookLog())
    fleet.warm_start(4)
    with pytest.raises(ValueError, match="before creating nodes"):
        fleet.observe(HookLog())
    fleet.crash(1)
    fleet.restart(1, new_addr=False)
    fleet.stall(2, 1.0)
    fleet.retire(3)
    fleet.partition([[0, 1], [2, 3]])
    fleet.heal()
    assert log.calls == [
        *(("spawn", i) for i in range(4)),
        ("crash", 1),
        ("down", 1),
        ("restart", 1),
        ("stall", 2),
        ("down", 3),
        ("partition", 4),
        ("heal", -1),
    ]
    # The fleet's own views: a warm-started node sees its region's members (two per region);
    # a restarted one starts empty, a stopped one sees nothing.
    assert fleet.views.region[0] == {fleet.slots[1].node_id: MemberState.ALIVE}
    assert fleet.views.region[1] == {} and fleet.views.region[3] == {}


def test_same_seed_gives_the_same_inventory_report_byte_for_byte() -> None:
    a = run_simulation(30, 2, "inventory", 9, 25.0)
    b = run_simulation(30, 2, "inventory", 9, 25.0)
    assert without_host_figures(a) == without_host_figures(b)
    c = run_simulation(30, 2, "inventory", 10, 25.0)
    assert without_host_figures(c) != without_host_figures(a)


@pytest.mark.parametrize("seed", SEEDS)
def test_loss(seed: int) -> None:
    report, why = simulate(45, 3, "loss", seed, 30.0)
    assert report["loss"] == 0.10
    assert report["wire"]["dropped"]["loss"] > 0
    assert_invariants_hold(report, why)
    assert report["false_dead"] == 0, why
    assert report["dissemination"]["missing"] == 0, why


# Seed 3 crashes a gateway that two other gateways hear of only after the crash (they join
# the fleet pool late): they suspect it when every other gateway already holds it dead and
# no confirmation will come; the first one that hears their accusation tells them it is dead
# (membership.py _tell_accuser), where they used to wait out the fleet pool's Lifeguard
# timeout (113 s).
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crash_is_detected_by_every_node_that_tracks_it(seed: int) -> None:
    report, why = simulate(60, 3, "crash", seed, 40.0, loss=0.05)
    assert_invariants_hold(report, why)
    det = report["detection"]
    # 1% of the nodes (one), and one replica holder per region (sim/placewatch.py crash_holders).
    assert det["crashed"] == report["faults"]["crashes"] == 1 + 3, why
    assert det["undetected"] == 0, why
    assert det["first_suspect_s"]["max"] <= det["all_dead_s"]["max"] <= 20.0, why
    assert report["false_dead"] == 0, why


@pytest.mark.parametrize("seed", SEEDS)
def test_stall(seed: int) -> None:
    report, why = simulate(60, 3, "stall", seed, 50.0)
    assert report["faults"]["stalls"] >= 1, why
    assert_invariants_hold(report, why)
    assert report["false_dead"] == 0, why


@pytest.mark.parametrize("seed", SEEDS)
def test_partition_heals_in_every_region(seed: int) -> None:
    # 50 s after the healing: one lan push-pull interval (30 s) plus the liveness phase.
    report, why = simulate(40, 2, "partition", seed, 90.0)
    assert_invariants_hold(report, why)
    part = report["partition"]
    assert part["dead_pairs"] > 0, why  # each side declared the other dead: the split was real
    assert report["false_dead"] == 0, why
    assert part["region_heal_s"] is not None and part["region_heal_s"] <= 35.0, why
    assert "region_liveness" in report["invariants"]["checked"]


def test_partition_heals_in_the_fleet_pool_too() -> None:
    # The fleet pool (wan profile: push-pull every 60 s) takes longer than the regions.
    report, why = simulate(40, 2, "partition", 2, 140.0)
    assert_invariants_hold(report, why)
    part = report["partition"]
    assert part["heal_s"] is not None and part["region_heal_s"] <= part["heal_s"], why
    assert "fleet_liveness" in report["invariants"]["checked"]


@pytest.mark.parametrize("seed", SEEDS)
def test_churn(seed: int) -> None:
    report, why = simulate(40, 2, "churn", seed, 45.0)
    faults = report["faults"]
    assert faults["leaves"] >= 2 and faults["joins"] + faults["restarts"] >= 2, why
    assert_invariants_hold(report, why)
    assert report["false_dead"] == 0, why


def test_single_region_fleet_has_no_fleet_pool_checks() -> None:
    report, why = simulate(20, 1, "crash", 4, 30.0)
    assert_invariants_hold(report, why)
    assert "fleet_liveness" not in report["invariants"]["checked"]
    assert report["detection"]["undetected"] == 0, why
