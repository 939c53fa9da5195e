"""Real agents on 127.0.0.1, one region of 3: artifacts move peer to peer.

- Uploaded to one node, deployed with a replica on every node: the artifact reaches the two
  others from that node (their GET /v1/transfers names it as the source peer, and so does
  `murmur_artifact_bytes_total{source_peer}`).
- A holder serving a corrupted copy: its chunks are refused (the whole sha256 does not
  verify), fetched again from the good holder, and the bad holder is counted and excluded.
- A larger artifact held by 2 nodes that serve it slowly (the --debug-hooks serving rate):
  kill -9 of one holder mid-transfer, and the transfer finishes from the other.
- kill -9 of the fetching node mid-transfer, then a restart: the transfer resumes from its
  partial file (`resumed_bytes` > 0) and the artifact verifies.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mesh.cli.client import NodeClient
from mesh.cli.deploy import upload_artifact
from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.trust.cluster import load_cluster_dir
from tests.real.conftest import MeshFactory
from tests.real.test_agents import CONVERGE_S, _all_alive, _start_all
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

ARRIVE_S = 40.0  # founding, placement, inventories, then the transfer
MIB = 1024 * 1024


def _mesh(local_mesh: MeshFactory) -> tuple[LocalMesh, list[LocalAgent], dict[str, str]]:
    mesh = local_mesh("lan")
    seed = mesh.add("a0", "r1")
    for name in ("a1", "a2"):
        mesh.add(name, "r1", [seed])
    ids = _start_all(mesh)
    assert wait_until(lambda: _all_alive(mesh, mesh.agents, list(ids.values())), CONVERGE_S)
    return mesh, mesh.agents, ids


def _artifact(tmp_path: Path, name: str, size: int, seed: int) -> tuple[Path, str]:
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _upload(mesh: LocalMesh, agent: LocalAgent, path: Path, sha256: str) -> None:
    assert mesh.token_path is not None
    _cluster_id, key, _token = load_cluster_dir(mesh.token_path.parent)
    assert upload_artifact(key, NodeClient(agent.url), path, sha256, path.stat().st_size)


def _deploy(mesh: LocalMesh, agent: LocalAgent, tmp_path: Path, name: str, sha256: str, size: int) -> None:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(
        f"name: {name}\nmodel: {{name: {name}, version: '1'}}\n"
        f"artifact: {{sha256: {sha256}, size_bytes: {size}}}\nreplicas: 3\n"
    )
    done = _murmur(mesh, agent, "deploy", str(manifest))
    assert done.returncode == 0, done.stderr


def _transfer(mesh: LocalMesh, agent: LocalAgent, sha256: str) -> dict[str, Any] | None:
    rows = mesh.get(agent, "/v1/transfers")
    return next((r for r in rows or [] if r["sha256"] == sha256), None)


def _holds(agent: LocalAgent, sha256: str, data: bytes, mesh: LocalMesh | None = None) -> bool:
    """Held and verified; with `mesh`, its transfer there is over too (the file shows first)."""
    path = agent.data_dir / "artifacts" / sha256
    if not (path.exists() and path.read_bytes() == data):
        return False
    transfer = _transfer(mesh, agent, sha256) if mesh is not None else None
    return mesh is None or (transfer is not None and transfer["state"] == "done")


def _serve_slowly(agent: LocalAgent, rate_bytes_per_s: int) -> None:
    req = urllib.request.Request(
        f"{agent.url}/v1/debug/artifact-serving",
        data=json.dumps({"rate_bytes_per_s": rate_bytes_per_s}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def _metric(agent: LocalAgent, name: str, peer: str) -> float:
    with urllib.request.urlopen(f"{agent.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{source_peer="{peer}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_an_artifact_reaches_its_replicas_from_peers_and_a_corrupt_copy_is_refused(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh, (a0, a1, a2), ids = _mesh(local_mesh)
    path, sha = _artifact(tmp_path, "vib", 3 * MIB + 17, seed=1)
    data = path.read_bytes()
    _upload(mesh, a0, path, sha)
    _deploy(mesh, a0, tmp_path, "vib", sha, len(data))
    started = time.monotonic()
    assert wait_until(lambda: _holds(a1, sha, data, mesh) and _holds(a2, sha, data, mesh), ARRIVE_S, 0.2)
    print(f"\n3 MiB artifact uploaded to a0 -> held by a1 and a2: {time.monotonic() - started:.2f} s")
    for agent in (a1, a2):
        transfer = _transfer(mesh, agent, sha)
        assert transfer is not None and transfer["state"] == "done", transfer
        sources = {p["node"]: p["bytes"] for p in transfer["peers"] if p["bytes"]}
        print(f"{agent.name}: source peers {sources}")
        assert ids["a0"] in sources  # the uploader served it (a2 may also have had a1)
        assert sum(sources.values()) == len(data)
    assert _metric(a1, "murmur_artifact_bytes_total", ids["a0"]) > 0

    # A corrupt copy: a second artifact held by a0 and a1, a0's copy tampered in every MiB.
    path2, sha2 = _artifact(tmp_path, "cls", 4 * MIB, seed=2)
    data2 = path2.read_bytes()
    _upload(mesh, a0, path2, sha2)
    _upload(mesh, a1, path2, sha2)
    stored = a0.data_dir / "artifacts" / sha2
    tampered = bytearray(stored.read_bytes())
    for offset in range(100, len(tampered), MIB):
        tampered[offset] ^= 0xFF
    stored.write_bytes(bytes(tampered))
    # Both holders list it once their inventories are republished (at once, after an upload).
    assert wait_until(
        lambda: (
            {h["node"] for h in (mesh.get(a2, f"/v1/artifacts/{sha2}/holders") or {}).get("holders", [])}
            == {ids["a0"], ids["a1"]}
        ),
        15.0,
        0.2,
    )
    _deploy(mesh, a0, tmp_path, "cls", sha2, len(data2))
    assert wait_until(lambda: _holds(a2, sha2, data2, mesh), ARRIVE_S, 0.2), _transfer(mesh, a2, sha2)
    transfer = _transfer(mesh, a2, sha2)
    assert transfer is not None and transfer["state"] == "done"
    rows = {p["node"]: p for p in transfer["peers"]}
    print(f"corrupt holder a0: rounds {transfer['round']}, peers {rows}")
    assert rows[ids["a0"]]["excluded"] and rows[ids["a0"]]["bad_chunks"] >= 1
    assert not rows[ids["a1"]]["excluded"]
    assert _metric(a2, "murmur_artifact_bad_chunks_total", ids["a0"]) >= 1


def test_a_transfer_survives_the_death_of_a_source_and_of_itself(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh, (a0, a1, a2), ids = _mesh(local_mesh)
    rate = 4 * MIB  # per response; chunks of 1 MiB, 2 per holder at once

    # Two holders serving slowly; kill -9 of one mid-transfer: a2 finishes from the other.
    path, sha = _artifact(tmp_path, "big", 24 * MIB, seed=3)
    data = path.read_bytes()
    for agent in (a0, a1):
        _upload(mesh, agent, path, sha)
        _serve_slowly(agent, rate)
    assert wait_until(
        lambda: len((mesh.get(a2, f"/v1/artifacts/{sha}/holders") or {}).get("holders", [])) == 2, 15.0, 0.2
    )
    _deploy(mesh, a0, tmp_path, "big", sha, len(data))

    def part_done(agent: LocalAgent, artifact: str, fraction: float) -> bool:
        t = _transfer(mesh, agent, artifact)
        return t is not None and t["bytes_done"] >= fraction * t["size_bytes"]

    assert wait_until(lambda: part_done(a2, sha, 0.2), ARRIVE_S, 0.05), _transfer(mesh, a2, sha)
    mesh.kill(a0)
    killed_at = _transfer(mesh, a2, sha)
    assert killed_at is not None and killed_at["state"] != "done"
    print(f"\nkill -9 of holder a0 at {killed_at['bytes_done']} of {len(data)} bytes")
    assert wait_until(lambda: _holds(a2, sha, data, mesh), 60.0, 0.2), _transfer(mesh, a2, sha)
    transfer = _transfer(mesh, a2, sha)
    assert transfer is not None and transfer["state"] == "done"
    sources = {p["node"]: p["bytes"] for p in transfer["peers"]}
    print(f"finished from a1: bytes by source {sources}")
    assert sources[ids["a1"]] > sources.get(ids["a0"], 0) > 0

    # kill -9 of the fetching node itself, then a restart: the transfer resumes.
    path2, sha2 = _artifact(tmp_path, "tab", 16 * MIB, seed=4)
    data2 = path2.read_bytes()
    _upload(mesh, a1, path2, sha2)  # a1 serves slowly since above
    mesh.start(a0)  # back (its replica of "big" is held already)
    _deploy(mesh, a1, tmp_path, "tab", sha2, len(data2))
    assert wait_until(lambda: part_done(a2, sha2, 0.3), ARRIVE_S, 0.05), _transfer(mesh, a2, sha2)
    mesh.kill(a2)
    partial = a2.data_dir / "artifacts" / f".partial-{sha2}"
    assert partial.exists()
    mesh.start(a2)
    assert wait_until(lambda: _holds(a2, sha2, data2, mesh), 60.0, 0.2), _transfer(mesh, a2, sha2)
    transfer = _transfer(mesh, a2, sha2)
    assert transfer is not None and transfer["state"] == "done"
    print(f"a2 restarted mid-transfer: resumed {transfer['resumed_bytes']} of {len(data2)} bytes")
    assert transfer["resumed_bytes"] >= 0.2 * len(data2)
    assert not partial.exists()
