"""Real agents: `murmur backup` of a running agent, then stop, wipe, `murmur restore`, start.

The restored node has the same node id, holds what the backup held before any peer
speaks to it, outbids the incarnation its peers knew from its life after the
backup, and gets the newer records back from its peers by anti-entropy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import converged_region
from tests.real.test_deploy import MANIFEST, _murmur, _version_at

pytestmark = pytest.mark.real

PROPAGATE_S = 10.0
REJOIN_S = 20.0


def _murmur_local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _deploy(mesh: LocalMesh, entry: LocalAgent, tmp_path: Path, name: str) -> int:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(MANIFEST.replace("name: vibration", f"name: {name}"))
    # The record is what this test follows, not replicas (its artifact is not a model that
    # loads, so deploy --wait, which waits for ready replicas too, would not end).
    done = _murmur(mesh, entry, "deploy", str(manifest), "--json")
    assert done.returncode == 0, done.stderr
    version = int(json.loads(done.stdout)["version"])
    held_everywhere = lambda: all(_version_at(mesh, a, name) == version for a in mesh.agents)  # noqa: E731
    assert wait_until(held_everywhere, PROPAGATE_S), {a.name: _version_at(mesh, a, name) for a in mesh.agents}
    return version


def _incarnation(mesh: LocalMesh, observer: LocalAgent, node_id: str) -> int | None:
    row = mesh.view(observer).get(node_id)
    return None if row is None or row["state"] != "alive" else int(row["incarnation"])


def test_backup_a_running_agent_wipe_restore_start(local_mesh: MeshFactory, tmp_path: Path) -> None:
    mesh = local_mesh("local")
    ids = converged_region(mesh, 2)
    a0, a1 = mesh.agents
    node_id = ids["a1"]
    alpha = _deploy(mesh, a0, tmp_path, "alpha")

    # Back up a1 while it runs.
    backup_dir = tmp_path / "a1-backup"
    done = _murmur_local("backup", "--data-dir", str(a1.data_dir), str(backup_dir), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert a1.running and summary["node_id"] == node_id and summary["records"] > 0
    print(f"\nbacked up running {a1.name}: {summary}")

    # Life goes on after the backup: a new deployment, and a restart that raises a1's incarnation.
    beta = _deploy(mesh, a0, tmp_path, "beta")
    mesh.stop(a1)
    mesh.start(a1)
    assert wait_until(lambda: (_incarnation(mesh, a0, node_id) or 0) > summary["incarnation"], REJOIN_S)
    known = _incarnation(mesh, a0, node_id)
    assert known is not None

    # Stop, wipe, restore, start: a0 still runs and remembers the newer incarnation.
    assert mesh.stop(a1) == 0
    shutil.rmtree(a1.data_dir)
    done = _murmur_local("restore", "--data-dir", str(a1.data_dir), str(backup_dir))
    assert done.returncode == 0, done.stderr
    print(done.stdout.strip())
    mesh.start(a1)
    assert wait_until(lambda: mesh.node_id(a1) == node_id, REJOIN_S), a1.log_tail()
    assert "restored" in a1.log_tail(100)
    assert wait_until(lambda: (_incarnation(mesh, a0, node_id) or 0) > known, REJOIN_S), (
        f"a0 does not see the restored node alive above incarnation {known}: {mesh.view(a0).get(node_id)}"
    )
    assert wait_until(lambda: _version_at(mesh, a1, "beta") == beta, PROPAGATE_S), a1.log_tail()
    assert _version_at(mesh, a1, "alpha") == alpha
    now_known = _incarnation(mesh, a0, node_id)
    print(f"restored {a1.name}: same node id, incarnation {known} -> {now_known} at its peer, beta back")

    # Alone (its peer stopped), a node restored from the same backup holds exactly what the backup held.
    mesh.close()
    shutil.rmtree(a1.data_dir)
    assert _murmur_local("restore", "--data-dir", str(a1.data_dir), str(backup_dir)).returncode == 0
    _start_one(mesh, a1)
    assert mesh.node_id(a1) == node_id
    assert _version_at(mesh, a1, "alpha") == alpha
    assert _version_at(mesh, a1, "beta") is None


def _start_one(mesh: LocalMesh, agent: LocalAgent) -> None:
    mesh.start(agent)
    assert wait_until(lambda: mesh.node_id(agent) is not None, REJOIN_S), agent.log_tail()
