"""GET /metrics and the event stream of real `murmur agent` processes on 127.0.0.1: the metrics are
parsed by prometheus_client's text parser, as Prometheus would scrape them, and a node's death
arrives on a live event stream and in `murmur events`."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.cli.events import parse_sse
from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory
from tests.real.test_agents import converged_region

pytestmark = pytest.mark.real

MESH_SIZE = 4
DETECT_S = 15.0  # the local profile declares a crashed node dead within a few seconds
FAMILIES = {
    "murmur_node_info",
    "murmur_gateway",
    "murmur_incarnation",
    "murmur_members",
    "murmur_probes",
    "murmur_probe_failures",
    "murmur_suspicions",
    "murmur_gossip_datagrams",
    "murmur_gossip_bytes",
    "murmur_gossip_streams",
    "murmur_drops",
    "murmur_records",
    "murmur_events",
    "murmur_commands_accepted",
    "murmur_join_refusals",
    "murmur_event_streams",
    "murmur_network_key_epoch",
}


def scrape(agent: LocalAgent) -> dict[str, Any]:
    """{family name: {(sample name, sorted labels): value}} of the agent's /metrics."""
    with urllib.request.urlopen(f"{agent.url}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def test_metrics_of_a_live_agent_parse_and_count_the_mesh(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("local")
    ids = converged_region(mesh, MESH_SIZE)
    a0 = mesh.agents[0]

    def probing_and_holding_inventories() -> bool:
        now = scrape(a0)
        probes = now["murmur_probes"][("murmur_probes_total", (("pool", "region"),))]
        # inventories are published once the agent has asked onnxruntime for its providers
        # (a child process: seconds on a loaded machine)
        return (
            probes > 0
            and now.get("murmur_records", {}).get(("murmur_records", (("kind", "inventory"),)), 0) >= 1
        )

    assert wait_until(probing_and_holding_inventories, 30)
    families = scrape(a0)
    assert set(families) >= FAMILIES, FAMILIES - set(families)
    members = families["murmur_members"]
    assert members[("murmur_members", (("pool", "region"), ("state", "alive")))] == MESH_SIZE
    assert members[("murmur_members", (("pool", "region"), ("state", "dead")))] == 0
    info = families["murmur_node_info"]
    assert info == {("murmur_node_info", (("node_id", ids["a0"]), ("region", "r1"))): 1.0}
    gossip_bytes = families["murmur_gossip_bytes"]
    assert gossip_bytes[("murmur_gossip_bytes_total", (("direction", "in"),))] > 0
    assert gossip_bytes[("murmur_gossip_bytes_total", (("direction", "out"),))] > 0
    records = families["murmur_records"]
    assert records[("murmur_records", (("kind", "inventory"),))] >= 1
    joined = families["murmur_events"][("murmur_events_total", (("kind", "member_joined"),))]
    assert joined >= MESH_SIZE - 1  # every other member, in the region pool at least
    print(f"\n/metrics of a live agent: {len(families)} families, {MESH_SIZE} members alive")


def _stream_until_dead(
    agent: LocalAgent, victim_id: str, mesh: LocalMesh, victim: LocalAgent
) -> list[dict[str, Any]]:
    """Open the agent's event stream, kill the victim, read until its death arrives."""
    request = urllib.request.Request(
        f"{agent.url}/v1/events/stream?kind=member_suspect,member_dead",
        headers={"Accept": "text/event-stream"},
    )
    got: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=DETECT_S) as resp:
        mesh.kill(victim)
        lines = iter(lambda: resp.readline(), b"")
        for event_id, data in parse_sse(lines):
            event = json.loads(data)
            assert int(event_id) == event["seq"]
            got.append(event)
            if event["kind"] == "member_dead" and event["subject"] == victim_id:
                return got
    return got


def test_a_death_arrives_on_the_live_stream_and_in_murmur_events(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("local")
    ids = converged_region(mesh, 3)
    a0, victim = mesh.agents[0], mesh.agents[2]
    got = _stream_until_dead(a0, ids[victim.name], mesh, victim)
    kinds = [(e["kind"], e["subject"]) for e in got]
    assert ("member_dead", ids[victim.name]) in kinds, kinds
    # murmur events, as an operator runs it
    out = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "events", "--node", a0.url, "--kind", "member_dead", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["node_id"] == ids["a0"]
    assert ids[victim.name] in [e["subject"] for e in doc["events"]]
    dead = scrape(a0)["murmur_members"][("murmur_members", (("pool", "region"), ("state", "dead")))]
    assert dead == 1
