"""An unreachable region still reads: its last-known members, marked, with when they were heard."""

from __future__ import annotations

import time

import pytest

from gossip.node import RegionSummary
from mesh.service.api import LAST_KNOWN_HEADER
from mesh.service.lastknown import LastKnown
from tests.mesh.test_api import Client, FakeService, _member
from tests.mesh.test_api import client as client


async def test_an_offline_region_answers_with_its_last_known_members(client: Client) -> None:
    south = FakeService(node_id="ssss", region="south", views={"region": [_member("ssss", "south")]})
    south_client = await client(south)
    south_api = f"127.0.0.1:{south_client.port}"
    north = FakeService(regions={"south": RegionSummary("south", 1, (), (south_api,), 2)})
    north_client = await client(north)

    before = time.time()
    resp = await north_client.get("/v1/nodes", params={"region": "south"})
    assert resp.status == 200 and LAST_KNOWN_HEADER not in resp.headers
    fresh = await resp.json()
    assert [r["id"] for r in fresh] == ["ssss"] and "last_known" not in fresh[0]

    await south_client.close()  # the site goes offline
    resp = await north_client.get("/v1/nodes", params={"region": "south"})
    assert resp.status == 200
    rows = await resp.json()
    assert [r["id"] for r in rows] == ["ssss"]
    assert rows[0]["last_known"] is True and rows[0]["state"] == "alive"
    assert before <= rows[0]["last_heard_unix"] <= time.time()
    assert float(resp.headers[LAST_KNOWN_HEADER]) == pytest.approx(rows[0]["last_heard_unix"], abs=0.001)


async def test_an_offline_region_never_heard_is_still_502(client: Client) -> None:
    north = FakeService(regions={"south": RegionSummary("south", 1, (), ("127.0.0.1:1",), 2)})
    resp = await (await client(north)).get("/v1/nodes", params={"region": "south"})
    assert resp.status == 502
    assert "has not heard its member list since it started" in (await resp.json())["error"]


def test_the_table_is_bounded() -> None:
    table = LastKnown(regions_max=2, rows_max=3)
    table.remember("a", [{"id": str(i)} for i in range(10)], 1.0)
    table.remember("b", [], 2.0)
    table.remember("c", ["junk", {"id": "x"}], 3.0)
    assert len(table) == 2 and table.get("a") is None
    answer = table.get("c")
    assert answer is not None and answer.rows == ({"id": "x"},) and answer.heard_unix == 3.0
    table.remember("d", [{"id": str(i)} for i in range(10)], 4.0)
    d = table.get("d")
    assert d is not None and len(d.rows) == 3
