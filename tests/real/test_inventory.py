"""Real `murmur agent` processes on 127.0.0.1: every node's inventory reaches its region's peers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import _start_all

pytestmark = pytest.mark.real

PROPAGATE_S = 10.0


def _with_label(mesh: LocalMesh, label: str) -> None:
    """Start this mesh's agents with `--label label` (LocalMesh has no label option)."""
    command = mesh.command

    def labelled(agent: LocalAgent) -> list[str]:
        return [*command(agent), "--label", label]

    mesh.command = labelled  # type: ignore[method-assign]


def _inventory(mesh: LocalMesh, observer: LocalAgent, node_id: str) -> dict[str, Any] | None:
    try:
        body = mesh.get(observer, f"/v1/nodes/{node_id}")
    except Exception:
        return None
    inv = body.get("inventory") if isinstance(body, dict) else None
    return inv if isinstance(inv, dict) else None


def test_three_agents_see_each_others_inventory(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("lan")
    _with_label(mesh, "zone=a")
    seed = mesh.add("a0", "r1")
    for i in (1, 2):
        mesh.add(f"a{i}", "r1", [seed])
    ids = _start_all(mesh)

    started = time.monotonic()

    def all_known() -> bool:
        for observer in mesh.agents:
            for name, node_id in ids.items():
                if name == observer.name:
                    continue
                inv = _inventory(mesh, observer, node_id)
                if inv is None or inv.get("labels") != {"zone": "a"}:
                    return False
        return True

    ok = wait_until(all_known, PROPAGATE_S, interval_s=0.1)
    elapsed = time.monotonic() - started
    missing = {
        o.name: [n for n, i in ids.items() if n != o.name and _inventory(mesh, o, i) is None]
        for o in mesh.agents
    }
    assert ok, f"inventory not everywhere within {PROPAGATE_S} s; missing (observer: nodes): {missing}"
    print(f"every agent holds every other agent's inventory: {elapsed:.2f} s after all 3 APIs answered")
    inv = _inventory(mesh, mesh.agents[1], ids["a0"])
    assert inv is not None and inv["cpu_count"] >= 1 and inv["region"] == "r1" and inv["version"] > 0
    # Idle, with its inventory collected and gossiped, an agent that serves no model has loaded
    # neither onnxruntime nor numpy (issue 11's footprint; docs/benchmarks.md).
    loaded = {a.name: [p for p in ("onnxruntime", "numpy") if a.maps_package(p)] for a in mesh.agents}
    assert loaded == {a.name: [] for a in mesh.agents}, f"idle agents hold model libraries: {loaded}"
