"""A request its region cannot serve goes to another region's ready replica (mesh/service/
remotereplicas.py): read from that region's placement, kept a while, ranked after the own region.

The regions here are the /v2 APIs of tests/mesh/test_v2api.py's Mesh (FakeHost models), each with
the one /v1 read the lookup makes, GET /v1/placements, answered from the Mesh's placement view as
mesh/service/placements.py shapes it (region, replicas with node, state and api).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from inference.assignments import ReplicaState
from inference.routing import PeerLoad
from mesh.service.remotereplicas import RemoteReplica, RemoteReplicas, ready_replicas
from tests.mesh.test_v2api import FakeHost, Mesh, _infer, _json_body


def test_only_ready_replicas_with_an_address_of_the_region_asked_are_taken() -> None:
    doc = {
        "region": "b",
        "replicas": [
            {"deployment": "m", "node": "n1", "state": "ready", "api": "10.0.0.5:7800"},
            {"deployment": "m", "node": "n2", "state": "loading", "api": "10.0.0.6:7800"},
            {"deployment": "m", "node": "n3", "state": "ready", "api": ""},
            {"deployment": "m", "node": "n4", "state": "ready", "api": "evil/../path:1"},
            {"deployment": "m", "node": "n5", "state": "ready", "api": "[fd00::5]:7800"},
            {"deployment": 7, "node": "n6", "state": "ready", "api": "10.0.0.7:7800"},
            "not a row",
        ],
    }
    assert ready_replicas(doc, "b") == (
        RemoteReplica("m", "n1", "10.0.0.5:7800"),
        RemoteReplica("m", "n5", "[fd00::5]:7800"),
    )
    assert ready_replicas(doc, "c") == ()  # a stale summary's address answered for another region
    for junk in (None, [], "x", {"region": "b"}, {"region": "b", "replicas": {"a": 1}}):
        assert ready_replicas(junk, "b") == ()


class _Placements:
    """GET /v1/placements of one region, from the Mesh's view; counts the reads."""

    def __init__(self, view: Mesh, region: str) -> None:
        self.mesh, self.region, self.reads = view, region, 0

    async def handle(self, request: web.Request) -> web.Response:
        self.reads += 1
        rows = [
            {
                "deployment": v.deployment,
                "slot": v.slot,
                "node": v.node_id,
                "state": str(v.state),
                "api": self.mesh.members[v.node_id].api_addr,
            }
            for v in self.mesh.replicas
            if self.mesh.members[v.node_id].region == self.region
        ]
        return web.json_response({"region": self.region, "replicas": rows})


def _sees_own_region_only(view: Mesh, node_id: str) -> None:
    """The Mesh shares one placement view; a real node's placement core holds its region's only."""
    region = view.members[node_id].region
    view.fronts[node_id].replicas = lambda: [
        r for r in view.replicas if view.members[r.node_id].region == region
    ]


@pytest.fixture
async def region_b(mesh: Mesh) -> AsyncIterator[tuple[_Placements, str]]:
    placements = _Placements(mesh, "b")
    app = web.Application()
    app.router.add_get("/v1/placements", placements.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield placements, f"127.0.0.1:{server.port}"


async def test_a_model_deployed_in_another_region_only_is_served_through_it(
    mesh: Mesh,
    region_b: tuple[_Placements, str],
) -> None:
    placements, b_api = region_b
    entry = await mesh.add("a0", FakeHost(serves=False), region="a")
    await mesh.add("b1", FakeHost(scale=3.0), region="b")
    mesh.fronts["a0"].remote = RemoteReplicas(lambda: {"b": (b_api,)})
    _sees_own_region_only(mesh, "a0")  # region a's placement lists nothing of "scorer"
    for _ in range(3):
        status, doc = await _infer(entry, _json_body())
        assert status == 200 and doc["outputs"][0]["data"] == [18.0, 45.0]
    assert mesh.hops == [("b1", "a0")] * 3
    assert placements.reads == 1  # kept REMOTE_TTL_S: one read for the three requests
    ready = await entry.get("/v2/models/scorer/ready")
    assert ready.status == 200 and (await ready.json())["ready"] is True


async def test_the_own_region_is_preferred_and_other_regions_asked_only_when_it_has_none(
    mesh: Mesh,
    region_b: tuple[_Placements, str],
) -> None:
    placements, b_api = region_b
    entry = await mesh.add("a0", FakeHost(serves=False), region="a")
    a1 = await mesh.add("a1", FakeHost(scale=2.0), region="a")
    await mesh.add("b1", FakeHost(scale=3.0), region="b")
    mesh.fronts["a0"].remote = RemoteReplicas(lambda: {"b": (b_api,)})
    _sees_own_region_only(mesh, "a0")
    status, doc = await _infer(entry, _json_body())
    assert status == 200 and doc["outputs"][0]["data"] == [12.0, 30.0]  # a1, same region
    assert placements.reads == 0
    await a1.close()  # a1 gone: its forward fails, the retry goes to region b
    status, doc = await _infer(entry, _json_body())
    assert status == 200 and doc["outputs"][0]["data"] == [18.0, 45.0]
    assert placements.reads == 1


async def test_no_region_has_it_404_and_a_silent_region_is_not_waited_for_twice(
    mesh: Mesh,
) -> None:
    entry = await mesh.add("a0", FakeHost(serves=False), region="a")
    clock = [0.0]
    remote = RemoteReplicas(lambda: {"b": ("127.0.0.1:9",), "c": ()}, clock=lambda: clock[0])
    mesh.fronts["a0"].remote = remote
    resp = await entry.post("/v2/models/nothing/infer", json=_json_body())
    doc = await resp.json()
    assert resp.status == 404 and "nor in any region that answered" in doc["error"]
    reads = remote.reads
    await entry.post("/v2/models/nothing/infer", json=_json_body())
    assert remote.reads == reads  # within the TTL: no second wait on a region that did not answer
    clock[0] += 60.0
    await entry.post("/v2/models/nothing/infer", json=_json_body())
    assert remote.reads == reads + 2  # both regions read again after the TTL


async def test_concurrent_requests_share_one_read_and_a_departed_region_is_forgotten() -> None:
    hits = 0
    gate = asyncio.Event()

    async def placements(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await gate.wait()
        row = {"deployment": "m", "node": "n1", "state": str(ReplicaState.READY), "api": "127.0.0.1:1"}
        return web.json_response({"region": "b", "replicas": [row]})

    app = web.Application()
    app.router.add_get("/v1/placements", placements)
    regions: dict[str, tuple[str, ...]] = {}
    remote = RemoteReplicas(lambda: regions)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as client:
        regions["b"] = (f"127.0.0.1:{server.port}",)
        load = PeerLoad()
        waiting: list[asyncio.Task[Any]] = [
            asyncio.create_task(remote.candidates("m", client, load)) for _ in range(5)
        ]
        await asyncio.sleep(0.1)
        gate.set()
        results = await asyncio.gather(*waiting)
        assert hits == 1 and all([c.node_id for c in r] == ["n1"] for r in results)
        assert results[0][0].region == "b"
        del regions["b"]
        assert await remote.candidates("m", client, load) == []
