"""`murmur sim --swarm SEEDS`: the swarm scenario (sim/swarm.py) once per seed, on a small fleet.

`run_swarm` returns a summary listing every seed that broke an invariant, with
the command that replays it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sim.catalog import SWARM_DURATION_S, SWARM_NODES, SWARM_REGIONS
from sim.run import run_simulation


def parse_seeds(text: str) -> list[int]:
    """ "1-200", "7" or "1,5,9-12" -> the seeds, in order; raises ValueError."""
    seeds: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"seeds are like 1-200 or 1,5,9-12, got {text!r}")
        lo, hi = int(first), int(last) if sep else int(first)
        if hi < lo or hi - lo > 100_000:
            raise ValueError(f"bad seed range {part!r}")
        seeds.extend(range(lo, hi + 1))
    return seeds


def run_swarm(
    seeds: list[int],
    nodes: int = SWARM_NODES,
    regions: int = SWARM_REGIONS,
    duration_s: float = SWARM_DURATION_S,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the swarm scenario once per seed; the summary lists every seed that broke an invariant."""
    wall_start = time.perf_counter()
    failed: list[dict[str, Any]] = []
    unplaced_seeds: list[int] = []
    slowest_s = 0.0
    for seed in seeds:
        report = run_simulation(nodes, regions, "swarm", seed, duration_s)
        slowest_s = max(slowest_s, report["wall_s"])
        if report["placement"]["unplaced"]:
            unplaced_seeds.append(seed)
        if report["invariants"]["violation_count"]:
            failed.append(
                {
                    "seed": seed,
                    "violation_count": report["invariants"]["violation_count"],
                    "violations": report["invariants"]["violations"][:5],
                    "command": (
                        f"murmur sim --nodes {nodes} --regions {regions} --scenario swarm "
                        f"--seed {seed} --duration {duration_s:g}"
                    ),
                }
            )
        if progress is not None:
            progress(seed, report)
    wall_s = time.perf_counter() - wall_start
    return {
        "seeds": len(seeds),
        "nodes": nodes,
        "regions": regions,
        "sim_s": duration_s,
        "failed": failed,
        "failed_count": len(failed),
        "unplaced_at_end_seeds": unplaced_seeds,
        "wall_s": round(wall_s, 3),
        "wall_s_per_seed": round(wall_s / len(seeds), 3) if seeds else None,
        "wall_s_slowest_seed": round(slowest_s, 3),
    }
