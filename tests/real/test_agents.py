"""Real `murmur agent` processes on 127.0.0.1: convergence, crash detection, restart, two regions.

The time bounds are the scenario's functional timeouts (what the issue asks the
mesh to do), not performance assertions; the figures observed are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory

pytestmark = pytest.mark.real

STARTUP_TIMEOUT_S = 20.0  # Python start-up of several processes at once on a busy machine
CONVERGE_S = 5.0
DETECT_S = 10.0


def _start_all(mesh: LocalMesh) -> dict[str, str]:
    """Start every agent and wait until each API answers; node ids by agent name."""
    started = time.monotonic()
    for agent in mesh.agents:
        mesh.start(agent)
    ids: dict[str, str] = {}

    def all_up() -> bool:
        for agent in mesh.agents:
            if agent.name not in ids:
                assert agent.running, f"{agent.name} exited:\n{agent.log_tail()}"
                node_id = mesh.node_id(agent)
                if node_id is not None:
                    ids[agent.name] = node_id
        return len(ids) == len(mesh.agents)

    assert wait_until(all_up, STARTUP_TIMEOUT_S), (
        f"agents not up: {set(a.name for a in mesh.agents) - set(ids)}"
    )
    print(f"\n{len(ids)} agent processes started, all APIs answering: {time.monotonic() - started:.2f} s")
    return ids


def _states(mesh: LocalMesh, observers: Sequence[LocalAgent], node_id: str) -> dict[str, str | None]:
    return {o.name: mesh.state_of(o, node_id) for o in observers}


def _all_alive(mesh: LocalMesh, observers: Sequence[LocalAgent], ids: Sequence[str]) -> bool:
    for observer in observers:
        view = mesh.view(observer)
        if any(view.get(i, {}).get("state") != "alive" for i in ids):
            return False
    return True


def converged_region(mesh: LocalMesh, count: int, region: str = "r1") -> dict[str, str]:
    """Start `count` agents a0..a<count-1> in one region, joined through a0, and wait until
    every one sees all alive; node ids by agent name."""
    seed = mesh.add("a0", region)
    for i in range(1, count):
        mesh.add(f"a{i}", region, [seed])
    ids = _start_all(mesh)
    assert wait_until(lambda: _all_alive(mesh, mesh.agents, list(ids.values())), CONVERGE_S)
    return ids


def test_five_agents_converge_detect_a_crash_and_take_back_a_restart(local_mesh: MeshFactory) -> None:
    # The lan profile: the region profile real deployments use, so the bounds
    # below are shown for the production timings, not for the faster `local`.
    mesh = local_mesh("lan")
    seed = mesh.add("a0", "r1")
    for i in range(1, 5):
        mesh.add(f"a{i}", "r1", [seed])
    ids = _start_all(mesh)

    started = time.monotonic()
    assert wait_until(lambda: _all_alive(mesh, mesh.agents, list(ids.values())), CONVERGE_S), (
        "5 agents did not all see each other alive within 5 s"
    )
    print(f"converged: {time.monotonic() - started:.2f} s after all 5 APIs answered")

    victim = mesh.agents[-1]
    victim_id = ids[victim.name]
    survivors = mesh.agents[:-1]
    incarnation_before = int(mesh.view(seed)[victim_id]["incarnation"])
    mesh.kill(victim)
    killed = time.monotonic()
    assert wait_until(
        lambda: all(s == "dead" for s in _states(mesh, survivors, victim_id).values()), DETECT_S
    ), f"not dead everywhere within 10 s of kill -9: {_states(mesh, survivors, victim_id)}"
    print(f"kill -9 -> dead at all 4 survivors: {time.monotonic() - killed:.2f} s")

    mesh.start(victim)
    restarted = time.monotonic()

    def back_everywhere() -> bool:
        for observer in survivors:
            row = mesh.view(observer).get(victim_id)
            if row is None or row["state"] != "alive" or int(row["incarnation"]) <= incarnation_before:
                return False
        return True

    assert wait_until(back_everywhere, STARTUP_TIMEOUT_S), (
        f"restarted agent not alive everywhere at a higher incarnation: {_states(mesh, survivors, victim_id)}"
    )
    assert mesh.node_id(victim) == victim_id, "a restart with the same data dir keeps the node id"
    print(f"restart -> alive everywhere with a higher incarnation: {time.monotonic() - restarted:.2f} s")

    # A graceful stop: exit 0, and the others see a leave, not a death.
    assert mesh.stop(victim) == 0
    assert wait_until(
        lambda: all(s == "left" for s in _states(mesh, survivors, victim_id).values()), DETECT_S
    )


def test_broadcast_crosses_regions_through_the_gateways(local_mesh: MeshFactory) -> None:
    # 4 + 4 agents: with at most 3 gateways per region, the origin and at least
    # one receiver are not gateways, so the broadcast must take the whole path
    # region pool -> gateway -> fleet pool -> gateway -> region pool.
    mesh = local_mesh("local")
    for region in ("north", "south"):
        for i in range(4):
            # Seeds: every agent of its region added before it; south's first is
            # seeded from north and must find its own region through the fleet.
            same = [a for a in mesh.agents if a.region == region]
            mesh.add(f"{region}-{i}", region, same or mesh.agents[:1])
    ids = _start_all(mesh)
    north = [a for a in mesh.agents if a.region == "north"]
    south = [a for a in mesh.agents if a.region == "south"]
    assert wait_until(
        lambda: (
            _all_alive(mesh, north, [ids[a.name] for a in north])
            and _all_alive(mesh, south, [ids[a.name] for a in south])
        ),
        CONVERGE_S * 2,
    )

    def fleet_formed() -> bool:
        """Each region has gateways, and every gateway sees both regions alive in the fleet pool."""
        gateway_regions = set()
        for agent in mesh.agents:
            health = mesh.get(agent, "/v1/health")
            if not isinstance(health, dict):
                return False
            if health["is_gateway"]:
                gateway_regions.add(agent.region)
                fleet = mesh.get(agent, "/v1/nodes", {"pool": "fleet"}) or []
                if {r["region"] for r in fleet if r["state"] == "alive"} != {"north", "south"}:
                    return False
        return gateway_regions == {"north", "south"}

    formed = time.monotonic()
    assert wait_until(fleet_formed, 20.0), "the gateways of both regions did not form the fleet pool"
    print(f"fleet pool formed by both regions' gateways: {time.monotonic() - formed:.2f} s after convergence")

    origin = next(a for a in north if not mesh.get(a, "/v1/health")["is_gateway"])
    sent = mesh.post(origin, "/v1/debug/broadcast", {"payload": "hello from north"})
    assert sent is not None
    key = (sent["origin_id"], sent["seq"])
    started = time.monotonic()

    def everywhere() -> bool:
        for agent in mesh.agents:
            got = mesh.get(agent, "/v1/debug/broadcasts") or []
            if not any((r["origin_id"], r["seq"]) == key and r["payload"] == "hello from north" for r in got):
                return False
        return True

    def report() -> str:
        lines = []
        for agent in mesh.agents:
            health = mesh.get(agent, "/v1/health") or {}
            received = mesh.get(agent, "/v1/debug/broadcasts") or []
            got = any((r["origin_id"], r["seq"]) == key for r in received)
            lines.append(f"{agent.name} gateway={health.get('is_gateway')} received={got}")
        return "\n".join(lines)

    assert wait_until(everywhere, DETECT_S), f"the broadcast did not reach every agent:\n{report()}"
    print(f"broadcast north -> all 8 agents: {time.monotonic() - started:.2f} s")
    assert any(not mesh.get(a, "/v1/health")["is_gateway"] for a in south)

    # `murmur nodes --region` through the CLI: north answers for south via south's summary.
    out = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "--node", north[0].url, "nodes", "--region", "south", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = json.loads(out)
    assert {r["id"] for r in rows} == {ids[a.name] for a in south}
    assert all(r["region"] == "south" and r["state"] == "alive" for r in rows)
