"""What `murmur sim --help` lists before anything runs: the scenario names and the swarm's fleet.

Kept apart from sim/scenarios.py and sim/swarm.py, which import the whole fleet
(every protocol core): building the `murmur` parser, for any command, then costs
nothing of the simulator (tests/mesh/test_cli_startup.py checks it).
"""

from __future__ import annotations

SCENARIOS = (
    "steady",
    "crash",
    "process-crash",
    "loss",
    "stall",
    "partition",
    "churn",
    "desired",
    "inventory",
    "admission",
    "cold-start",
    "key-rotation",
    "key-rotation-staged",
    "leader-crash",
    "swarm",
)

SWARM_NODES = 30
SWARM_REGIONS = 3
SWARM_DURATION_S = 45.0
