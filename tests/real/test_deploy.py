"""Real agents: `murmur deploy` at one node reaches every node; kill -9 after a 202 loses nothing.

The bounds are the issue's functional timeouts; the observed figures are printed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gossip.records import key_id
from inference.desired import sign_deployment
from inference.manifest import parse_manifest
from mesh.cli.client import NodeClient
from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.trust.deploy import next_version, record_to_b64
from mesh.trust.opsign import load_signing_key
from tests.real.conftest import MeshFactory
from tests.real.test_agents import _start_all, converged_region

pytestmark = pytest.mark.real

PROPAGATE_S = 3.0
RESTART_S = 20.0
MANIFEST = f"""
name: vibration
model: {{name: vib-cnn, version: "1.0"}}
artifact: {{sha256: "{"ef" * 32}", size_bytes: 1000}}
replicas: {{r1: 2}}
requirements: {{min_memory_bytes: 256Mi}}
priority: 10
"""


def _version_at(mesh: LocalMesh, agent: LocalAgent, name: str) -> int | None:
    doc = mesh.get(agent, f"/v1/deployments/{name}")
    return None if doc is None else int(doc["version"])


def _murmur(mesh: LocalMesh, node: LocalAgent, *args: str) -> subprocess.CompletedProcess[str]:
    assert mesh.token_path is not None
    cmd = [
        sys.executable,
        "-m",
        "mesh.cli",
        "--node",
        node.url,
        "--cluster",
        str(mesh.token_path.parent),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_deploy_at_one_node_reaches_all_five_within_3_s(local_mesh: MeshFactory, tmp_path: Path) -> None:
    mesh = local_mesh("lan")
    converged_region(mesh, 5)

    manifest = tmp_path / "vibration.yaml"
    manifest.write_text(MANIFEST)
    entry = mesh.agents[2]
    done = _murmur(mesh, entry, "deploy", str(manifest))
    accepted = time.monotonic()
    assert done.returncode == 0, done.stderr
    version = int(done.stdout.split("version ")[-1].split()[0])
    assert _version_at(mesh, entry, "vibration") == version  # the 202 came after it was held

    def everywhere() -> bool:
        return all(_version_at(mesh, a, "vibration") == version for a in mesh.agents)

    assert wait_until(everywhere, PROPAGATE_S, interval_s=0.02), (
        f"not on every node {PROPAGATE_S} s after the 202: "
        f"{ {a.name: _version_at(mesh, a, 'vibration') for a in mesh.agents} }"
    )
    print(f"\ndeploy at {entry.name}: on all 5 nodes {time.monotonic() - accepted:.3f} s after the 202")

    # An update with --wait returns only once every alive node holds it.
    manifest.write_text(MANIFEST.replace("r1: 2", "r1: 3"))
    started = time.monotonic()
    done = _murmur(mesh, mesh.agents[4], "deploy", str(manifest), "--wait", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert "held by all 5 alive nodes" in done.stdout, done.stdout
    print(f"deploy --wait (update) returned after {time.monotonic() - started:.3f} s: {done.stdout.strip()}")
    listed = _murmur(mesh, mesh.agents[0], "get", "deployments")
    assert "vibration" in listed.stdout and '{"r1":3}' in listed.stdout, listed.stdout

    done = _murmur(mesh, mesh.agents[1], "delete", "vibration")
    assert done.returncode == 0, done.stderr
    assert wait_until(
        lambda: all(_version_at(mesh, a, "vibration") is None for a in mesh.agents), PROPAGATE_S
    )


def test_kill_9_right_after_the_202_loses_nothing_and_the_record_gossips_on(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("lan")
    lone = mesh.add("a0", "r1")
    _start_all(mesh)
    assert mesh.token_path is not None
    key = load_signing_key(mesh.token_path.parent / "operator.key")

    # Sign and send in-process, so the kill follows the 202 by microseconds.
    deployment = parse_manifest(MANIFEST)
    version = next_version(None, time.time())
    record = sign_deployment(key, deployment, version)
    doc = {"manifest": deployment.to_doc(), "record": record_to_b64(record)}
    status, body = NodeClient(lone.url).signed(key, "POST", "/v1/deployments", doc)
    mesh.kill(lone)
    assert status == 202, body
    assert body["record"]["author"] == key_id(bytes(key.verify_key))

    mesh.start(lone)
    assert wait_until(lambda: _version_at(mesh, lone, "vibration") is not None, RESTART_S), lone.log_tail()
    assert _version_at(mesh, lone, "vibration") == version
    print(f"\nkill -9 right after the 202, restart: {lone.name} still holds version {version}")

    # Nobody else ever heard of it before the crash: new peers learn it from the restarted node.
    for i in (1, 2):
        mesh.start(mesh.add(f"a{i}", "r1", [lone]))
    started = time.monotonic()
    assert wait_until(
        lambda: all(_version_at(mesh, a, "vibration") == version for a in mesh.agents), RESTART_S
    ), {a.name: _version_at(mesh, a, "vibration") for a in mesh.agents}
    print(f"two new peers hold it {time.monotonic() - started:.2f} s after they were started")


def test_deploy_uploads_the_artifact_file_once(local_mesh: MeshFactory, tmp_path: Path) -> None:
    mesh = local_mesh("lan")
    lone = mesh.add("a0", "r1")
    _start_all(mesh)
    model = tmp_path / "vib.onnx"
    model.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    manifest = tmp_path / "vibration.yaml"
    manifest.write_text(
        "name: vibration\nmodel: {name: vib-cnn, version: '1.0'}\nartifact: {file: vib.onnx}\nreplicas: 1\n"
    )
    done = _murmur(mesh, lone, "deploy", str(manifest))
    assert done.returncode == 0, done.stderr
    assert "uploaded to" in done.stdout, done.stdout
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    with urllib.request.urlopen(f"{lone.url}/v1/artifacts/{sha}", timeout=5) as resp:
        assert resp.read() == model.read_bytes()
    assert mesh.get(lone, "/v1/deployments/vibration")["manifest"]["artifact"]["sha256"] == sha
    again = _murmur(mesh, lone, "deploy", str(manifest))
    assert again.returncode == 0 and "already held by" in again.stdout, again.stdout + again.stderr
