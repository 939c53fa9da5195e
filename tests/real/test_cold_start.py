"""A site that boots at once, seeded only at another region, without mDNS (issue 8, finding 9).

Two agents of region north run; four agents of region south start at the same
moment, each seeded only at a north agent, with --no-mdns (a site behind a
switch that drops multicast, after a power cut). Each south agent first finds
itself alone in its region; they meet in the fleet pool and must merge into one
south pool. The bound is the scenario's functional timeout, not a performance
assertion; the time observed is printed.
"""

from __future__ import annotations

import time

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory

pytestmark = pytest.mark.real

STARTUP_TIMEOUT_S = 20.0
MERGE_S = 25.0


def _ids(mesh: LocalMesh, agents: list[LocalAgent]) -> dict[str, str]:
    ids: dict[str, str] = {}

    def all_up() -> bool:
        for agent in agents:
            if agent.name not in ids:
                assert agent.running, f"{agent.name} exited:\n{agent.log_tail()}"
                node_id = mesh.node_id(agent)
                if node_id is not None:
                    ids[agent.name] = node_id
        return len(ids) == len(agents)

    assert wait_until(all_up, STARTUP_TIMEOUT_S), (
        f"agents not up: {[a.name for a in agents if a.name not in ids]}"
    )
    return ids


def _alive(mesh: LocalMesh, observer: LocalAgent) -> set[str]:
    return {i for i, row in mesh.view(observer).items() if row.get("state") == "alive"}


def test_a_region_booted_at_once_behind_another_regions_seeds_becomes_one_pool(
    local_mesh: MeshFactory,
) -> None:
    mesh = local_mesh("lan")
    north = [mesh.add("north-0", "north")]
    north.append(mesh.add("north-1", "north", north[:1]))
    for agent in north:
        mesh.start(agent)
    north_ids = _ids(mesh, north)
    assert wait_until(lambda: all(_alive(mesh, a) == set(north_ids.values()) for a in north), 10.0)

    south = [mesh.add(f"south-{i}", "south", [north[i % 2]]) for i in range(4)]
    for agent in south:  # at the same moment
        mesh.start(agent)
    south_ids = _ids(mesh, south)
    started = time.monotonic()
    everyone = set(south_ids.values())

    def report() -> str:
        return "\n".join(f"{a.name} lists alive: {sorted(_alive(mesh, a))}" for a in south)

    assert wait_until(lambda: all(_alive(mesh, a) == everyone for a in south), MERGE_S), (
        f"south is still islands after {MERGE_S:g} s:\n{report()}"
    )
    print(f"\nfour south agents are one pool {time.monotonic() - started:.2f} s after their APIs answered")
    # North never took a south agent into its region, and the other way round.
    for agent in north:
        assert _alive(mesh, agent) == set(north_ids.values())
