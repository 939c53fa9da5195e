"""Real agents on 127.0.0.1, 2 regions of 3: a deployment of 2 replicas per region is placed by
each region's leader and every agent of the region shows the same placement; kill -9 of a node
holding a replica moves it to another node everywhere in the region; kill -9 of the leader is
followed by a new leader that keeps the placement; in a region of 5, the leader and a replica
holder killed together leave a majority of voters, which elects a leader whose placement puts
the lost replicas on live nodes. The bounds are the issue's functional targets, not
performance assertions; the figures observed are printed.

The artifact (the example vibration-anomaly model) is uploaded to one node by `murmur deploy`
(there is no peer-to-peer transfer yet): the replica on that node, if it has one, reports
`ready` once loaded and warmed up, the others `assigned`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.examples.build_models import MODELS_DIR
from tests.real.conftest import MeshFactory
from tests.real.test_agents import CONVERGE_S, _all_alive, _start_all
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

PLACED_WITHIN_S = 30.0  # founding (about 4 s after the joins), then the deploy's gossip and a placement
MOVED_WITHIN_S = 10.0
# The issue bounds a lone holder's move (10 s) but not this double loss: here it is what a person
# would call healed. Each poll runs `murmur placements` at three survivors (a CLI process each,
# seconds apiece on a loaded machine), and the moved replicas load a real model first; measured
# on a quiet machine: 3.0-3.2 s; on one loaded to 9-11 on 2 cores: 9.4-13.6 s.
DOUBLE_LOSS_HEALED_WITHIN_S = 30.0
NEW_LEADER_WITHIN_S = 5.0


def _placement(mesh: LocalMesh, agent: LocalAgent) -> dict[str, Any] | None:
    done = _murmur(mesh, agent, "placements", "--json")
    if done.returncode != 0:
        return None
    doc = json.loads(done.stdout)
    return doc if isinstance(doc, dict) else None


def _where(doc: dict[str, Any] | None) -> tuple[Any, frozenset[tuple[str, int, str]]] | None:
    """(stamp, {(deployment, slot, node)}) of a placement, or None before one."""
    if doc is None or doc.get("stamp") is None:
        return None
    return json.dumps(doc["stamp"], sort_keys=True), frozenset(
        (r["deployment"], r["slot"], r["node"]) for r in doc["replicas"]
    )


def _agreed(mesh: LocalMesh, agents: list[LocalAgent]) -> tuple[Any, frozenset[tuple[str, int, str]]] | None:
    """The one placement every agent of `agents` shows (2 replicas on 2 nodes), or None."""
    seen = {_where(_placement(mesh, a)) for a in agents}
    if len(seen) != 1 or None in seen:
        return None
    (one,) = seen
    assert one is not None
    nodes = {node for _d, _s, node in one[1]}
    return one if len(one[1]) == 2 and len(nodes) == 2 else None


def _leader(mesh: LocalMesh, agent: LocalAgent, region: str) -> str | None:
    done = _murmur(mesh, agent, "regions", "--json")
    if done.returncode != 0:
        return None
    rows = {r["region"]: r for r in json.loads(done.stdout)}
    leader = rows.get(region, {}).get("leader")
    return leader if isinstance(leader, str) else None


def test_placement_agreed_in_each_region_moved_after_kill_9_and_kept_by_a_new_leader(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("lan")
    seed = mesh.add("a0", "r1")
    for name in ("a1", "a2"):
        mesh.add(name, "r1", [seed])
    for name in ("b0", "b1", "b2"):
        mesh.add(name, "r2", [seed])
    ids = _start_all(mesh)
    r1 = mesh.agents[:3]
    r2 = mesh.agents[3:]
    assert wait_until(lambda: _all_alive(mesh, r1, [ids[a.name] for a in r1]), CONVERGE_S)
    (tmp_path / "vib.onnx").write_bytes((MODELS_DIR / "vibration-anomaly.onnx").read_bytes())
    manifest = tmp_path / "vibration.yaml"
    manifest.write_text(
        "name: vibration\nmodel: {name: vib-cnn, version: '1.0'}\nartifact: {file: vib.onnx}\nreplicas: 2\n"
    )
    done = _murmur(mesh, r1[0], "deploy", str(manifest))
    assert done.returncode == 0, done.stderr

    placed: dict[str, tuple[Any, frozenset[tuple[str, int, str]]]] = {}

    def both_placed() -> bool:
        for region, agents in (("r1", r1), ("r2", r2)):
            if region not in placed:
                agreed = _agreed(mesh, agents)
                if agreed is not None:
                    placed[region] = agreed
        return len(placed) == 2

    assert wait_until(both_placed, PLACED_WITHIN_S, 0.3), f"not agreed: {[_placement(mesh, a) for a in r1]}"
    # Another region's placement, forwarded, is the one its own nodes show.
    forwarded = _murmur(mesh, r1[0], "placements", "--region", "r2", "--json")
    assert forwarded.returncode == 0, forwarded.stderr
    assert _where(json.loads(forwarded.stdout)) == placed["r2"]
    listed = _murmur(mesh, r1[0], "get", "deployments")
    assert "DESIRED" in listed.stdout and "4" in listed.stdout, listed.stdout

    # kill -9 of a replica holder that is not the leader of r1.
    leader = json.loads(placed["r1"][0])["leader"]
    holders = {node for _d, _s, node in placed["r1"][1]}
    victim = next(a for a in r1 if ids[a.name] in holders and ids[a.name] != leader)
    survivors = [a for a in r1 if a is not victim]
    mesh.kill(victim)
    killed = time.monotonic()
    moved: tuple[Any, frozenset[tuple[str, int, str]]] | None = None

    def replaced() -> bool:
        nonlocal moved
        moved = _agreed(mesh, survivors)
        return moved is not None and ids[victim.name] not in {n for _d, _s, n in moved[1]}

    ok = wait_until(replaced, 30.0, 0.1)
    took_s = time.monotonic() - killed
    print(f"\nkill -9 of a replica holder in r1 -> its replica elsewhere on both survivors: {took_s:.2f} s")
    assert ok, f"not moved: {[_placement(mesh, a) for a in survivors]}"
    assert took_s <= MOVED_WITHIN_S, f"moved only after {took_s:.2f} s"
    assert moved is not None

    # kill -9 of r2's leader (r1 has one node of three left now: no majority there): a new
    # leader within 5 s; the placement is kept.
    def voters_of_r2() -> int:
        done = _murmur(mesh, r2[0], "regions", "--json")
        rows = {r["region"]: r for r in json.loads(done.stdout)} if done.returncode == 0 else {}
        return len(rows.get("r2", {}).get("voters") or [])

    # The founder is the first voter; the leader adds the others as they prove stable.
    assert wait_until(lambda: voters_of_r2() == 3, 30.0, 0.5), "r2 never had 3 voters"
    leader2 = _leader(mesh, r2[0], "r2")
    assert leader2 is not None
    old = next(a for a in r2 if ids[a.name] == leader2)
    rest = [a for a in r2 if a is not old]
    mesh.kill(old)
    killed = time.monotonic()
    ok = wait_until(lambda: _leader(mesh, rest[0], "r2") not in (None, leader2), 15.0, 0.05)
    took_s = time.monotonic() - killed
    print(f"kill -9 of the leader of r2 -> a new leader in murmur regions: {took_s:.2f} s")
    assert ok, f"no new leader: {_murmur(mesh, rest[0], 'regions', '--json').stdout}"
    assert took_s <= NEW_LEADER_WITHIN_S, f"a new leader only after {took_s:.2f} s"
    survivors_ids = {ids[a.name] for a in rest}
    kept = {r for r in placed["r2"][1] if r[2] in survivors_ids}

    def placement_kept() -> bool:
        agreed = _agreed(mesh, rest)
        return agreed is not None and kept <= agreed[1] and ids[old.name] not in {r[2] for r in agreed[1]}

    # Kept: no replica leaves a live node; the dead leader's replica, if any, moves to a survivor.
    assert wait_until(placement_kept, 15.0, 0.2), f"not kept: {[_placement(mesh, a) for a in rest]}"


def test_a_region_of_5_that_loses_its_leader_and_a_replica_holder_together_still_heals(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    # Five agents, all voters once they prove stable; the leader and a voter holding a
    # replica die together (kill -9). Three voters of five remain: a new leader is elected
    # and its placement puts the lost replicas on live nodes, agreed by every survivor.
    mesh = local_mesh("lan")
    seed = mesh.add("c0", "r1")
    for i in range(1, 5):
        mesh.add(f"c{i}", "r1", [seed])
    ids = _start_all(mesh)
    agents = list(mesh.agents)
    assert wait_until(lambda: _all_alive(mesh, agents, [ids[a.name] for a in agents]), CONVERGE_S)

    def voters() -> list[str]:
        done = _murmur(mesh, agents[0], "regions", "--json")
        rows = {r["region"]: r for r in json.loads(done.stdout)} if done.returncode == 0 else {}
        return list(rows.get("r1", {}).get("voters") or [])

    # Members become voters one at a time once alive for stable_after_s (10 s).
    assert wait_until(lambda: len(voters()) == 5, 60.0, 0.5), f"voters: {voters()}"
    (tmp_path / "vib.onnx").write_bytes((MODELS_DIR / "vibration-anomaly.onnx").read_bytes())
    manifest = tmp_path / "vibration.yaml"
    manifest.write_text(
        "name: vibration\nmodel: {name: vib-cnn, version: '1.0'}\nartifact: {file: vib.onnx}\nreplicas: 2\n"
    )
    assert _murmur(mesh, agents[0], "deploy", str(manifest)).returncode == 0
    placed: list[tuple[Any, frozenset[tuple[str, int, str]]]] = []

    def agreed_pair() -> bool:
        one = _agreed(mesh, agents)
        if one is not None:
            placed.append(one)
        return one is not None

    assert wait_until(agreed_pair, PLACED_WITHIN_S, 0.3), (
        f"not agreed: {[_placement(mesh, a) for a in agents]}"
    )
    stamp, where = placed[-1]
    leader = json.loads(stamp)["leader"]
    holder = next(a for a in agents if ids[a.name] in {n for _d, _s, n in where} and ids[a.name] != leader)
    old_leader = next(a for a in agents if ids[a.name] == leader)
    rest = [a for a in agents if a not in (holder, old_leader)]
    dead = {ids[holder.name], leader}
    mesh.kill(old_leader)
    mesh.kill(holder)
    killed = time.monotonic()
    ok = wait_until(lambda: _leader(mesh, rest[0], "r1") not in (None, leader), 15.0, 0.05)
    took_leader_s = time.monotonic() - killed
    assert ok, f"no new leader: {_murmur(mesh, rest[0], 'regions', '--json').stdout}"

    def healed() -> bool:
        one = _agreed(mesh, rest)
        return one is not None and not dead & {n for _d, _s, n in one[1]}

    ok = wait_until(healed, DOUBLE_LOSS_HEALED_WITHIN_S, 0.1)
    took_s = time.monotonic() - killed
    print(
        f"\nleader and a replica holder killed together in a region of 5 -> a new leader in "
        f"{took_leader_s:.2f} s, both replicas on live nodes at every survivor in {took_s:.2f} s"
    )
    assert ok, f"not healed: {[_placement(mesh, a) for a in rest]}"
    assert took_s <= DOUBLE_LOSS_HEALED_WITHIN_S, f"healed only after {took_s:.2f} s"
