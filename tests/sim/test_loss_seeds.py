"""loss over many seeds: 10% of datagrams lost, nobody declared dead, every invariant holds.

Fifty seeds at a small N; tests/sim/test_simulation.py runs a larger fleet on a few.
Connection checks, watched connections and refusals must never turn loss into a
death: a live member whose pings are lost still completes handshakes (ACCEPTED),
and its watched connections stay open.
"""

from __future__ import annotations

import pytest

from sim.report import summary
from sim.run import reproduce_command, run_simulation

SEEDS = range(1, 51)
NODES, REGIONS, DURATION_S, LOSS = 30, 2, 25.0, 0.10


@pytest.mark.parametrize("seed", SEEDS)
def test_ten_percent_loss_declares_no_one_dead(seed: int) -> None:
    report = run_simulation(NODES, REGIONS, "loss", seed, DURATION_S, LOSS)
    how = reproduce_command(NODES, REGIONS, "loss", seed, DURATION_S, LOSS, "lan", False)
    why = f"seed {seed}; reproduce with: {how}\n{summary(report)}"
    assert report["loss"] == LOSS and report["wire"]["dropped"]["loss"] > 0, why
    assert report["invariants"]["violations"] == [], why
    assert report["false_dead"] == 0, why
