"""Real agents, two regions, one of them goes offline (every agent killed): the normal case at
the edge. `deploy --wait` reports each region and exits 3, `nodes --region` shows the offline
region's last-known members, and `revoke` needs --force only for an id no node has seen.

Loopback only; the observed figures are printed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mesh.cli.client import EXIT_UNREACHABLE
from mesh.dev.localmesh import wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import _start_all
from tests.real.test_deploy import MANIFEST, _murmur, write_real_model

pytestmark = pytest.mark.real

FORM_S = 20.0


def test_deploy_wait_nodes_and_revoke_with_one_region_offline(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    mesh = local_mesh("local")
    north = [mesh.add("north-0", "north")]
    north.append(mesh.add("north-1", "north", north))
    south = [mesh.add("south-0", "south", north[:1])]
    south.append(mesh.add("south-1", "south", south))
    ids = _start_all(mesh)
    asked = north[0]
    south_ids = {ids[a.name] for a in south}

    def both_regions_seen() -> bool:
        own = mesh.view(asked)
        other = mesh.view(asked, "south")  # forwarded: the asked node remembers this answer
        return {ids[a.name] for a in north} <= {
            i for i, r in own.items() if r["state"] == "alive"
        } and south_ids == {i for i, r in other.items() if r["state"] == "alive"}

    assert wait_until(both_regions_seen, FORM_S), (mesh.view(asked), mesh.view(asked, "south"))
    for agent in south:  # the site loses power
        mesh.kill(agent)
    offline_at = time.time()

    manifest = tmp_path / "vibration.yaml"
    write_real_model(manifest, MANIFEST.replace("r1: 2", "north: 1"))  # its replica gets ready
    started = time.monotonic()
    done = _murmur(mesh, asked, "deploy", str(manifest), "--wait", "--timeout", "40")
    print(
        f"\ndeploy --wait with south offline: exit {done.returncode} after {time.monotonic() - started:.2f} s"
    )
    print(done.stdout)
    assert done.returncode == EXIT_UNREACHABLE == 3, done.stdout + done.stderr
    assert "held by all 2 alive nodes of every reachable region" in done.stdout
    assert "region north: held by all 2 alive nodes" in done.stdout
    assert "1 replica(s) ready in every reachable region" in done.stdout
    assert "region south: unreachable (last heard" in done.stdout and "with 2 members" in done.stdout

    listed = _murmur(mesh, asked, "nodes", "--region", "south")
    print(listed.stdout)
    assert listed.returncode == 0, listed.stderr
    assert "region south did not answer: its last-known members" in listed.stdout
    assert all(node_id in listed.stdout for node_id in south_ids)
    assert listed.stdout.count("(last known)") == 2
    rows = json.loads(_murmur(mesh, asked, "nodes", "--region", "south", "--json").stdout)
    assert {r["id"] for r in rows} == south_ids
    assert all(r["last_known"] is True and r["last_heard_unix"] <= offline_at for r in rows)

    unseen = "0123456789abcdef"
    refused = _murmur(mesh, asked, "revoke", unseen)
    assert refused.returncode == 1 and "run again with --force" in refused.stderr, refused.stderr
    assert mesh.get(asked, "/v1/revocations") == []
    # An offline region's last-known member counts as seen: no --force needed.
    lost = sorted(south_ids)[0]
    done = _murmur(mesh, asked, "revoke", lost, "--reason", "site burned down")
    assert done.returncode == 0, done.stderr
    done = _murmur(mesh, asked, "revoke", unseen, "--force")
    assert done.returncode == 0, done.stderr
    assert {r["node_id"] for r in mesh.get(asked, "/v1/revocations")} == {lost, unseen}
