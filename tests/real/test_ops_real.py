"""The operator's fleet commands against real agents on 127.0.0.1, 2 regions of 2: `status`,
`plan`, `node` and `describe deployment` asked at a node of r1 answer for r2 too (forwarded),
and `scale --wait` changes the count everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mesh.dev.localmesh import wait_until
from mesh.examples.build_models import MODELS_DIR
from tests.real.conftest import MeshFactory
from tests.real.test_agents import CONVERGE_S, _all_alive, _start_all
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

PLACED_WITHIN_S = 30.0  # founding, then the deploy's gossip and a placement (test_placement_real.py)
MANIFEST = (
    "name: vibration\nmodel: {name: vib-cnn, version: '1.0'}\nartifact: {file: vib.onnx}\nreplicas: %d\n"
)


def test_status_plan_node_describe_and_scale_work_across_regions(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("lan")
    seed = mesh.add("a0", "r1")
    mesh.add("a1", "r1", [seed])
    b_seed = mesh.add("b0", "r2", [seed])
    mesh.add("b1", "r2", [b_seed])  # joined through its own region: r2 is one pool from the start
    ids = _start_all(mesh)
    r1, r2 = mesh.agents[:2], mesh.agents[2:]
    assert wait_until(lambda: _all_alive(mesh, r1, [ids[a.name] for a in r1]), CONVERGE_S)
    assert wait_until(lambda: _all_alive(mesh, r2, [ids[a.name] for a in r2]), CONVERGE_S)
    # A model that loads: scale --wait waits for ready replicas (a corrupt one would end it with 1).
    (tmp_path / "vib.onnx").write_bytes((MODELS_DIR / "vibration-anomaly.onnx").read_bytes())
    for count in (2, 3):
        (tmp_path / f"vib{count}.yaml").write_text(MANIFEST % count)
    done = _murmur(mesh, r1[0], "deploy", str(tmp_path / "vib2.yaml"))
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = {}

    def both_led_and_placed() -> bool:
        nonlocal status
        done = _murmur(mesh, r1[0], "status", "--json")
        status = json.loads(done.stdout) if done.returncode == 0 else {}
        rows = status.get("regions", [])
        return len(rows) == 2 and all(r.get("leader") and r.get("desired") == 2 for r in rows)

    assert wait_until(both_led_and_placed, PLACED_WITHIN_S, 0.5), status
    assert status["totals"]["desired"] == 4 and status["totals"]["nodes"]["alive"] == 4
    shown = _murmur(mesh, r1[0], "status")
    assert shown.returncode == 0 and "r1 " in shown.stdout and "r2 " in shown.stdout, shown.stdout

    # plan: r2's part is computed at a node of r2; 2 per region fits, 3 does not (2 nodes each).
    fits = _murmur(mesh, r1[0], "plan", str(tmp_path / "vib2.yaml"), "--json")
    assert fits.returncode == 0, fits.stdout + fits.stderr
    rows = {r["region"]: r for r in json.loads(fits.stdout)["regions"]}
    assert rows["r2"]["node"] in {ids[a.name] for a in r2} and len(rows["r2"]["replicas"]) == 2
    assert rows["r1"]["changes"] == [] and rows["r2"]["changes"] == []  # the same manifest moves nothing
    too_many = _murmur(mesh, r1[0], "plan", str(tmp_path / "vib3.yaml"))
    assert too_many.returncode == 1, too_many.stdout + too_many.stderr
    fits_text = _murmur(mesh, r1[0], "plan", str(tmp_path / "vib2.yaml")).stdout
    print(f"\n$ murmur status\n{shown.stdout}\n$ murmur plan vib2.yaml\n{fits_text}")
    print(f"$ murmur plan vib3.yaml  (exit {too_many.returncode})\n{too_many.stdout}")
    assert (
        "cannot place vibration/2" in too_many.stdout and "2 replica(s) would be unplaced" in too_many.stdout
    )

    # node: a node of r2 by a prefix, asked at r1.
    b0 = ids["b0"]
    node = _murmur(mesh, r1[0], "node", b0[:6], "--json")
    assert node.returncode == 0, node.stderr
    row = json.loads(node.stdout)
    assert row["id"] == b0 and row["region"] == "r2" and row["state"] == "alive"
    assert row["seen_by"] in {ids[a.name] for a in r2} and row["inventory"]["cpu_count"] >= 1

    print(f"$ murmur node {b0[:6]}\n{_murmur(mesh, r1[0], 'node', b0[:6]).stdout}")
    shown = _murmur(mesh, r1[0], "describe", "deployment", "vibration")
    print(f"$ murmur describe deployment vibration\n{shown.stdout}")
    described = _murmur(mesh, r1[0], "describe", "deployment", "vibration", "--json")
    assert described.returncode == 0, described.stderr
    doc = json.loads(described.stdout)
    assert sorted(r["region"] for r in doc["regions"]) == ["r1", "r2"]
    assert all(r["desired"] == 2 and len(r["replicas"]) == 2 for r in doc["regions"])
    assert any(e["kind"] == "command_accepted" for e in doc["events"])

    scaled = _murmur(mesh, r1[0], "scale", "vibration", "1", "--wait", "--timeout", "30")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    assert "scaled from 2 per region to 1 per region" in scaled.stdout

    def scaled_down() -> bool:
        done = _murmur(mesh, r2[0], "status", "--json")
        return done.returncode == 0 and json.loads(done.stdout)["totals"]["desired"] == 2

    assert wait_until(scaled_down, PLACED_WITHIN_S, 0.5)
