"""Slow HTTP clients do not exhaust a node (issue 8, finding 3), at a scale fit for CI.

Slow headers: 300 connections from 10 source addresses send a partial request
head and one more header line a second, to a node started with a soft limit of
256 open files (the issue used 1,100 against 1,024). While that lasts the API
answers, a new agent joins through the node's gossip port and the node's log
stays small.

Half-sent bodies: 150 connections from 10 source addresses announce a 64 KiB
body and send half of it. While that lasts the API answers; once it ends, the
node's resident memory comes back near where it was (the connections are
closed at their body deadline; freed buffers go back to the system).
"""

from __future__ import annotations

import resource
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.netaddr import split_hostport
from tests.real.conftest import MeshFactory
from tests.real.flood import Flood, loopback_sources

pytestmark = pytest.mark.real

STARTUP_TIMEOUT_S = 20.0
JOIN_S = 5.0
PROBE_TIMEOUT_S = 3.0  # an API that answers at all answers a health read well within this
OPEN_FILES_SOFT = 256  # the node's soft limit at start (it may raise it)
LOG_GROWTH_MAX_BYTES = 64 * 1024  # during the attack; the unguarded node wrote megabytes
RSS_RETURN_MAX_BYTES = 8 * 1024 * 1024  # resident memory after the attack, above before it
RSS_RETURN_S = 10.0  # ... within this long after it ends

SLOW_HEAD = b"POST /v1/deployments HTTP/1.1\r\nHost: node\r\nX-Slow-0: 0\r\n"
SLOW_BODY_BYTES = 64 * 1024
HALF_BODY = (
    b"POST /v1/deployments HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n".encode()
    + b"x" * (SLOW_BODY_BYTES // 2)
)


@pytest.fixture
def low_open_files() -> Iterator[None]:
    """Agents started in this block inherit a soft open-files limit of OPEN_FILES_SOFT."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_SOFT, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _up(mesh: LocalMesh, agent: LocalAgent) -> str:
    mesh.start(agent)
    assert wait_until(lambda: mesh.node_id(agent) is not None, STARTUP_TIMEOUT_S), (
        f"{agent.name} API not up:\n{agent.log_tail()}"
    )
    node_id = mesh.node_id(agent)
    assert node_id is not None
    return node_id


def _probe(agent: LocalAgent) -> float | None:
    """Seconds a health read took, None if it got no answer."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{agent.url}/v1/health", timeout=PROBE_TIMEOUT_S) as resp:
            resp.read()
    except (urllib.error.URLError, OSError):
        return None
    return time.monotonic() - started


def _probes(agent: LocalAgent, duration_s: float) -> list[float | None]:
    probes: list[float | None] = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        probes.append(_probe(agent))
        time.sleep(0.25)
    return probes


def _rss(agent: LocalAgent) -> int:
    assert agent.process is not None
    return int(psutil.Process(agent.process.pid).memory_info().rss)


def _describe(probes: list[float | None]) -> str:
    answered = [p for p in probes if p is not None]
    worst = f"{max(answered):.3f} s" if answered else "-"
    return f"{len(answered)}/{len(probes)} health reads answered, slowest {worst}"


def test_slow_headers_leave_the_api_gossip_and_log_working(
    local_mesh: MeshFactory, low_open_files: None
) -> None:
    mesh = local_mesh("local")
    node = mesh.add("node", "r1")
    _up(mesh, node)
    api_host, api_port = split_hostport(node.api)
    log_before = node.log_path.stat().st_size
    with Flood(
        (api_host, api_port), 300, loopback_sources(10), opening=SLOW_HEAD, trickle=b"X-Slow: 1\r\n"
    ) as flood:
        assert wait_until(lambda: flood.opened >= 300, STARTUP_TIMEOUT_S)
        probes = _probes(node, 4.0)
        joiner = mesh.add("joiner", "r1", [node])
        joiner_id = _up(mesh, joiner)
        joined = wait_until(lambda: mesh.state_of(node, joiner_id) == "alive", JOIN_S)
        probes += _probes(node, 2.0)
        log_growth = node.log_path.stat().st_size - log_before
        print(
            f"\nslow headers: {_describe(probes)}; joined through the node: {joined}; log grew "
            f"{log_growth} bytes; flood opened {flood.opened}, closed by the node {flood.closed_by_target}"
        )
    assert all(p is not None for p in probes), f"the API stopped answering: {_describe(probes)}"
    assert joined, f"a new agent could not join through the flooded node:\n{joiner.log_tail()}"
    assert log_growth <= LOG_GROWTH_MAX_BYTES, f"log grew {log_growth} bytes:\n{node.log_tail(20)}"
    assert node.running, f"the node exited:\n{node.log_tail()}"


def test_half_sent_bodies_leave_the_api_answering_and_memory_returns(local_mesh: MeshFactory) -> None:
    mesh = local_mesh("local")
    node = mesh.add("node", "r1")
    _up(mesh, node)
    _probes(node, 1.0)  # warm: the first reads allocate what every later one reuses
    rss_before = _rss(node)
    api_host, api_port = split_hostport(node.api)
    with Flood((api_host, api_port), 150, loopback_sources(10), opening=HALF_BODY) as flood:
        assert wait_until(lambda: flood.opened >= 150, STARTUP_TIMEOUT_S)
        probes = _probes(node, 8.0)  # longer than a 64 KiB body may take
        rss_during = _rss(node)
    # The node frees the closed connections' buffers and, at most every few seconds, returns them.
    returned = wait_until(lambda: _rss(node) - rss_before <= RSS_RETURN_MAX_BYTES, RSS_RETURN_S, 0.5)
    rss_after = _rss(node)
    api_counters = (mesh.get(node, "/v1/health") or {}).get("counters", {}).get("api")
    mib = 1024 * 1024
    print(
        f"\nhalf-sent bodies: {_describe(probes)}; RSS before {rss_before / mib:.1f} MiB, during "
        f"{rss_during / mib:.1f} MiB, after {rss_after / mib:.1f} MiB; flood opened {flood.opened}, "
        f"closed by the node {flood.closed_by_target}; API counters {api_counters}"
    )
    assert all(p is not None for p in probes), f"the API stopped answering: {_describe(probes)}"
    assert returned, f"RSS {rss_after - rss_before} bytes above its level before the attack"
