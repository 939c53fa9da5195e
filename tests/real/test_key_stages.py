"""Real agents: the network key changed in stages (`murmur keys install`, `list`, `use`, `remove`)
with no member suspected or declared dead during the switch.

Four agents on loopback (in the test's network namespace). The bounds are functional
timeouts; the observed figures are printed.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from mesh.dev.localmesh import LocalMesh, wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import converged_region
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

# Each member says which keys it holds a random time after a change: 10-30 s by default, which
# spreads the reports of a large fleet; four agents have no burst to spread, so 0.5-2 s here
# (`murmur agent --keyring-report-delay`; GET /v1/netkey shows the delay in effect).
REPORT_DELAY = "0.5-2"
SPREAD_S = 45.0
WATCH_S = 6.0  # how long the views are watched after each switch


def _keyring(mesh: LocalMesh, i: int) -> dict[str, Any]:
    done = _murmur(mesh, mesh.agents[i], "keys", "list", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


class Watch:
    """Polls every agent's view of every other in a thread: any state but alive is noted."""

    def __init__(self, mesh: LocalMesh, ids: list[str]) -> None:
        self.mesh, self.ids = mesh, ids
        self.seen: list[tuple[str, str, str]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            for agent in self.mesh.agents:
                view = self.mesh.view(agent)
                for node_id in self.ids:
                    state = view.get(node_id, {}).get("state")
                    if state != "alive":
                        self.seen.append((agent.name, node_id, str(state)))
            self.polls += 1
            self._stop.wait(0.1)


def test_install_list_use_remove_without_a_suspicion(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("lan")
    mesh.agent_flags = ("--keyring-report-delay", REPORT_DELAY)
    ids = converged_region(mesh, 4)
    assert all(mesh.get(a, "/v1/netkey")["report_delay_s"] == [0.5, 2.0] for a in mesh.agents)
    members = sorted(ids.values())
    first = _keyring(mesh, 0)
    assert len(first["keys"]) == 1
    old_id = first["keys"][0]["key_id"]
    # Events from here on: joining may have had its own suspicions, the switch must have none.
    seq0 = {a.name: mesh.get(a, "/v1/events")["last_seq"] for a in mesh.agents}

    done = _murmur(mesh, mesh.agents[1], "keys", "install")
    assert done.returncode == 0, done.stderr
    new_id = done.stdout.splitlines()[0].strip()
    installed_at = time.monotonic()

    def held_by_all() -> bool:
        rows = {k["key_id"]: k for k in _keyring(mesh, 3)["keys"]}
        return new_id in rows and rows[new_id]["holders"] == 4 and rows[new_id]["alive"] == 4

    assert wait_until(held_by_all, SPREAD_S, interval_s=0.2), _keyring(mesh, 3)
    print(f"\nkey {new_id} held by 4/4 {time.monotonic() - installed_at:.2f} s after install")
    listed = _murmur(mesh, mesh.agents[3], "keys", "list")
    print(listed.stdout)
    assert "4/4" in listed.stdout and new_id in listed.stdout
    rows = {k["key_id"]: k for k in _keyring(mesh, 0)["keys"]}
    assert rows[new_id]["primary_at"] == 0 and rows[old_id]["primary_at"] == 4

    # remove of the primary is refused with the command to run first
    refused = _murmur(mesh, mesh.agents[0], "keys", "remove", old_id)
    assert refused.returncode == 1 and f"murmur keys use {new_id}" in refused.stderr, refused.stderr

    with Watch(mesh, members) as watch:
        used = _murmur(mesh, mesh.agents[2], "keys", "use", new_id)
        assert used.returncode == 0, used.stderr
        used_at = time.monotonic()

        def sealing_everywhere() -> bool:
            row = {k["key_id"]: k for k in _keyring(mesh, 0)["keys"]}[new_id]
            return bool(row["primary_at"] == 4)

        assert wait_until(sealing_everywhere, SPREAD_S, interval_s=0.2), _keyring(mesh, 0)
        print(f"key {new_id} seals at 4/4 {time.monotonic() - used_at:.2f} s after use")
        time.sleep(WATCH_S)  # probes keep flowing under the new key
    assert watch.polls > 10 and watch.seen == [], watch.seen[:10]

    with Watch(mesh, members) as watch:
        removed = _murmur(mesh, mesh.agents[3], "keys", "remove", old_id)
        assert removed.returncode == 0, removed.stderr

        def one_key() -> bool:
            doc = _keyring(mesh, 1)
            return [(k["key_id"], k["holders"], k["primary_at"]) for k in doc["keys"]] == [(new_id, 4, 4)]

        assert wait_until(one_key, SPREAD_S, interval_s=0.2), _keyring(mesh, 1)
        time.sleep(WATCH_S)
    assert watch.seen == [], watch.seen[:10]
    for agent in mesh.agents:
        shown = mesh.get(agent, "/v1/netkey")
        assert shown["installed_key_ids"] == [new_id] and shown["primary_key_id"] == new_id
        assert old_id in shown["retired_key_ids"]
        events = mesh.get(agent, "/v1/events", {"kind": "member_suspect,member_dead"})["events"]
        assert [e for e in events if e["seq"] > seq0[agent.name]] == [], events
    print(f"{watch.polls} polls of 4 views during the switches: every member alive throughout")
