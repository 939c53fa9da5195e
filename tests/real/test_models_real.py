"""Real agents on 127.0.0.1 with the model host: an example model deployed with the CLI becomes
`ready` only after its warm-up (events: loading, then ready; the host's load and warm-up times),
a corrupt model is `failed` with onnxruntime's error in `murmur placements --json` and the
`replica_failed` event, and a node saturated with inferences is never suspected by its peer
(the loop lag is measured and printed, not asserted).

There is no peer-to-peer transfer yet, so `murmur deploy` is run against every node: each
upload fills that node's store (the signed record is the same: `unchanged` after the first).
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
from tests.real.test_agents import converged_region
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

READY_WITHIN_S = 30.0  # founding, the deploy's gossip, a placement, then load and warm-up
LOAD_S = 10.0


def _deploy_everywhere(mesh: LocalMesh, manifest: Path) -> None:
    for agent in mesh.agents:
        done = _murmur(mesh, agent, "deploy", str(manifest))
        assert done.returncode == 0, done.stderr


def _replicas(mesh: LocalMesh, agent: LocalAgent) -> list[dict[str, Any]]:
    done = _murmur(mesh, agent, "placements", "--json")
    if done.returncode != 0:
        return []
    rows = json.loads(done.stdout).get("replicas")
    return rows if isinstance(rows, list) else []


def _events(mesh: LocalMesh, agent: LocalAgent, kind: str) -> list[dict[str, Any]]:
    rows = mesh.get(agent, "/v1/events", {"kind": kind})
    return rows.get("events", []) if isinstance(rows, dict) else rows if isinstance(rows, list) else []


def test_an_example_model_is_ready_after_its_warm_up_and_a_corrupt_one_failed_with_its_error(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 3)
    by_id = {node_id: name for name, node_id in ids.items()}
    agents = {a.name: a for a in mesh.agents}
    _deploy_everywhere(mesh, MODELS_DIR / "vibration-anomaly.yaml")
    (tmp_path / "broken.onnx").write_bytes(b"onnx" * 256)
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\nmodel: {name: broken, version: '1'}\nartifact: {file: broken.onnx}\nreplicas: 3\n"
    )
    _deploy_everywhere(mesh, broken)

    def states(name: str) -> dict[str, str]:
        return {r["node"]: r["state"] for r in _replicas(mesh, mesh.agents[0]) if r["deployment"] == name}

    assert wait_until(lambda: list(states("vibration-anomaly").values()) == ["ready"], READY_WITHIN_S, 0.3), (
        f"not ready: {_replicas(mesh, mesh.agents[0])}"
    )
    assert wait_until(lambda: sorted(states("broken").values()) == ["failed"] * 3, READY_WITHIN_S, 0.3)
    (holder_id,) = states("vibration-anomaly")
    holder = agents[by_id[holder_id]]
    # On the holder: loading came before ready, and the host says what the warm-up took.
    kinds = [
        e["kind"]
        for e in _events(mesh, holder, "replica_loading,replica_ready,replica_assigned")
        if e["subject"].startswith("vibration-anomaly/")
    ]
    assert kinds[-2:] == ["replica_loading", "replica_ready"], kinds
    doc = mesh.get(holder, "/v1/placements")
    (model,) = [m for m in doc["models"] if m["deployment"] == "vibration-anomaly"]
    assert model["state"] == "ready" and model["providers"] == ["CPUExecutionProvider"]
    print(
        f"\nvibration-anomaly on {holder.name}: load {model['load_ms']} ms, warm-up {model['warmup_ms']} ms"
    )
    assert "ready (CPUExecutionProvider; load" in holder.log_path.read_text()
    # Each node shows its own failed replica's error, in the API, the event and its log.
    for agent in mesh.agents:
        (row,) = [
            r for r in _replicas(mesh, agent) if r["deployment"] == "broken" and r["node"] == ids[agent.name]
        ]
        assert row["state"] == "failed" and row["error"].startswith("load failed: "), row
        (failed,) = _events(mesh, agent, "replica_failed")
        assert failed["reason"].startswith("replica broken/") and "load failed: " in failed["reason"]
        assert "model broken 1" in agent.log_path.read_text()
    # ... and every other node shows the start of it, from that node's replicas record.
    for agent in mesh.agents:
        others = [
            r for r in _replicas(mesh, agent) if r["deployment"] == "broken" and r["node"] != ids[agent.name]
        ]
        assert len(others) == 2 and all(r["error"].startswith("load failed: ") for r in others), others
        assert all(len(r["error"]) <= 64 for r in others)
    table = _murmur(mesh, mesh.agents[0], "placements")
    assert "failed" in table.stdout and "load failed: " in table.stdout, table.stdout
    # deploy --wait names a failed replica with its node's error and ends with exit 1, long before
    # its timeout: a failed version is not retried, so waiting would not help.
    started = time.monotonic()
    waited = _murmur(mesh, mesh.agents[1], "deploy", str(broken), "--wait", "--timeout", "50")
    print(
        f"deploy --wait of the corrupt model: exit {waited.returncode} "
        f"after {time.monotonic() - started:.1f} s"
    )
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "replica(s) will not become ready without a change" in waited.stderr, waited.stderr
    assert "failed: load failed: " in waited.stderr and "Traceback" not in waited.stderr


def test_a_node_saturated_with_inferences_is_never_suspected(local_mesh: MeshFactory, tmp_path: Path) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 2)
    busy, peer = mesh.agents
    # Two replicas on two nodes: the busy node surely holds one.
    manifest = tmp_path / "image-classifier.yaml"
    text = (MODELS_DIR / "image-classifier.yaml").read_text()
    text = text.replace("replicas: 1", "replicas: 2")
    manifest.write_text(
        text.replace("file: image-classifier.onnx", f"file: {MODELS_DIR}/image-classifier.onnx")
    )
    _deploy_everywhere(mesh, manifest)

    def ready_on_busy() -> bool:
        doc = mesh.get(busy, "/v1/placements")
        return isinstance(doc, dict) and any(
            m["deployment"] == "image-classifier" and m["state"] == "ready" for m in doc.get("models", [])
        )

    assert wait_until(ready_on_busy, READY_WITHIN_S, 0.3), f"not ready: {_replicas(mesh, busy)}"
    suspected_before = len(_events(mesh, peer, "member_suspect,member_dead"))
    answer = mesh.post(
        busy,
        "/v1/debug/infer-load",
        {"deployment": "image-classifier", "duration_s": LOAD_S, "concurrency": 16},
    )
    assert answer == {"running": True}, answer
    started = time.monotonic()
    result: dict[str, Any] = {}

    def finished() -> bool:
        doc = mesh.get(busy, "/v1/debug/infer-load")
        if isinstance(doc, dict) and not doc.get("running", True):
            result.update(doc)
            return True
        return False

    assert wait_until(finished, LOAD_S + 20.0, 0.5), "the load never finished"
    print(
        f"\n{result['inferences']} inferences in {result['duration_s']} s at concurrency 16 "
        f"({result['inferences'] / result['duration_s']:.0f}/s); event loop lag ms: {result['loop_lag_ms']} "
        f"(wall {time.monotonic() - started:.1f} s)"
    )
    assert result["errors"] == 0 and result["inferences"] > 0, result
    suspected = _events(mesh, peer, "member_suspect,member_dead")[suspected_before:]
    assert suspected == [], f"{peer.name} suspected {busy.name} while it served: {suspected}"
    assert mesh.state_of(peer, ids[busy.name]) == "alive"
