"""Real agents on 127.0.0.1, one region of 3: `murmur drain NODE --wait` returns once NODE holds no
replica and the replacements are ready (new before old), with its progress on stderr; a second
drain that leaves a replica nowhere to go names the reason and ends with exit 1. The figures
observed are printed, not asserted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.real.conftest import MeshFactory
from tests.real.test_agents import converged_region
from tests.real.test_deploy import _murmur, write_real_model

pytestmark = pytest.mark.real

MANIFEST = "name: vibration\nmodel: {name: vibration-anomaly, version: '1.0.0'}\nreplicas: 2\n"


def test_drain_wait_moves_the_replicas_and_names_one_with_nowhere_to_go(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 3)
    manifest = tmp_path / "vibration.yaml"
    write_real_model(manifest, MANIFEST)
    deployed = _murmur(mesh, mesh.agents[0], "deploy", str(manifest), "--wait", "--timeout", "50")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    doc = json.loads(_murmur(mesh, mesh.agents[0], "placements", "--json").stdout)
    holders = sorted(r["node"] for r in doc["replicas"] if r["deployment"] == "vibration")
    assert len(holders) == 2 and set(holders) <= set(ids.values()), doc

    started = time.monotonic()
    drained = _murmur(mesh, mesh.agents[0], "drain", holders[0], "--wait", "--timeout", "50")
    print(f"\n$ murmur drain {holders[0]} --wait  ({time.monotonic() - started:.1f} s)\n{drained.stdout}")
    print(drained.stderr)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert f"drain {holders[0]}: it holds no replica in region r1; 1 moved, every replacement ready" in (
        drained.stdout
    )
    assert "1/1 replicas moved" in drained.stderr  # stderr is not a terminal: plain lines
    doc = json.loads(_murmur(mesh, mesh.agents[1], "placements", "--json").stdout)
    now = [r for r in doc["replicas"] if r["deployment"] == "vibration"]
    assert holders[0] not in {r["node"] for r in now} and [r["state"] for r in now] == ["ready", "ready"]

    # Two replicas, spread over distinct nodes, and only two schedulable nodes left: the second
    # holder's replica has nowhere to go, so its drain waits for good. --wait says why.
    stuck = _murmur(mesh, mesh.agents[2], "drain", holders[1], "--wait", "--timeout", "50")
    print(f"$ murmur drain {holders[1]} --wait  (exit {stuck.returncode})\n{stuck.stderr}")
    assert stuck.returncode == 1, stuck.stdout + stuck.stderr
    assert "replacement(s) will not become ready without a change" in stuck.stderr
    assert "cannot be placed: " in stuck.stderr and "The node stays draining" in stuck.stderr
