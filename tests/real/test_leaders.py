"""Real agents on 127.0.0.1: every region elects one leader that every agent names; kill -9 of a
leader is followed by a new one within 5 s. The bound is the issue's functional target, not a
performance assertion; the figure observed is printed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import CONVERGE_S, _all_alive, _start_all

pytestmark = pytest.mark.real

ELECTED_WITHIN_S = 20.0  # founding waits for a quiet view (about 4 s) after the joins
NEW_LEADER_WITHIN_S = 5.0


def _regions(mesh: LocalMesh, agent: LocalAgent) -> dict[str, dict[str, Any]]:
    rows = mesh.get(agent, "/v1/regions")
    return {r["region"]: r for r in rows} if isinstance(rows, list) else {}


def _leaders(mesh: LocalMesh, agents: list[LocalAgent]) -> dict[str, dict[str, Any]]:
    """Each agent's answer: (its own region's leader, the other region's leader), by agent name."""
    return {a.name: _regions(mesh, a) for a in agents}


def _agreed(mesh: LocalMesh, agents: list[LocalAgent], ids: dict[str, str]) -> dict[str, str] | None:
    """The one leader of each region if every agent names it (own and forwarded), and it holds a lease."""
    answers = _leaders(mesh, agents)
    leaders: dict[str, str] = {}
    for region in ("r1", "r2"):
        named = {rows.get(region, {}).get("leader") for rows in answers.values()}
        if len(named) != 1 or None in named:
            return None
        (leader,) = named
        assert isinstance(leader, str)
        holder = next((a for a in agents if ids[a.name] == leader), None)
        if holder is None or not answers[holder.name].get(region, {}).get("leader_holds_lease"):
            return None
        leaders[region] = leader
    return leaders


def test_one_leader_per_region_named_everywhere_and_replaced_after_kill_9(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("lan")
    seed = mesh.add("a0", "r1")
    for name in ("a1", "a2"):
        mesh.add(name, "r1", [seed])
    for name in ("b0", "b1", "b2"):
        mesh.add(name, "r2", [seed])
    ids = _start_all(mesh)
    assert wait_until(
        lambda: _all_alive(mesh, mesh.agents[:3], [ids[n] for n in ("a0", "a1", "a2")]), CONVERGE_S
    )
    agreed: dict[str, str] | None = None

    def elected() -> bool:
        nonlocal agreed
        agreed = _agreed(mesh, mesh.agents, ids)
        return agreed is not None

    assert wait_until(elected, ELECTED_WITHIN_S, 0.2), f"no agreed leaders: {_leaders(mesh, mesh.agents)}"
    assert agreed is not None
    old = agreed["r1"]
    victim = next(a for a in mesh.agents if ids[a.name] == old)
    survivors = [a for a in mesh.agents if a is not victim and a.name.startswith("a")]
    mesh.kill(victim)
    killed = time.monotonic()

    def replaced() -> bool:
        answers = _leaders(mesh, survivors)
        named = {rows.get("r1", {}).get("leader") for rows in answers.values()}
        if len(named) != 1 or None in named or old in named:
            return False
        (new,) = named
        holder = next(a for a in survivors if ids[a.name] == new)
        return bool(answers[holder.name].get("r1", {}).get("leader_holds_lease"))

    ok = wait_until(replaced, 15.0, 0.05)
    took_s = time.monotonic() - killed
    print(
        "\nkill -9 of the leader of r1 -> a new leader holding a lease, named by both survivors: "
        f"{took_s:.2f} s"
    )
    assert ok, f"no new leader: {_leaders(mesh, survivors)}"
    assert took_s <= NEW_LEADER_WITHIN_S, f"a new leader only after {took_s:.2f} s"
