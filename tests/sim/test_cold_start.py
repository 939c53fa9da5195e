"""The cold-start scenario, many seeds: a fleet that boots at once, seeded only at other
regions' nodes, ends with every region one pool (issue 8, finding 9)."""

from __future__ import annotations

import pytest

from sim.run import run_simulation
from tests.sim.test_simulation import assert_invariants_hold, simulate, without_host_figures

SEEDS = (1, 2, 3, 4, 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_region_ends_as_one_pool(seed: int) -> None:
    report, why = simulate(60, 4, "cold-start", seed, 40.0)
    assert_invariants_hold(report, why)
    checked = set(report["invariants"]["checked"])
    assert {"region_one_pool", "region_pool_own_region", "region_liveness", "fleet_liveness"} <= checked, why
    cold = report["cold_start"]
    assert cold["islands_at_end"] == 0 and cold["split_regions_at_end"] == 0, why
    assert cold["unmerged_regions"] == 0 and cold["region_merged_s"]["max"] is not None, why
    assert cold["foreign_region_members"] == 0, why
    # The whole fleet (regions and the fleet pool of 1-3 gateways per region) converged.
    assert report["warmup"]["converged_s"] is not None, why


def test_a_keyed_fleet_of_200_that_boots_at_once_converges() -> None:
    """Every agent is keyed (signed claims, admissions, pairwise frames). At 200 nodes this seed
    ended with a gateway that never heard of another (fleet_liveness) and no convergence: an
    admission's epidemic missed members (a parked claim now brings the push-pull forward), and
    an early redirect's gateway hint hid the region's later summaries (tests/gossip/
    test_summary_hints.py)."""
    report, why = simulate(200, 4, "cold-start", 3, 40.0)
    assert_invariants_hold(report, why)
    assert "fleet_liveness" in report["invariants"]["checked"], why
    assert report["cold_start"]["islands_at_end"] == 0, why
    assert report["warmup"]["converged_s"] is not None, why


def test_cold_start_under_loss_still_merges_every_region() -> None:
    report, why = simulate(60, 4, "cold-start", 6, 40.0, loss=0.05)
    cold = report["cold_start"]
    assert cold["islands_at_end"] == 0 and cold["unmerged_regions"] == 0, why
    assert cold["foreign_region_members"] == 0, why


def test_same_seed_same_cold_start_report() -> None:
    a, _ = simulate(40, 3, "cold-start", 2, 25.0)
    b, _ = simulate(40, 3, "cold-start", 2, 25.0)
    assert without_host_figures(a) == without_host_figures(b)


def test_cold_start_needs_another_region_to_seed_at() -> None:
    with pytest.raises(ValueError, match="--regions 2 or more"):
        run_simulation(10, 1, "cold-start", 1, 25.0)


def test_other_scenarios_report_no_cold_start() -> None:
    report = run_simulation(12, 2, "steady", 1, 20.0)
    assert report["cold_start"] is None
    assert "region_one_pool" not in report["invariants"]["checked"]
