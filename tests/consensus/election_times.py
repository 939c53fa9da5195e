"""Simulated election time after a leader crash, over many seeds (not a test: a measurement).

    python -m tests.consensus.election_times 200

Five voters, default (lan) timings, 5% loss: boot, let a leader settle, crash
it, and measure until another node holds a lease. Prints p50/p99/max in
simulated seconds (docs/design.md, "Regional leaders").
"""

from __future__ import annotations

import sys

from tests.consensus.harness import Cluster, NetModel

STEP_S = 0.01


def election_time(seed: int) -> float | None:
    c = Cluster([f"n{i}" for i in range(1, 6)], seed, net=NetModel(loss=0.05))
    c.run_until(20.0)
    leaders = c.leaders()
    if len(leaders) != 1:
        return None
    c.crash(leaders[0])
    start = c.now
    while c.now < start + 15.0:
        c.run_until(c.now + STEP_S)
        if c.leaders():
            assert not c.checker.violations, f"seed={seed}: {c.checker.violations}"
            return c.now - start
    return None


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    times = sorted(t for t in (election_time(s) for s in range(seeds)) if t is not None)
    n = len(times)
    print(
        f"{n}/{seeds} seeds elected: p50 {times[n // 2]:.2f} s, "
        f"p99 {times[min(n - 1, int(n * 0.99))]:.2f} s, max {times[-1]:.2f} s"
    )


if __name__ == "__main__":
    main()
