"""Random fault schedules over many seeds: safety always, liveness once the faults stop.

Like TigerBeetle's VOPR: the seed draws the faults themselves (loss, duplication,
delay, crashes with restarts, partitions, leader crashes); the safety phase
checks the invariants on every step, the liveness phase heals everything and
requires one leader that every node knows. A failure names its seed.
"""

from __future__ import annotations

import random

import pytest

from tests.consensus.harness import Cluster, NetModel

SEEDS = range(60)


def run_schedule(seed: int) -> Cluster:
    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 4, 5, 5, 6, 7])
    ids = [f"n{i}" for i in range(1, size + 1)]
    net = NetModel(
        loss=rng.choice([0.0, 0.05, 0.2]), dup=rng.choice([0.0, 0.1]), delay_max_s=rng.choice([0.01, 0.2])
    )
    c = Cluster(ids, seed, net=net, boot_s=lambda _i: rng.uniform(0.0, 2.0))
    # Boot connected: two groups that never meet would found two eras (docs/design.md).
    c.run_until(15.0)
    t = c.now
    for _ in range(rng.randint(3, 8)):
        t += rng.uniform(0.5, 4.0)
        fault = rng.choice(["crash", "crash_leader", "partition", "heal", "restart_all"])
        c.at(t, lambda fault=fault: inject(c, rng, fault))
    c.run_until(t + 2.0)
    # Liveness: everything back, links clean.
    c.heal()
    for i in ids:
        if not c.up[i]:
            c.start(i)
    c.net.loss, c.net.dup = 0.0, 0.0
    c.run_until(c.now + 40.0)
    return c


def inject(c: Cluster, rng: random.Random, fault: str) -> None:
    ids = c.known
    if fault == "crash":
        victim = rng.choice(ids)
        if c.up[victim]:
            c.crash(victim)
            c.at(c.now + rng.uniform(0.1, 3.0), lambda: None if c.up[victim] else c.start(victim))
    elif fault == "crash_leader":
        for victim in c.leaders():
            c.crash(victim)
            c.at(c.now + rng.uniform(0.5, 3.0), lambda v=victim: None if c.up[v] else c.start(v))
    elif fault == "partition":
        cut = rng.randint(1, max(1, len(ids) - 1))
        shuffled = rng.sample(ids, len(ids))
        c.partition(shuffled[:cut], shuffled[cut:])
    elif fault == "heal":
        c.heal()
    else:
        for i in ids:
            if c.up[i]:
                c.crash(i)
                c.at(c.now + rng.uniform(0.1, 1.0), lambda i=i: None if c.up[i] else c.start(i))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_never_break_safety_and_a_leader_returns(seed: int) -> None:
    c = run_schedule(seed)
    assert not c.checker.violations, f"seed={seed}: {c.checker.violations[:3]}"
    leaders = c.leaders()
    assert len(leaders) == 1, f"seed={seed}: leaders {leaders}, beliefs {c.believed()}"
    assert all(b == leaders[0] for b in c.believed().values()), f"seed={seed}: {c.believed()}"
