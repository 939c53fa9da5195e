"""Real agents: `murmur revoke` at any node expels the node everywhere, for good; operator keys.

The bounds are functional timeouts; the observed figures are printed.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import nacl.signing
import pytest

from mesh.dev.localmesh import LocalMesh, wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import _all_alive, converged_region
from tests.real.test_deploy import MANIFEST, _murmur

pytestmark = pytest.mark.real

EXPEL_S = 5.0
RESTART_S = 20.0


def _listed(mesh: LocalMesh, observer_index: int) -> set[str]:
    return set(mesh.view(mesh.agents[observer_index]))


def test_a_revoked_node_is_expelled_stops_and_stays_out_after_restarts(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 4)
    victim = mesh.agents[3]
    victim_id = ids[victim.name]

    done = _murmur(mesh, mesh.agents[1], "revoke", victim_id, "--reason", "stolen from the depot")
    revoked_at = time.monotonic()
    assert done.returncode == 0, done.stderr
    others = range(3)

    def expelled() -> bool:
        return all(mesh.state_of(mesh.agents[i], victim_id) in (None, "dead", "left") for i in others)

    assert wait_until(expelled, EXPEL_S, interval_s=0.02), {
        i: mesh.state_of(mesh.agents[i], victim_id) for i in others
    }
    print(
        f"\nrevoked at {mesh.agents[1].name}: dead on the 3 others "
        f"{time.monotonic() - revoked_at:.3f} s after the 202"
    )
    assert wait_until(lambda: not victim.running, EXPEL_S), victim.log_tail()
    assert "this node was revoked by an operator" in victim.log_path.read_text()
    listed = mesh.get(mesh.agents[2], "/v1/revocations")
    assert [(r["node_id"], r["reason"]) for r in listed] == [(victim_id, "stolen from the depot")]
    # The revocation rotated the network key: every other member holds the new one.
    assert "network key rotated (epoch 1" in done.stdout, done.stdout

    def rotated() -> bool:
        shown = [mesh.get(mesh.agents[i], "/v1/netkey") for i in others]
        return all(s is not None and s["epoch"] == 1 and s["holds_current"] for s in shown)

    assert wait_until(rotated, EXPEL_S), [mesh.get(mesh.agents[i], "/v1/netkey") for i in others]
    assert mesh.get(mesh.agents[0], "/v1/netkey")["revoked"] == [victim_id]
    print(f"new network key held by the 3 others {time.monotonic() - revoked_at:.3f} s after the 202")

    # Everyone restarts (the revocation comes back from disk) and the victim tries again.
    for agent in mesh.agents[:3]:
        mesh.stop(agent)
    for agent in mesh.agents:
        mesh.start(agent)
    assert wait_until(
        lambda: _all_alive(mesh, mesh.agents[:3], [ids[a.name] for a in mesh.agents[:3]]), RESTART_S
    )
    time.sleep(3.0)
    for i in others:
        assert mesh.state_of(mesh.agents[i], victim_id) in (None, "dead", "left"), i
    assert wait_until(lambda: not victim.running, RESTART_S), victim.log_tail()
    assert "was revoked by an operator; it cannot rejoin" in victim.log_path.read_text()
    print("after restarting every node, the revoked node is still refused and stops again")


def test_a_granted_operator_deploys_and_once_removed_is_refused(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 2)
    alice = nacl.signing.SigningKey.generate()
    alice_file = tmp_path / "alice.key"
    alice_file.write_text(bytes(alice).hex() + "\n")
    alice_file.chmod(0o600)
    public = base64.b64encode(bytes(alice.verify_key)).decode()

    manifest = tmp_path / "vibration.yaml"
    manifest.write_text(MANIFEST)
    refused = _murmur(mesh, mesh.agents[0], "deploy", str(manifest), "--key", str(alice_file))
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr

    assert _murmur(mesh, mesh.agents[0], "operator", "add", public).returncode == 0
    assert wait_until(lambda: len(mesh.get(mesh.agents[1], "/v1/operators")) == 2, 3.0)
    done = _murmur(mesh, mesh.agents[1], "deploy", str(manifest), "--key", str(alice_file))
    assert done.returncode == 0, done.stderr
    # A granted key may not revoke or grant: those stay with the root key.
    nope = _murmur(mesh, mesh.agents[1], "revoke", ids["a0"], "--key", str(alice_file))
    assert nope.returncode != 0 and "root operator key" in nope.stderr, nope.stderr

    alice_id = next(r["id"] for r in mesh.get(mesh.agents[0], "/v1/operators") if r["role"] == "granted")
    assert _murmur(mesh, mesh.agents[0], "operator", "remove", alice_id).returncode == 0
    assert wait_until(
        lambda: all(
            not r["active"] for r in mesh.get(mesh.agents[1], "/v1/operators") if r["role"] == "granted"
        ),
        3.0,
    )
    again = _murmur(mesh, mesh.agents[1], "delete", "vibration", "--key", str(alice_file))
    assert again.returncode != 0 and "401" in again.stderr, again.stderr
    # What alice signed while she was an operator stays.
    assert mesh.get(mesh.agents[0], "/v1/deployments/vibration") is not None


def test_an_invite_for_one_device_admits_the_first_and_refuses_the_second(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 2)
    assert mesh.token_path is not None
    one = mesh.root / "one-device.token"
    done = _murmur(mesh, mesh.agents[0], "invite", "--region", "r1", "--uses", "1", "--out", str(one))
    assert done.returncode == 0, done.stderr
    first = mesh.add("first", "r1", [mesh.agents[0]], token=one)
    mesh.start(first)
    assert wait_until(lambda: mesh.node_id(first) is not None, 20.0), first.log_tail()
    first_id = mesh.node_id(first)
    assert first_id is not None
    assert wait_until(lambda: _all_alive(mesh, mesh.agents[:2], [first_id]), 10.0)
    time.sleep(1.1)  # the second device joins later: a later admitted_at, so it is the one refused
    second = mesh.add("second", "r1", [mesh.agents[1]], token=one)
    mesh.start(second)
    assert wait_until(lambda: mesh.node_id(second) is not None, 20.0), second.log_tail()
    second_id = mesh.node_id(second)
    time.sleep(3.0)
    for observer in (*mesh.agents[:2], first):
        assert mesh.state_of(observer, second_id or "") in (None, "dead", "left"), observer.name
    logs = "".join(a.log_path.read_text() for a in mesh.agents[:2])
    assert f"refused to admit node {second_id}: invite_used_up" in logs
    assert all(mesh.state_of(a, first_id) == "alive" for a in mesh.agents[:2])
    print(f"\none-device invite: {first_id} admitted, {second_id} refused (invite_used_up); {sorted(ids)}")
