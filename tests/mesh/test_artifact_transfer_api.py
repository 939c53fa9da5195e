"""GET /v1/artifacts/{sha256}/holders (from region inventories, forwarded to other regions),
GET /v1/transfers, the slow-serving debug hook, and the keeper's garbage collection."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import nacl.signing
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gossip.kinds import INVENTORY_KIND
from gossip.records import Record, sign_record
from inference import inventory
from inference.desired import sign_deployment
from inference.manifest import parse_manifest
from mesh.service.api import CLIENT, SERVICE
from mesh.service.artifactapi import add_routes, find_holders
from mesh.service.artifacts import ArtifactStore
from mesh.service.artifactsync import ArtifactKeeper
from mesh.service.fetcher import Fetcher
from tests.inference.test_inventory import BASE

SHA = "ab" * 32
NODE_KEY = nacl.signing.SigningKey(b"\x07" * 32)


@dataclasses.dataclass
class Member:
    node_id: str
    api_addr: str
    region: str
    state: str = "alive"


@dataclasses.dataclass
class Summary:
    region: str
    alive: int
    api_addrs: tuple[str, ...]


class FakeService:
    """What the artifact endpoints read: members, inventory records, summaries."""

    debug_hooks = True
    fetcher = None

    def __init__(self, node_id: str, region: str, holders: Sequence[str] = ()) -> None:
        self.node_id = node_id
        self.region = region
        self._members = [Member(node_id, "127.0.0.1:9", region)]
        self._records: dict[str, Record] = {}
        self._summaries: dict[str, Summary] = {}
        for i, holder in enumerate(holders):
            self._members.append(Member(holder, f"127.0.0.1:{100 + i}", region))
            inv = dataclasses.replace(BASE, region=region, artifacts=(SHA,))
            payload = inventory.encode(inv)
            self._records[holder] = sign_record(
                NODE_KEY, INVENTORY_KIND, holder, 1, f"region:{region}", payload
            )
        self._members.append(Member("dead-one", "127.0.0.1:99", region, state="dead"))

    def members(self, pool: str) -> list[Member]:
        return self._members

    def record(self, kind: str, key: str) -> Record | None:
        return self._records.get(key)

    def summaries(self) -> dict[str, Summary]:
        return self._summaries


async def serve(service: FakeService) -> AsyncIterator[TestServer]:
    app = web.Application()
    app[SERVICE] = service  # type: ignore[assignment]
    add_routes(app)

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as client:
            app[CLIENT] = client
            yield

    app.cleanup_ctx.append(client_ctx)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def regions() -> AsyncIterator[tuple[FakeService, TestServer, FakeService, TestServer]]:
    north = FakeService("n0", "north")
    south = FakeService("s0", "south", holders=["s1", "s2"])
    async for south_server in serve(south):
        north._summaries["south"] = Summary("south", 3, (f"127.0.0.1:{south_server.port}",))
        async for north_server in serve(north):
            yield north, north_server, south, south_server


async def get(server: TestServer, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.get(server.make_url(path)) as resp:
        return resp.status, await resp.json()


async def test_holders_come_from_inventories_and_other_regions_are_asked_when_none_here(
    regions: tuple[FakeService, TestServer, FakeService, TestServer],
) -> None:
    north, north_server, _south, south_server = regions
    status, body = await get(south_server, f"/v1/artifacts/{SHA}/holders")
    assert status == 200 and [h["node"] for h in body["holders"]] == ["s1", "s2"]  # not the dead one
    status, body = await get(north_server, f"/v1/artifacts/{SHA}/holders")
    assert status == 200 and [(h["node"], h["region"]) for h in body["holders"]] == [
        ("s1", "south"),
        ("s2", "south"),
    ]
    status, body = await get(north_server, f"/v1/artifacts/{SHA}/holders?local=1")
    assert body["holders"] == []
    status, body = await get(north_server, "/v1/artifacts/not-a-sha/holders")
    assert status == 400 and "not a sha256" in body["error"]
    async with aiohttp.ClientSession() as client:
        holders = await find_holders(north, client, SHA)  # type: ignore[arg-type]
    assert [h.node_id for h in holders] == ["s1", "s2"]


async def test_an_unreachable_region_is_reported_not_fatal(
    regions: tuple[FakeService, TestServer, FakeService, TestServer],
) -> None:
    north, north_server, _south, _ = regions
    north._summaries["east"] = Summary("east", 1, ("127.0.0.1:1",))
    status, body = await get(north_server, f"/v1/artifacts/{SHA}/holders")
    assert status == 200 and len(body["holders"]) == 2
    assert any(e.startswith("region east:") for e in body["errors"])


async def test_transfers_and_the_debug_serving_hook(
    regions: tuple[FakeService, TestServer, FakeService, TestServer],
) -> None:
    _north, server, _s, _ = regions
    assert await get(server, "/v1/transfers") == (200, [])
    async with aiohttp.ClientSession() as client:
        for body in (b"nope", b'{"rate_bytes_per_s": -1}', b'{"rate_bytes_per_s": "9"}', b"[]"):
            async with client.post(server.make_url("/v1/debug/artifact-serving"), data=body) as resp:
                assert resp.status == 400
        async with client.post(
            server.make_url("/v1/debug/artifact-serving"), json={"rate_bytes_per_s": 5}
        ) as resp:
            assert resp.status == 200


MANIFEST = (
    "name: {name}\nmodel: {{name: m, version: '1'}}\n"
    "artifact: {{sha256: '{sha}', size_bytes: 10}}\nreplicas: 1\n"
)
OPERATOR = nacl.signing.SigningKey(b"\x05" * 32)


async def test_garbage_collection_keeps_what_deployments_need_and_drops_the_oldest_first(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path / "a", size_max_bytes=1 << 20)
    shas = [f"{i:x}" * 64 for i in range(10, 14)]
    for i, sha in enumerate(shas):
        store.path(sha).write_bytes(bytes(10))
        t = time.time() - 100 + i
        os.utime(store.path(sha), (t, t))
    store.partial_path(shas[3]).write_bytes(b"x")  # a transfer no deployment wants any more
    store.partial_path("ee" * 32).write_bytes(b"x")
    needed = sign_deployment(OPERATOR, parse_manifest(MANIFEST.format(name="keep", sha=shas[0])), 1)
    wanted = sign_deployment(OPERATOR, parse_manifest(MANIFEST.format(name="partial", sha="ee" * 32)), 1)

    async def no_holders(_sha: str) -> list[Any]:
        return []

    fetcher = Fetcher(store, "me", no_holders)
    keeper = ArtifactKeeper(store, fetcher, lambda: [needed, wanted], lambda: [], budget_bytes=20)
    changes: list[str] = []
    store.on_change = lambda: changes.append("x")
    gone = keeper.collect_garbage()
    assert gone == [shas[1], shas[2]]  # the oldest unneeded; shas[0] is needed, shas[3] fits
    assert [a.sha256 for a in store.held()] == [shas[0], shas[3]]
    assert store.partials() == ["ee" * 32] and len(changes) == 2
    assert keeper.listed() == (shas[0], shas[3])
    keeper.budget_bytes = 0
    assert keeper.collect_garbage() == [shas[3]]
    assert [a.sha256 for a in store.held()] == [shas[0]]  # needed: kept even over budget
    await fetcher.close()


async def test_the_keeper_fetches_the_artifact_of_each_own_replica(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a", size_max_bytes=1 << 20)
    record = sign_deployment(OPERATOR, parse_manifest(MANIFEST.format(name="vib", sha=SHA)), 1)

    async def no_holders(_sha: str) -> list[Any]:
        return []

    fetcher = Fetcher(store, "me", no_holders)
    own: list[str] = ["vib", "unknown-deployment"]
    keeper = ArtifactKeeper(store, fetcher, lambda: [record], lambda: own)
    keeper.reconcile()
    assert fetcher.writing() == [SHA]
    own.clear()
    keeper.reconcile()  # no replica wants it: stopped
    await fetcher.close()
    assert fetcher.writing() == []


def test_the_budget_flag_takes_sizes_and_refuses_nonsense() -> None:
    import argparse

    from mesh.cli.args import size_bytes

    assert size_bytes("2G") == 2 * 1024**3 and size_bytes("500M") == 500 * 1024**2
    assert size_bytes("4GiB") == 4 * 1024**3 and size_bytes("1234") == 1234
    for bad in ("", "-1", "2X", "G", "9" * 40, "1.5G", "99999999999T"):
        with pytest.raises(argparse.ArgumentTypeError):
            size_bytes(bad)


def test_a_malformed_holder_answer_from_another_region_is_dropped_row_by_row() -> None:
    from mesh.service.artifactapi import _rows

    good = {"node": "s1", "region": "south", "api": "127.0.0.1:1"}
    assert _rows([good]) is None and _rows({"holders": "x"}) is None and _rows(None) is None
    assert _rows({"holders": [good, {"node": 1}, "text", {**good, "api": None}]}) == [good]
    assert len(_rows({"holders": [good] * 10_000}) or []) == 64
