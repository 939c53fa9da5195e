"""Issue 11's end-to-end proof, with real agents on 127.0.0.1: 6 agents in 2 regions of 3.

The example vibration-anomaly model is deployed with `murmur deploy` at one node (the CLI
uploads the artifact to that node only) with 2 replicas per region. Then:

- every region shows 2 ready replicas, and each replica node other than the uploader got the
  artifact from a peer (its GET /v1/transfers names a source node other than itself);
- POST /v2/models/vibration/infer (JSON tensors) at the node of each region that holds no
  replica (so the request is forwarded) answers exactly what a direct onnxruntime
  `session.run` gives on the same input;
- during a stream of requests from 5 concurrent clients through that node of r1, kill -9 of
  one of the two replica nodes it forwards to: every request gets a 200 (the router retries
  on the other replica), and the replacement replica is ready (`murmur placements --json`)
  and answers a request within the issue's 10 s of the kill.

The figures are printed (run with -s to see them); the only bound asserted is the issue's 10 s.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.examples.build_models import MODELS_DIR
from tests.real.conftest import MeshFactory
from tests.real.test_agents import CONVERGE_S, _all_alive, _start_all
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

READY_WITHIN_S = 60.0  # founding, the deploy's gossip, placement, peer transfers, load and warm-up
REPLACED_WITHIN_S = 10.0  # the bound: a replacement serves within 10 s of the kill
CLIENTS = 5
MODEL = "vibration"

# Region r2 joins through a seed in r1: its members learn of each other from the region's
# admission records, spread by anti-entropy, not from their seed at once (at 5.0 s after
# start in a failed run, two of three had just met); the bound is for a join, not a speed.
REGIONS_CONVERGE_S = 4 * CONVERGE_S


def _manifest(tmp_path: Path) -> Path:
    text = (MODELS_DIR / "vibration-anomaly.yaml").read_text()
    text = text.replace("name: vibration-anomaly\n", f"name: {MODEL}\n").replace("replicas: 1", "replicas: 2")
    text = text.replace("file: vibration-anomaly.onnx", f"file: {MODELS_DIR}/vibration-anomaly.onnx")
    path = tmp_path / "vibration.yaml"
    path.write_text(text)
    return path


def _replicas(mesh: LocalMesh, agent: LocalAgent) -> list[dict[str, Any]]:
    doc = mesh.get(agent, "/v1/placements")
    rows = doc.get("replicas") if isinstance(doc, dict) else None
    return [r for r in rows or [] if r.get("deployment") == MODEL]


def _ready_nodes(rows: list[dict[str, Any]]) -> set[str] | None:
    """The 2 nodes of a region's 2 ready replicas, or None before that."""
    nodes = {r["node"] for r in rows if r.get("state") == "ready"}
    return nodes if len(rows) == 2 and len(nodes) == 2 else None


def _infer(agent: LocalAgent, body: bytes, timeout_s: float = 10.0, model: str = MODEL) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{agent.url}/v2/models/{model}/infer", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:200]


def _answered_ok(agent: LocalAgent) -> dict[str, float]:
    """route -> murmur_inference_requests_total{model=MODEL, route, code="200"} of the agent."""
    with urllib.request.urlopen(f"{agent.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "murmur_inference_requests_total"
        and sample.labels.get("model") == MODEL
        and sample.labels.get("code") == "200"
    }


def _outputs(doc: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    assert all(o["datatype"] == "FP32" for o in doc["outputs"]), doc["outputs"]
    return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in doc["outputs"]}


class _Stream:
    """`CLIENTS` threads sending the same request to one node in a loop until stopped."""

    def __init__(self, agent: LocalAgent, body: bytes) -> None:
        self.statuses: dict[int | str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(agent, body), daemon=True) for _ in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, agent: LocalAgent, body: bytes) -> None:
        while not self._stop.is_set():
            try:
                status: int | str = _infer(agent, body)[0]
            except OSError as exc:  # no answer at all counts, by its kind
                status = type(exc).__name__
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> dict[int | str, int]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30.0)
        return dict(self.statuses)


def test_a_model_deployed_once_serves_exactly_through_any_node_and_survives_a_kill_9(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("lan")
    seed = mesh.add("a0", "r1")
    for name in ("a1", "a2"):
        mesh.add(name, "r1", [seed])
    for name in ("b0", "b1", "b2"):
        mesh.add(name, "r2", [seed])
    ids = _start_all(mesh)
    by_id = {node_id: a for a in mesh.agents for name, node_id in ids.items() if a.name == name}
    regions = {"r1": mesh.agents[:3], "r2": mesh.agents[3:]}
    for agents in regions.values():
        assert wait_until(lambda a=agents: _all_alive(mesh, a, [ids[x.name] for x in a]), REGIONS_CONVERGE_S)
    uploader = regions["r1"][0]
    deployed_at = time.monotonic()
    done = _murmur(mesh, uploader, "deploy", str(_manifest(tmp_path)))
    assert done.returncode == 0, done.stderr

    holders: dict[str, set[str]] = {}

    def all_ready() -> bool:
        for region, agents in regions.items():
            nodes = _ready_nodes(_replicas(mesh, agents[0]))
            if nodes is None:
                return False
            holders[region] = nodes
        return True

    assert wait_until(all_ready, READY_WITHIN_S, 0.3), {r: _replicas(mesh, a[0]) for r, a in regions.items()}
    print(
        f"\ndeployed at {uploader.name} -> 2 ready replicas in each region: "
        f"{time.monotonic() - deployed_at:.2f} s"
    )
    for region, nodes in holders.items():
        print(f"{region}: replicas on {sorted(by_id[n].name for n in nodes)}")

    # The artifact reached every replica node but the uploader from a peer.
    for node in sorted(set().union(*holders.values()) - {ids[uploader.name]}):
        agent = by_id[node]
        rows = mesh.get(agent, "/v1/transfers") or []
        (transfer,) = [t for t in rows if t["state"] == "done"]
        sources = {by_id[p["node"]].name: p["bytes"] for p in transfer["peers"] if p["bytes"]}
        print(f"{agent.name}: artifact from {sources}")
        assert sources and agent.name not in sources, transfer

    # Through the node of each region that holds no replica: exactly a direct session.run.
    session = ort.InferenceSession(
        str(MODELS_DIR / "vibration-anomaly.onnx"), providers=["CPUExecutionProvider"]
    )
    (spec,) = session.get_inputs()
    shape = [1 if not isinstance(d, int) else d for d in spec.shape]
    window = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    direct = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {spec.name: window}), strict=True)
    )
    body = json.dumps(
        {"inputs": [{"name": spec.name, "shape": shape, "datatype": "FP32", "data": window.ravel().tolist()}]}
    ).encode()
    clients: dict[str, LocalAgent] = {}
    for region, agents in regions.items():
        (client,) = [a for a in agents if ids[a.name] not in holders[region]]
        clients[region] = client
        status, doc = _infer(client, body)
        assert status == 200, doc
        served = _outputs(doc)
        assert served.keys() == direct.keys()
        # Exact: FP32 values pass through JSON as Python floats (doubles, which hold every
        # float32 exactly and print shortest-round-trip), and the replica runs the same
        # model bytes with the same onnxruntime on the same CPU, so not one bit may differ.
        for name, want in direct.items():
            assert np.array_equal(served[name], want), (name, served[name], want)
        print(f"{region}: {client.name} (no replica) forwarded; outputs equal session.run exactly: {direct}")
    # A forward passes the body on undecoded: the nodes without a replica have loaded neither
    # numpy nor onnxruntime; the replica nodes, which loaded the model, hold both.
    libraries = ("numpy", "onnxruntime")
    loaded = {a.name: [p for p in libraries if a.maps_package(p)] for a in mesh.agents}
    expected = {
        a.name: list(libraries) if ids[a.name] in set().union(*holders.values()) else [] for a in mesh.agents
    }
    assert loaded == expected, loaded

    # A stream through r1's client; kill -9 of a replica node it forwards to (not the leader,
    # so the placement that replaces it needs no election first).
    client = clients["r1"]
    doc = mesh.get(client, "/v1/placements")
    leader = (doc.get("stamp") or {}).get("leader")
    victim = next(by_id[n] for n in sorted(holders["r1"]) if n != leader)
    survivor = next(n for n in holders["r1"] if n != ids[victim.name])
    stream = _Stream(client, body)
    time.sleep(1.0)  # the stream is under way before the kill
    mesh.kill(victim)
    killed = time.monotonic()
    replacement: dict[str, Any] = {}

    def replaced_and_serving() -> bool:
        nodes = _ready_nodes(_replicas(mesh, client))
        if nodes is None or ids[victim.name] in nodes:
            return False
        (new,) = nodes - {survivor}
        if "ready_s" not in replacement:
            replacement.update(node=new, ready_s=time.monotonic() - killed)
        # A request at the replacement itself is served there (a node with a ready replica
        # never forwards).
        status, answer = _infer(by_id[new], body, timeout_s=2.0)
        if status != 200:
            return False
        replacement["serving_s"] = time.monotonic() - killed
        replacement["answer"] = answer
        return True

    ok = wait_until(replaced_and_serving, 30.0, 0.05)
    time.sleep(1.0)  # and the stream goes on through the new placement
    statuses = stream.stop()
    total = sum(statuses.values())
    errors = total - statuses.get(200, 0)
    print(
        f"kill -9 of {victim.name} during a stream of {CLIENTS} clients through {client.name}: "
        f"{total} requests, {errors} not 200 ({statuses})"
    )
    assert ok, f"not replaced: {_replicas(mesh, client)}"
    new_agent = by_id[replacement["node"]]
    print(
        f"replacement on {new_agent.name}: ready in placements {replacement['ready_s']:.2f} s, "
        f"answered a request {replacement['serving_s']:.2f} s after the kill"
    )
    assert errors == 0, statuses
    assert all(np.array_equal(v, direct[k]) for k, v in _outputs(replacement["answer"]).items())
    assert replacement["serving_s"] <= REPLACED_WITHIN_S, (
        f"served only after {replacement['serving_s']:.2f} s"
    )
    # The client node counted every request it answered (GET /metrics, as Prometheus reads it):
    # the first one and the stream's, forwarded, or served locally once the replacement is on it.
    answered = _answered_ok(client)
    print(f"{client.name} /metrics: murmur_inference_requests_total code 200 by route: {answered}")
    assert sum(answered.values()) >= statuses.get(200, 0) + 1 and answered.get("forwarded", 0) >= 1
    shown = _murmur(mesh, client, "placements", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = [r for r in json.loads(shown.stdout)["replicas"] if r["deployment"] == MODEL]
    assert {r["node"]: r["state"] for r in rows} == {survivor: "ready", replacement["node"]: "ready"}

    # The survivor's inventory, as every node of its region holds it, lists the model it loaded.
    def lists_loaded_model() -> bool:
        doc = mesh.get(client, f"/v1/nodes/{survivor}")
        models = ((doc or {}).get("inventory") or {}).get("models") or []
        return "vibration-anomaly@1.0.0" in models

    assert wait_until(lists_loaded_model, 20.0, 0.5), mesh.get(client, f"/v1/nodes/{survivor}")

    # A model deployed in one region only is served through a node of the other (it reads r2's
    # placement and forwards there), with the outputs a direct session.run gives.
    tabular = (MODELS_DIR / "tabular-mlp.yaml").read_text()
    tabular = tabular.replace("replicas: 1", "replicas: {r2: 1}")
    tabular = tabular.replace("file: tabular-mlp.onnx", f"file: {MODELS_DIR}/tabular-mlp.onnx")
    (tmp_path / "tabular.yaml").write_text(tabular)
    done = _murmur(
        mesh, client, "deploy", str(tmp_path / "tabular.yaml")
    )  # the uploader may be the killed one
    assert done.returncode == 0, done.stderr
    mlp = ort.InferenceSession(str(MODELS_DIR / "tabular-mlp.onnx"), providers=["CPUExecutionProvider"])
    (mlp_in,) = mlp.get_inputs()
    row = np.random.default_rng(11).standard_normal((1, mlp_in.shape[1])).astype(np.float32)
    want = dict(zip([o.name for o in mlp.get_outputs()], mlp.run(None, {mlp_in.name: row}), strict=True))
    request = json.dumps(
        {
            "inputs": [
                {
                    "name": mlp_in.name,
                    "shape": [1, row.shape[1]],
                    "datatype": "FP32",
                    "data": row.ravel().tolist(),
                }
            ]
        }
    ).encode()
    answer: dict[str, Any] = {}

    def served_across_regions() -> bool:
        status, doc = _infer(client, request, model="tabular-mlp")
        answer.update(status=status, doc=doc)
        return status == 200

    assert wait_until(served_across_regions, READY_WITHIN_S, 0.5), answer
    got = _outputs(answer["doc"])
    assert got.keys() == want.keys() and all(np.array_equal(got[k], v) for k, v in want.items())
    print(f"tabular-mlp, deployed in r2 only, answered through {client.name} (r1): outputs equal session.run")
