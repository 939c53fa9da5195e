"""mesh/service/fetcher.py against in-process holders (aiohttp servers on 127.0.0.1): range
requests, several holders at once, resume, a corrupt chunk refused and refetched elsewhere,
a stalled holder dropped, a holder without the artifact."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from inference.transfer_plan import Holder, Received, TransferLimits
from mesh.service.artifacts import ArtifactStore
from mesh.service.artifactserve import SERVE_DEBUG, ServeDebug, serve_artifact
from mesh.service.fetcher import Fetcher, FetchLimits

CHUNK = 64 * 1024
DATA = random.Random(7).randbytes(10 * CHUNK + 123)
SHA = hashlib.sha256(DATA).hexdigest()
PLAN = TransferLimits(chunk_bytes=CHUNK, in_flight_max=4, per_peer_in_flight_max=2, peer_failures_max=2)
FAST = FetchLimits(stall_timeout_s=0.5, chunk_timeout_s=5.0, holders_retry_s=0.05, failed_retry_s=0.0)


class Peer:
    """A holder: a store with the artifact (maybe tampered), served by the real handler."""

    def __init__(self, root: Path, name: str, data: bytes | None = DATA, stall: bool = False) -> None:
        self.name = name
        self.store = ArtifactStore(root / name, size_max_bytes=1 << 30)
        if data is not None:
            self.store.path(SHA).write_bytes(data)  # bypasses the writer: a tampered copy stays
        self.ranges: list[str] = []
        self.stall = stall
        self.app = web.Application()
        self.app[SERVE_DEBUG] = ServeDebug()
        self.app.router.add_get("/v1/artifacts/{sha256}", self.get)
        self.server = TestServer(self.app, host="127.0.0.1")

    async def get(self, request: web.Request) -> web.StreamResponse:
        self.ranges.append(request.headers.get("Range", ""))
        path = self.store.path(request.match_info["sha256"])
        if not path.exists():
            return web.json_response({"error": "not here"}, status=404)
        if self.stall:  # the head of the right answer, then nothing
            start, end = request.headers["Range"].removeprefix("bytes=").split("-")
            resp = web.StreamResponse(
                status=206, headers={"Content-Range": f"bytes {start}-{end}/{len(DATA)}"}
            )
            await resp.prepare(request)
            await asyncio.sleep(3600)
        return await serve_artifact(request, path)

    @property
    def holder(self) -> Holder:
        return Holder(self.name, f"127.0.0.1:{self.server.port}")


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    started: list[Peer] = []

    async def make(name: str, **kw: object) -> Peer:
        peer = Peer(tmp_path, name, **kw)  # type: ignore[arg-type]
        await peer.server.start_server()
        started.append(peer)
        return peer

    yield make
    for peer in started:
        await peer.server.close()


def fetcher(tmp_path: Path, holders: list[Holder] | Callable[[], list[Holder]]) -> Fetcher:
    async def find(_sha: str) -> list[Holder]:
        return holders() if callable(holders) else list(holders)

    return Fetcher(
        ArtifactStore(tmp_path / "me", size_max_bytes=1 << 30), "me", find, limits=FAST, plan_limits=PLAN
    )


async def run(f: Fetcher) -> dict[str, object]:
    transfer = f.want(SHA, len(DATA))
    assert transfer is not None and transfer.task is not None
    try:
        await asyncio.wait_for(asyncio.shield(transfer.task), 30)
    finally:
        await f.close()
    return transfer.to_json()


# --- serving ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize("slow", [False, True])
async def test_ranges_206_416_and_the_whole_file(peers: Callable[..., Awaitable[Peer]], slow: bool) -> None:
    peer = await peers("a")
    if slow:
        peer.app[SERVE_DEBUG].rate_bytes_per_s = 1 << 30
    url = f"http://127.0.0.1:{peer.server.port}/v1/artifacts/{SHA}"
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers={"Range": "bytes=10-19"}) as resp:
            assert resp.status == 206 and await resp.read() == DATA[10:20]
            assert resp.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
        async with client.get(url, headers={"Range": f"bytes={len(DATA) - 5}-"}) as resp:
            assert resp.status == 206 and await resp.read() == DATA[-5:]
        async with client.get(url, headers={"Range": "bytes=-7"}) as resp:
            assert resp.status == 206 and await resp.read() == DATA[-7:]
        async with client.get(url, headers={"Range": f"bytes={len(DATA)}-{len(DATA) + 10}"}) as resp:
            assert resp.status == 416
            assert resp.headers["Content-Range"] == f"bytes */{len(DATA)}"
        async with client.get(url) as resp:
            assert resp.status == 200 and await resp.read() == DATA


# --- fetching --------------------------------------------------------------------------------


async def test_fetches_from_several_holders_at_once_and_commits_verified(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    a, b = await peers("a"), await peers("b")
    f = fetcher(tmp_path, [a.holder, b.holder])
    got = await run(f)
    assert got["state"] == "done", got
    assert f.store.path(SHA).read_bytes() == DATA
    by_peer = {p["node"]: p["bytes"] for p in got["peers"]}  # type: ignore[union-attr,index]
    assert by_peer["a"] > 0 and by_peer["b"] > 0 and by_peer["a"] + by_peer["b"] == len(DATA)
    assert f.bytes_by_peer == {"a": by_peer["a"], "b": by_peer["b"]}
    assert all(r.startswith("bytes=") for r in a.ranges + b.ranges)
    assert not f.store.partial_path(SHA).exists() and not f.store.progress_path(SHA).exists()
    assert f.want(SHA, len(DATA)) is None  # held now


async def test_a_corrupt_chunk_is_refused_refetched_elsewhere_and_its_holder_counted(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    tampered = bytearray(DATA)
    tampered[5] ^= 0xFF  # chunk 0: the first asked, of the first holder ("bad" < "good")
    good, bad = await peers("good"), await peers("bad", data=bytes(tampered))
    f = fetcher(tmp_path, [good.holder, bad.holder])
    got = await run(f)
    assert got["state"] == "done", got
    assert f.store.path(SHA).read_bytes() == DATA
    rows = {p["node"]: p for p in got["peers"]}  # type: ignore[union-attr,index]
    assert rows["bad"]["excluded"] is True and rows["bad"]["bad_chunks"] == 1
    assert rows["good"]["bad_chunks"] == 0 and rows["good"]["excluded"] is False
    assert f.bad_chunks_by_peer == {"bad": 1}
    assert got["round"] == 2


async def test_every_copy_corrupt_fails_and_keeps_nothing(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    tampered = bytearray(DATA)
    tampered[0] ^= 1
    only = await peers("only", data=bytes(tampered))
    f = fetcher(tmp_path, [only.holder])
    got = await run(f)
    assert got["state"] == "failed" and "corrupt" in str(got["error"])
    assert f.store.size(SHA) is None and not f.store.partial_path(SHA).exists()


async def test_a_stalled_holder_is_dropped_for_the_chunk_which_goes_elsewhere(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    fine, stalled = await peers("fine"), await peers("stalled", stall=True)
    f = fetcher(tmp_path, [fine.holder, stalled.holder])
    got = await run(f)
    assert got["state"] == "done"
    rows = {p["node"]: p for p in got["peers"]}  # type: ignore[union-attr,index]
    assert rows["stalled"]["bytes"] == 0 and rows["stalled"]["failures"] >= 1
    assert rows["stalled"]["last_failure"] == "stalled or too slow"
    assert rows["fine"]["bytes"] == len(DATA)


async def test_a_holder_without_the_artifact_is_skipped(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    fine, empty = await peers("fine"), await peers("empty", data=None)
    f = fetcher(tmp_path, [empty.holder, fine.holder])
    got = await run(f)
    assert got["state"] == "done"
    rows = {p["node"]: p for p in got["peers"]}  # type: ignore[union-attr,index]
    assert rows["empty"]["last_failure"] == "HTTP 404"


async def test_waits_for_a_holder_then_fetches(peers: Callable[..., Awaitable[Peer]], tmp_path: Path) -> None:
    a = await peers("a")
    known: list[Holder] = []
    f = fetcher(tmp_path, lambda: list(known))
    transfer = f.want(SHA, len(DATA))
    assert transfer is not None and transfer.task is not None
    for _ in range(100):
        if transfer.state == "waiting":
            break
        await asyncio.sleep(0.02)
    assert transfer.state == "waiting"
    known.append(a.holder)
    await asyncio.wait_for(transfer.task, 30)
    await f.close()
    assert transfer.state == "done"


async def test_resume_fetches_only_the_missing_chunks_and_refetches_a_lost_one(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    a = await peers("a")
    f = fetcher(tmp_path, [a.holder])
    # An earlier run wrote chunks 0..5 and its map; then chunk 2's bytes were lost (a crash).
    partial = f.store.partial_path(SHA)
    written = bytearray(len(DATA))
    written[: 6 * CHUNK] = DATA[: 6 * CHUNK]
    written[2 * CHUNK : 3 * CHUNK] = bytes(CHUNK)
    partial.write_bytes(bytes(written))
    received = {
        str(i): ["earlier", hashlib.sha256(DATA[i * CHUNK : (i + 1) * CHUNK]).hexdigest()] for i in range(6)
    }
    doc = {"v": 1, "sha256": SHA, "size_bytes": len(DATA), "chunk_bytes": CHUNK, "received": received}
    f.store.progress_path(SHA).write_text(json.dumps(doc))
    got = await run(f)
    assert got["state"] == "done" and f.store.path(SHA).read_bytes() == DATA
    assert got["resumed_bytes"] == 5 * CHUNK
    asked = sorted(int(r.removeprefix("bytes=").split("-")[0]) // CHUNK for r in a.ranges)
    assert asked == [2, 6, 7, 8, 9, 10]
    assert f.counters["resume_chunks_lost"] == 1


async def test_a_malformed_map_starts_over(peers: Callable[..., Awaitable[Peer]], tmp_path: Path) -> None:
    a = await peers("a")
    f = fetcher(tmp_path, [a.holder])
    f.store.progress_path(SHA).write_text('{"v": 1, "received": [1, 2, 3]')
    got = await run(f)
    assert got["state"] == "done" and got["resumed_bytes"] == 0
    assert f.counters["progress_map_refused"] == 1


async def test_an_interrupted_transfer_keeps_its_chunks_for_the_next(
    peers: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    slow = await peers("slow")
    slow.app[SERVE_DEBUG].rate_bytes_per_s = 4 * CHUNK
    f = fetcher(tmp_path, [slow.holder])
    transfer = f.want(SHA, len(DATA))
    assert transfer is not None and transfer.task is not None
    for _ in range(500):
        if transfer.plan.bytes_done >= 2 * CHUNK:
            break
        await asyncio.sleep(0.02)
    done_before = transfer.plan.bytes_done
    f.cancel(SHA)
    await asyncio.gather(transfer.task, return_exceptions=True)
    await f.close()
    assert transfer.state == "cancelled" and done_before >= 2 * CHUNK
    slow.app[SERVE_DEBUG].rate_bytes_per_s = 0
    again = fetcher(tmp_path, [slow.holder])
    got = await run(again)
    assert got["state"] == "done" and int(got["resumed_bytes"]) >= done_before  # type: ignore[call-overload]


def test_received_records_the_sender() -> None:
    assert Received("a", SHA).node_id == "a"
