"""process-crash over many seeds: processes die on hosts that stay up (connections refused).

Fifty seeds at a small N (one crash each): the dead process's watchers hear its
kernel close their connections and probe it at once (docs/design.md, "Watched
connections"), so the first suspicion comes one probe after the crash; every node
that tracked it sees it dead within about a second of that (the floor, then the
spread), nobody is declared dead wrongly, and every invariant holds. A host lost
whole (crash) still takes the Lifeguard path: neither watches nor refusals hurry it.
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
    # One probe (0.5 s), or two when the first watcher's probe met bad luck.
    assert det["first_suspect_s"]["max"] <= 2 * LAN.probe_interval_s + 0.1, why
    assert det["all_dead_s"]["max"] <= 3.0, why
    assert report["false_dead"] == 0, why


def test_a_lost_host_is_not_detected_faster_by_watches_or_refusals() -> None:
    # The same crash, host lost: nothing closes and nothing refuses, so the first probe
    # comes in its turn and the suspicion runs its Lifeguard course (at least the
    # 3.5 s minimum of a 15-member pool).
    for seed in (1, 2, 3):
        lost = run_simulation(NODES, REGIONS, "crash", seed, DURATION_S, LOSS)["detection"]
        process = run_simulation(NODES, REGIONS, "process-crash", seed, DURATION_S, LOSS)["detection"]
        assert lost["all_dead_s"]["max"] > 3.0 + lost["first_suspect_s"]["max"]
        assert process["first_suspect_s"]["max"] <= lost["first_suspect_s"]["max"]
        assert process["all_dead_s"]["max"] < lost["all_dead_s"]["max"]
