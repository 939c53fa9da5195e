"""The HTTP API against a fake node service (aiohttp's test client and server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gossip.events import MemberState
from gossip.node import MemberView, RegionSummary
from gossip.records import Record
from inference.inventory import Inventory, encode
from mesh.service.api import FORWARDED_HEADER, ReceivedBroadcast, create_app


@dataclass
class FakeService:
    node_id: str = "aaaa"
    region: str = "north"
    debug_hooks: bool = False
    views: dict[str, list[MemberView]] = field(default_factory=dict)
    regions: dict[str, RegionSummary] = field(default_factory=dict)
    sent: list[bytes] = field(default_factory=list)

    def members(self, pool: str) -> Sequence[MemberView]:
        return self.views.get(pool, [])

    def summaries(self) -> Mapping[str, RegionSummary]:
        return self.regions

    def health(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "region": self.region}

    def broadcast(self, payload: bytes) -> tuple[str, int]:
        if len(payload) > 10:
            raise ValueError("too big")
        self.sent.append(payload)
        return self.node_id, len(self.sent)

    def received_broadcasts(self) -> Sequence[ReceivedBroadcast]:
        return [ReceivedBroadcast("bbbb", 1, b"hello", 1.5)]

    # Deployments are tested in test_deploy_api.py; this service holds none.
    def operator_key(self, author: str) -> bytes | None:
        return None

    def record(self, kind: str, key: str) -> None:
        return None

    def records(self, kind: str) -> list[Any]:
        return []

    def member(self, node_id: str) -> MemberView | None:
        return next((m for ms in self.views.values() for m in ms if m.node_id == node_id), None)

    def state_summary(self) -> dict[str, Any]:
        return {"node_id": self.node_id}

    def submit_record(self, record: Any) -> bool:
        raise AssertionError("not signed: never reached")


def _member(node_id: str, region: str, state: MemberState = MemberState.ALIVE) -> MemberView:
    return MemberView(
        node_id, f"127.0.0.1:{len(node_id)}", region, state, 3, node_id == "aaaa", "127.0.0.1:9"
    )


Client = Callable[[FakeService], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(service: FakeService) -> TestClient[web.Request, web.Application]:
        test_client = TestClient(TestServer(create_app(service), host="127.0.0.1"))
        await test_client.start_server()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        await test_client.close()


async def test_nodes_lists_own_region(client: Client) -> None:
    service = FakeService(
        views={"region": [_member("aaaa", "north"), _member("cccc", "north", MemberState.DEAD)]}
    )
    resp = await (await client(service)).get("/v1/nodes")
    assert resp.status == 200
    rows = await resp.json()
    assert rows[0] == {
        "id": "aaaa",
        "addr": "127.0.0.1:4",
        "region": "north",
        "state": "alive",
        "incarnation": 3,
        "gateway": True,
        "api": "127.0.0.1:9",
        "inventory": None,  # no inventory record held for it
    }
    assert rows[1]["state"] == "dead"


async def test_other_region_is_forwarded_through_its_summary(client: Client) -> None:
    south = FakeService(node_id="ssss", region="south", views={"region": [_member("ssss", "south")]})
    south_client = await client(south)
    south_api = f"127.0.0.1:{south_client.port}"
    north = FakeService(regions={"south": RegionSummary("south", 1, (), ("127.0.0.1:1", south_api), 2)})
    resp = await (await client(north)).get("/v1/nodes", params={"region": "south"})
    assert resp.status == 200
    assert [r["id"] for r in await resp.json()] == ["ssss"]


async def test_unknown_region_is_404(client: Client) -> None:
    service = FakeService(regions={"north": RegionSummary("north", 1, (), (), 1)})
    resp = await (await client(service)).get("/v1/nodes", params={"region": "west"})
    assert resp.status == 404
    assert "unknown region 'west'" in (await resp.json())["error"]


async def test_region_with_no_answering_api_is_502(client: Client) -> None:
    service = FakeService(regions={"south": RegionSummary("south", 1, (), ("127.0.0.1:1",), 2)})
    resp = await (await client(service)).get("/v1/nodes", params={"region": "south"})
    assert resp.status == 502
    assert "none of its API addresses answered" in (await resp.json())["error"]


async def test_forwarded_request_is_never_forwarded_again(client: Client) -> None:
    service = FakeService(regions={"south": RegionSummary("south", 1, (), ("127.0.0.1:1",), 2)})
    resp = await (await client(service)).get(
        "/v1/nodes", params={"region": "south"}, headers={FORWARDED_HEADER: "1"}
    )
    assert resp.status == 421


async def test_health(client: Client) -> None:
    resp = await (await client(FakeService())).get("/v1/health")
    assert (await resp.json())["node_id"] == "aaaa"


async def test_debug_hooks_are_off_by_default(client: Client) -> None:
    test_client = await client(FakeService())
    assert (await test_client.post("/v1/debug/broadcast", json={"payload": "x"})).status in (404, 405)
    assert (await test_client.get("/v1/debug/broadcasts")).status == 404


async def test_debug_broadcast(client: Client) -> None:
    service = FakeService(debug_hooks=True)
    test_client = await client(service)
    resp = await test_client.post("/v1/debug/broadcast", json={"payload": "hi"})
    assert resp.status == 202
    assert await resp.json() == {"origin_id": "aaaa", "seq": 1}
    assert service.sent == [b"hi"]
    assert (await test_client.post("/v1/debug/broadcast", data=b"{nope")).status == 400
    assert (await test_client.post("/v1/debug/broadcast", json={"payload": 5})).status == 400
    assert (await test_client.post("/v1/debug/broadcast", json={"payload": "x" * 50})).status == 413
    received = await (await test_client.get("/v1/debug/broadcasts")).json()
    assert received[0]["payload"] == "hello" and received[0]["seq"] == 1


async def test_request_bodies_are_bounded(client: Client) -> None:
    test_client = await client(FakeService(debug_hooks=True))
    resp = await test_client.post("/v1/debug/broadcast", data=b"x" * (1024 * 1024))
    assert resp.status == 413


@dataclass
class InventoryService(FakeService):
    """Holds one inventory record per node id (whatever its payload)."""

    inventories: dict[str, bytes] = field(default_factory=dict)

    def record(self, kind: str, key: str) -> Any:
        payload = self.inventories.get(key) if kind == "inventory" else None
        if payload is None:
            return None
        return Record("inventory", key, 3, key, "region:north", payload, False, b"")


async def test_a_stored_inventory_that_does_not_parse_is_shown_as_such(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Held before payloads were checked (issue 8, finding 5): the read must answer, never 500.
    good = encode(
        Inventory(2, 0.5, 1.0, 8, 4, 100, ("CPUExecutionProvider",), "linux", "x86_64", "3.11", {}, "north")
    )
    service = InventoryService(
        views={"region": [_member("aaaa", "north"), _member("bbbb", "north"), _member("cccc", "north")]},
        inventories={
            "aaaa": good,
            "bbbb": b'{"cpu_count": ' + b"9" * 5000 + b"}",
            "cccc": b"[" * 16_000,
        },
    )
    api = await client(service)
    for _ in range(2):
        resp = await api.get("/v1/nodes")
        assert resp.status == 200
        rows = {row["id"]: row for row in await resp.json()}
        assert rows["aaaa"]["inventory"]["cpu_count"] == 2 and "inventory_error" not in rows["aaaa"]
        for node_id in ("bbbb", "cccc"):
            assert rows[node_id]["inventory"] is None
            assert "(version 3) is not valid: inventory: " in rows[node_id]["inventory_error"]
        resp = await api.get("/v1/nodes/cccc")
        assert resp.status == 200 and "nested 16000 deep" in (await resp.json())["inventory_error"]
    logged = [r for r in caplog.records if "is left out of reads" in r.getMessage()]
    assert len(logged) == 2  # once per record, however often it is read
