"""Idle TCP connections to a node's gossip port do not keep a new node out (issue 8, finding 2).

An attacker with no key holds 80 connections to the seed's gossip port that
never send a byte, reopening each one the seed closes; a new agent seeded at
that node alone must still join within 5 s of its API answering. Two shapes:
every connection from one source address (the per-source cap holds it), and
one connection from each of 80 source addresses (the strangers' share and its
eviction of the longest-waiting connection hold it).
"""

from __future__ import annotations

import time

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.netaddr import split_hostport
from tests.real.conftest import MeshFactory
from tests.real.flood import Flood, loopback_sources

pytestmark = pytest.mark.real

STARTUP_TIMEOUT_S = 20.0
JOIN_S = 5.0  # the bound: a new node joins within 5 s under the attack
FLOOD_CONNECTIONS = 80  # more than the 64 stream slots the node had


def _up(mesh: LocalMesh, agent: LocalAgent) -> None:
    mesh.start(agent)
    assert wait_until(lambda: mesh.node_id(agent) is not None, STARTUP_TIMEOUT_S), (
        f"{agent.name} API not up:\n{agent.log_tail()}"
    )


def _sees_alive(mesh: LocalMesh, observer: LocalAgent, node_id: str) -> bool:
    return mesh.state_of(observer, node_id) == "alive"


@pytest.mark.parametrize("sources", [1, FLOOD_CONNECTIONS], ids=["one-source", "80-sources"])
def test_a_new_node_joins_through_a_node_whose_gossip_port_is_flooded(
    local_mesh: MeshFactory, sources: int
) -> None:
    mesh = local_mesh("local")
    seed = mesh.add("seed", "r1")
    _up(mesh, seed)
    seed_id = mesh.node_id(seed)
    assert seed_id is not None
    host, port = split_hostport(seed.gossip)
    with Flood((host, port), FLOOD_CONNECTIONS, loopback_sources(sources)) as flood:
        assert wait_until(lambda: flood.opened >= FLOOD_CONNECTIONS, STARTUP_TIMEOUT_S)
        time.sleep(0.5)  # the flood settles: every slot the node gives it is taken
        joiner = mesh.add("joiner", "r1", [seed])
        _up(mesh, joiner)
        up = time.monotonic()
        joiner_id = mesh.node_id(joiner)
        assert joiner_id is not None
        joined = wait_until(
            lambda: _sees_alive(mesh, joiner, seed_id) and _sees_alive(mesh, seed, joiner_id), JOIN_S
        )
        took_s = time.monotonic() - up
        health = mesh.get(seed, "/v1/health") or {}
        counters = {k: v for k, v in health.get("counters", {}).get("runtime", {}).items() if "stream" in k}
        print(
            f"\n{sources} source(s): joined={joined} after {took_s:.2f} s; flood opened {flood.opened}, "
            f"closed by the node {flood.closed_by_target}, refused {flood.refused}; seed counters {counters}"
        )
        assert joined, (
            f"the new node did not join within {JOIN_S} s while {FLOOD_CONNECTIONS} idle connections "
            f"from {sources} source(s) held the seed's gossip port:\n{joiner.log_tail()}"
        )
