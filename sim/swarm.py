"""The fault swarm: a random fault schedule per seed on a small fleet, and a run over many seeds.

`schedule` draws, from the run's fault RNG, SWARM_FAULTS faults between the
fault start and the quiet tail: crashes (host or process; half of them
restarted SWARM_RESTART_S later), partitions into two random halves (one at a
time), loss bursts, stalls and crashes of a region's leader. `run_swarm` runs
the `swarm` scenario once per seed (`murmur sim --swarm 1-200`) and returns every
seed that broke an invariant, with the command that replays it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sim import faults
from sim.fleet import Fleet

SWARM_FAULTS = (4, 10)
SWARM_KINDS = ("crash", "process-crash", "partition", "loss", "stall", "leader-crash")
SWARM_RESTART_S = (3.0, 10.0)
SWARM_PARTITION_S = (3.0, 12.0)
SWARM_LOSS = (0.05, 0.3)
SWARM_LOSS_S = (2.0, 8.0)
SWARM_STALL_S = (1.0, 8.0)
# The swarm's fleet unless told otherwise: small, so one seed takes about a second.


def schedule(fleet: Fleet, start_s: float, end_s: float, rng: random.Random) -> tuple[float, float | None]:
    """Schedule the seed's faults in [start_s, end_s); returns (quiet since, last heal or None)."""
    last_s = start_s
    heal_s: float | None = None
    split_until_s = 0.0
    n = len(fleet.slots)
    for _ in range(rng.randint(*SWARM_FAULTS)):
        kind = rng.choice(SWARM_KINDS)
        at_s = rng.uniform(start_s, end_s)
        idx = rng.randrange(n)
        if kind in ("crash", "process-crash"):
            faults.crash_at(fleet, at_s, idx, host_lost=kind == "crash")
            if rng.random() < 0.5:
                back_s = min(end_s, at_s + rng.uniform(*SWARM_RESTART_S))
                faults.restart_at(fleet, back_s, idx, new_addr=False)
                at_s = back_s
        elif kind == "partition":
            until_s = min(end_s, at_s + rng.uniform(*SWARM_PARTITION_S))
            if at_s < split_until_s:
                continue  # one partition at a time
            side = [i for i in range(n) if rng.random() < 0.5]
            other = [i for i in range(n) if i not in set(side)]
            faults.partition_at(fleet, at_s, [side, other], until_s)
            split_until_s = until_s
            heal_s = max(heal_s or 0.0, until_s)
            at_s = until_s
        elif kind == "loss":
            until_s = min(end_s, at_s + rng.uniform(*SWARM_LOSS_S))
            _loss_burst(fleet, at_s, until_s, rng.uniform(*SWARM_LOSS))
            at_s = until_s
        elif kind == "stall":
            d = rng.uniform(*SWARM_STALL_S)
            faults.stall_at(fleet, at_s, idx, d)
            at_s += d
        else:
            region = rng.randrange(fleet.region_count)
            fleet.engine.call_at(at_s, _leader_crasher(fleet, region))
        last_s = max(last_s, at_s)
    return last_s, heal_s


def _loss_burst(fleet: Fleet, at_s: float, until_s: float, loss: float) -> None:
    network = fleet.network
    before = network.loss

    def start(now: float) -> None:
        network.set_loss(max(before, loss))

    def stop(now: float) -> None:
        network.set_loss(before)

    fleet.engine.call_at(at_s, start)
    fleet.engine.call_at(until_s, stop)


def _leader_crasher(fleet: Fleet, region: int) -> Callable[[float], None]:
    def crash(now: float) -> None:
        for idx in fleet.leaders(now):
            if fleet.slots[idx].region == region:
                fleet.fault_counts["crashes"] += 1
                fleet.crash(idx, host_lost=True)

    return crash
