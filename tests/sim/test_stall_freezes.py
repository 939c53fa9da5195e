"""stall over many seeds: processes frozen for up to 10 s (their hosts still complete
handshakes) are never declared dead, and every invariant holds.

A 10 s freeze is longer than the Lifeguard minimum of these pools (3.5 s), so without
the stalled-handshake rule (docs/design.md, "Refused connections") these runs declare
frozen nodes dead.
"""

from __future__ import annotations

import pytest

from gossip.config import LAN
from sim.report import summary
from sim.run import reproduce_command, run_simulation
from sim.scenarios import STALL_S

SEEDS = range(1, 51)
NODES, REGIONS, DURATION_S, LOSS = 30, 2, 60.0, 0.05


def test_freezes_last_longer_than_the_lifeguard_minimum_and_less_than_the_stalled_floor() -> None:
    assert STALL_S[1] >= 10.0
    assert LAN.stalled_dead_after_s >= 10.0


@pytest.mark.parametrize("seed", SEEDS)
def test_a_frozen_process_is_never_declared_dead(seed: int) -> None:
    report = run_simulation(NODES, REGIONS, "stall", seed, DURATION_S, LOSS)
    how = reproduce_command(NODES, REGIONS, "stall", seed, DURATION_S, LOSS, "lan", False)
    why = f"seed {seed}; reproduce with: {how}\n{summary(report)}"
    assert report["faults"]["stalls"] >= 1, why
    assert report["invariants"]["violations"] == [], why
    assert report["false_dead"] == 0, why
