"""The admission scenario, many seeds: invited newcomers get in, intruders never, revoked nodes go."""

from __future__ import annotations

import pytest

from tests.sim.test_simulation import assert_invariants_hold, simulate, without_host_figures

SEEDS = (1, 2, 3, 4, 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_invited_join_intruders_never_do_and_revoked_nodes_are_expelled(seed: int) -> None:
    report, why = simulate(60, 3, "admission", seed, 45.0)
    assert_invariants_hold(report, why)
    assert {"intruders_never_members", "revoked_expelled"} <= set(report["invariants"]["checked"]), why
    adm = report["admission"]
    assert adm["joiners"] >= 3 and adm["not_joined"] == 0, why
    assert adm["intruders"] >= 3 and adm["sightings"] == 0, why
    assert sum(adm["refusals"].values()) >= adm["intruders"], why  # each refused somewhere, by reason
    assert adm["revoked"] >= 1 and adm["not_expelled"] == 0 and adm["revoked_stopped"] == adm["revoked"], why
    assert report["false_dead"] == 0, why


def test_admission_under_loss_keeps_intruders_out() -> None:
    report, why = simulate(60, 3, "admission", 7, 45.0, loss=0.05)
    assert report["admission"]["sightings"] == 0, why
    assert report["admission"]["not_expelled"] == 0, why
    assert not [v for v in report["invariants"]["violations"] if "intruder" in v or "revoked" in v], why


def test_same_seed_same_admission_report() -> None:
    a, _ = simulate(40, 2, "admission", 3, 35.0)
    b, _ = simulate(40, 2, "admission", 3, 35.0)
    assert without_host_figures(a) == without_host_figures(b)
