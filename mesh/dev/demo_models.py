"""The models part of `murmur demo`: deploy the example models, read replicas, send inferences.

Deploying is what `murmur deploy FILE` does (upload the artifact to one node, sign the
manifest with the operator key, submit it there); the peers then fetch the artifact from
that node. Inferences are plain Open Inference Protocol requests over HTTP.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing

from gossip.records import key_id
from inference.desired import sign_deployment
from mesh.cli.client import CliError, NodeClient
from mesh.cli.deploy import upload_artifact
from mesh.cli.manifest import read_manifest_and_artifact
from mesh.dev.localmesh import LocalAgent
from mesh.examples.build_models import MODELS_DIR
from mesh.trust.deploy import record_to_b64

# The story's model: 2 replicas per region, so that killing one of its holders leaves one
# serving while the leader places the lost one elsewhere.
STORY_MODEL = "vibration-anomaly"
STORY_REPLICAS_PER_REGION = 2
EXAMPLE_MODELS = (STORY_MODEL, "image-classifier", "tabular-mlp")
WINDOW_SAMPLES = 128  # the vibration model's window: float32 [batch, 3, 128]
INFER_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Deployed:
    """One example model the demo deployed."""

    name: str
    artifact_file: str
    size_bytes: int
    uploaded: bool
    replicas_per_region: int


def demo_manifest(name: str, out_dir: Path) -> Path:
    """A copy of the example manifest `name` in `out_dir`, pointing at the example artifact
    by absolute path; the story's model gets STORY_REPLICAS_PER_REGION replicas."""
    text = (MODELS_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    text = text.replace(f"file: {name}.onnx", f"file: {MODELS_DIR / f'{name}.onnx'}")
    if name == STORY_MODEL:
        text = text.replace("replicas: 1", f"replicas: {STORY_REPLICAS_PER_REGION}")
    path = out_dir / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def deploy(key: nacl.signing.SigningKey, node: NodeClient, manifest: Path) -> Deployed:
    """Upload the manifest's artifact to `node` and submit the signed deployment there."""
    deployment, artifact_file = read_manifest_and_artifact(manifest)
    uploaded = False
    if artifact_file is not None:
        uploaded = upload_artifact(
            key, node, artifact_file, deployment.artifact_sha256, deployment.artifact_size_bytes
        )
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_deployment(key, deployment, version)
    node.submit(
        key, "POST", "/v1/deployments", {"manifest": deployment.to_doc(), "record": record_to_b64(record)}
    )
    per_region = STORY_REPLICAS_PER_REGION if deployment.name == STORY_MODEL else 1
    return Deployed(
        deployment.name,
        artifact_file.name if artifact_file else "-",
        deployment.artifact_size_bytes,
        uploaded,
        per_region,
    )


def region_replicas(agent: LocalAgent, region: str) -> list[dict[str, Any]]:
    """The replica rows of `region`'s placement as `agent` answers them ([] if it does not)."""
    try:
        doc = NodeClient(agent.url).get("/v1/placements", {"region": region})
    except CliError:
        return []
    rows = doc.get("replicas") if isinstance(doc, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def region_leader(agent: LocalAgent, region: str) -> str | None:
    """The node id that stamped `region`'s placement, as `agent` answers it."""
    try:
        doc = NodeClient(agent.url).get("/v1/placements", {"region": region})
    except CliError:
        return None
    stamp = doc.get("stamp") if isinstance(doc, dict) else None
    return str(stamp.get("leader")) if isinstance(stamp, dict) and stamp.get("leader") else None


def fetched_from(agent: LocalAgent) -> list[tuple[str, list[str]]]:
    """(sha256, source peers) of each artifact transfer `agent` finished."""
    try:
        rows = NodeClient(agent.url).get("/v1/transfers")
    except CliError:
        return []
    out: list[tuple[str, list[str]]] = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("state") == "done":
            peers = row.get("peers")
            sources = [
                str(p.get("node"))
                for p in (peers if isinstance(peers, list) else [])
                if isinstance(p, dict) and p.get("bytes")
            ]
            out.append((str(row.get("sha256")), sources))
    return out


def vibration_request() -> bytes:
    """An inference request for the story's model: one window of a smooth 3-axis vibration."""
    data = [
        round(0.5 * math.sin(2 * math.pi * (t / 32 + axis / 3)), 5)
        for axis in range(3)
        for t in range(WINDOW_SAMPLES)
    ]
    doc = {"inputs": [{"name": "window", "shape": [1, 3, WINDOW_SAMPLES], "datatype": "FP32", "data": data}]}
    return json.dumps(doc).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """One inference: its HTTP status (0: no answer), outputs or error, and latency."""

    status: int
    doc: Any
    latency_s: float

    @property
    def ok(self) -> bool:
        return self.status == 200


def infer(agent: LocalAgent, model: str, body: bytes, timeout_s: float = INFER_TIMEOUT_S) -> Answer:
    """POST one inference to `agent` (it serves it or forwards it to a ready replica)."""
    request = urllib.request.Request(
        f"{agent.url}/v2/models/{model}/infer",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return Answer(resp.status, json.loads(resp.read()), time.monotonic() - started)
    except urllib.error.HTTPError as exc:
        try:
            doc: Any = json.loads(exc.read())
        except (ValueError, OSError):
            doc = None
        return Answer(exc.code, doc, time.monotonic() - started)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Answer(0, {"error": str(exc)}, time.monotonic() - started)


def first_output(answer: Answer) -> str:
    """The first output of an answer as `NAME = value`, or its error."""
    doc = answer.doc if isinstance(answer.doc, dict) else {}
    outputs = doc.get("outputs")
    if answer.ok and isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        data = outputs[0].get("data")
        value = data[0] if isinstance(data, list) and len(data) == 1 else data
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f"{outputs[0].get('name')} = {shown}"
    return f"HTTP {answer.status}: {doc.get('error', 'no answer')}"
