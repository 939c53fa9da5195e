"""process-crash over many seeds: processes die on hosts that stay up (connections refused).

Fifty seeds at a small N (one crash each): every node that tracked the dead process
sees it dead within about a second of the first suspicion (the floor, then the
spread), nobody is declared dead wrongly, and every invariant holds. (The first
suspicion waits for some member's probe to come round: that wait is SWIM's own.)
A host lost whole (crash) still takes the Lifeguard path: a refusal never hurries it.
"""

from __future__ import annotations

import pytest

from gossip.config import LAN
from sim.report import summary
from sim.run import reproduce_command, run_simulation

SEEDS = range(1, 51)
NODES, REGIONS, DURATION_S, LOSS = 30, 2, 22.0, 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_a_crashed_process_is_dead_everywhere_about_a_second_after_the_first_suspicion(seed: int) -> None:
    report = run_simulation(NODES, REGIONS, "process-crash", seed, DURATION_S, LOSS)
    how = reproduce_command(NODES, REGIONS, "process-crash", seed, DURATION_S, LOSS, "lan", False)
    why = f"seed {seed}; reproduce with: {how}\n{summary(report)}"
    assert report["invariants"]["violations"] == [], why
    det = report["detection"]
    assert det["crashed"] == 1 and det["undetected"] == 0, why
    took_s = det["all_dead_s"]["max"] - det["first_suspect_s"]["max"]
    assert LAN.refused_dead_after_s <= took_s <= LAN.refused_dead_after_s + 0.75, why
    assert det["all_dead_s"]["max"] <= 4.0, why
    assert report["false_dead"] == 0, why


def test_a_lost_host_is_not_detected_faster_by_refusals() -> None:
    # The same crash, host lost: nothing refuses, so the suspicion runs its Lifeguard
    # course (at least the 3.5 s minimum of a 15-member pool).
    for seed in (1, 2, 3):
        lost = run_simulation(NODES, REGIONS, "crash", seed, DURATION_S, LOSS)["detection"]
        process = run_simulation(NODES, REGIONS, "process-crash", seed, DURATION_S, LOSS)["detection"]
        assert lost["first_suspect_s"] == process["first_suspect_s"]
        assert lost["all_dead_s"]["max"] > 3.0 + process["first_suspect_s"]["max"]
        assert process["all_dead_s"]["max"] < lost["all_dead_s"]["max"]
