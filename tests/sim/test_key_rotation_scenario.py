"""The key-rotation scenario, several seeds: every live member ends with the new network key."""

from __future__ import annotations

import pytest

from tests.sim.test_simulation import assert_invariants_hold, simulate, without_host_figures

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_live_member_gets_the_new_key_the_offline_region_after_it_heals(seed: int) -> None:
    report, why = simulate(60, 3, "key-rotation", seed, 120.0)
    assert_invariants_hold(report, why)
    assert "every_member_holds_the_new_key" in report["invariants"]["checked"], why
    rot = report["key_rotation"]
    assert rot["missing_at_end"] == 0 and rot["last_member_at_s"] is not None, why
    assert rot["hold_s"]["max"] is not None, why
    # The offline region could not get it while away, and got it after the heal.
    away = rot["offline_region"]
    assert away["members"] == 20 and away["held_before_heal"] == 0, why
    assert away["hold_after_heal_s"]["max"] is not None, why
    # The reachable members seal with it and dropped the old key after the grace period (the
    # offline region gets the record at the fleet pool's anti-entropy pace, up to 60 s after the heal).
    assert rot["sealing_with_new_key"] >= rot["members"] == 40, why
    assert rot["old_keys_dropped"] >= rot["members"], why
    assert rot["messages"] > 0 and rot["bytes"] > 0 and rot["drops"] == {}, why


def test_key_rotation_under_loss() -> None:
    report, why = simulate(60, 2, "key-rotation", 4, 60.0, loss=0.1)
    rot = report["key_rotation"]
    assert rot["missing_at_end"] == 0 and rot["offline_region"] is None, why
    assert rot["requests"] > 0, why  # pushes were lost: some members pulled it


def test_same_seed_same_key_rotation_report() -> None:
    a, _ = simulate(40, 3, "key-rotation", 3, 60.0)
    b, _ = simulate(40, 3, "key-rotation", 3, 60.0)
    assert without_host_figures(a) == without_host_figures(b)


@pytest.mark.parametrize("seed", (1, 2))
def test_staged_install_use_remove_ends_with_only_the_new_key_everywhere(seed: int) -> None:
    report, why = simulate(60, 3, "key-rotation-staged", seed, 130.0)
    assert_invariants_hold(report, why)
    assert "every_member_holds_only_the_new_key" in report["invariants"]["checked"], why
    rot = report["key_rotation"]
    staged = rot["staged"]
    assert staged["stages_at_s"] == {"install": 10.0, "use": 20.0, "remove": 30.0}, why
    # Every live member (the offline region too, after the heal) seals with the new key alone.
    assert staged["holding_only_the_new_key"] == 60, why
    assert staged["sealing_after_use_s"]["max"] is not None, why
    assert staged["old_dropped_after_remove_s"]["max"] is not None, why
    assert rot["offline_region"]["held_before_heal"] == 0, why
