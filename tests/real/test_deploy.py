"""Real agents: `murmur deploy` at one node reaches every node, `--wait` returns once the replicas
are ready and Ctrl-C stops only the waiting; kill -9 after a 202 loses nothing.

The bounds are the issue's functional timeouts; the observed figures are printed.
"""

from __future__ import annotations

import hashlib
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gossip.records import key_id
from inference.desired import sign_deployment
from inference.manifest import parse_manifest
from mesh.cli.client import EXIT_INTERRUPTED, NodeClient
from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.examples.build_models import MODELS_DIR
from mesh.trust.deploy import next_version, record_to_b64
from mesh.trust.opsign import load_signing_key
from tests.real.conftest import MeshFactory, sigint_as_in_a_terminal
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

    # An update with --wait returns only once every alive node holds it, then once its replicas are
    # ready: a real model this time (uploaded to agents[4], fetched by the replica nodes).
    write_real_model(manifest, MANIFEST.replace("r1: 2", "r1: 3"))
    started = time.monotonic()
    done = _murmur(mesh, mesh.agents[4], "deploy", str(manifest), "--wait", "--timeout", "50")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "held by all 5 alive nodes" in done.stdout, done.stdout
    assert "deployment vibration: 3 replica(s) ready in every region" in done.stdout, done.stdout
    assert "region r1: 3/3 replicas ready" in done.stdout, done.stdout
    # stderr is not a terminal here: the progress came as plain lines, one per change.
    assert "deployment vibration [" in done.stderr and "3/3 replicas ready" in done.stderr, done.stderr
    print(
        f"deploy --wait (update) returned after {time.monotonic() - started:.3f} s:\n"
        f"{done.stdout}{done.stderr}"
    )
    listed = _murmur(mesh, mesh.agents[0], "get", "deployments")
    assert "vibration" in listed.stdout and '{"r1":3}' in listed.stdout, listed.stdout

    # Ctrl-C stops the waiting, not the work: an artifact no node holds is never ready.
    never = tmp_path / "never.yaml"
    never.write_text(MANIFEST.replace("name: vibration", "name: never").replace("r1: 2", "r1: 1"))
    interrupted = _interrupt_wait(mesh, mesh.agents[3], never)
    assert interrupted.returncode == EXIT_INTERRUPTED == 130, interrupted.stderr
    assert "stopped waiting (Ctrl-C); deployment never version" in interrupted.stderr, interrupted.stderr
    assert "Watch it: murmur describe deployment never" in interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert _version_at(mesh, mesh.agents[0], "never") is not None  # accepted, and it stays

    done = _murmur(mesh, mesh.agents[1], "delete", "vibration")
    assert done.returncode == 0, done.stderr
    assert wait_until(
        lambda: all(_version_at(mesh, a, "vibration") is None for a in mesh.agents), PROPAGATE_S
    )


def write_real_model(manifest: Path, text: str) -> None:
    """`text` as `manifest` with its artifact the example vibration model, copied beside it."""
    (manifest.parent / "vib.onnx").write_bytes((MODELS_DIR / "vibration-anomaly.onnx").read_bytes())
    lines = [line for line in text.splitlines() if not line.startswith("artifact:")]
    manifest.write_text("\n".join([*lines, "artifact: {file: vib.onnx}", ""]))


def _interrupt_wait(mesh: LocalMesh, node: LocalAgent, manifest: Path) -> subprocess.CompletedProcess[str]:
    """`murmur deploy MANIFEST --wait`, sent SIGINT (Ctrl-C) once its progress shows the replicas."""
    assert mesh.token_path is not None
    cmd = [sys.executable, "-m", "mesh.cli", "--node", node.url, "--cluster", str(mesh.token_path.parent)]
    process = subprocess.Popen(
        [*cmd, "deploy", str(manifest), "--wait", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None and process.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not any("replicas ready" in line for line in seen):
            seen.append(lines.get(timeout=30))  # the wait's progress reached the replicas
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        process.kill()
    reader.join(timeout=10)  # it ends at the end of stderr
    while not lines.empty():
        seen.append(lines.get())
    stdout = process.stdout.read()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(seen))


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
