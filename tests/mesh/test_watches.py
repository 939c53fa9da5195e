"""Watched connections on real sockets (loopback): mesh/service/watches.py and the runtime.

docs/design.md, "Watched connections": a member holds an idle TCP connection to
two ring successors; the end of one that the peer's host made (a FIN, a reset, a
refusal) brings that member's probe forward; anything else is no evidence.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import nacl.utils

from gossip.envelope import Keyring, PeerEnvelope
from gossip.io import Watch
from mesh.service.runtime import frame
from mesh.service.watches import WATCH_DECLINED, WATCH_GREETING, WATCHES_IN_MAX, WatchLinks
from tests.mesh.test_pairwise_runtime import KEY, _region, _until


def _links(ended: list[tuple[int, bool]]) -> WatchLinks:
    tasks: set[asyncio.Task[None]] = set()
    return WatchLinks(
        seal_greeting=lambda dst: WATCH_GREETING,
        frame=frame,
        on_end=lambda watch_id, peer_closed: ended.append((watch_id, peer_closed)),
        spawn=tasks.add,
        counters=Counter(),
    )


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_watch_is_evidence_and_a_declined_one_is_not() -> None:
    ended: list[tuple[int, bool]] = []
    links = _links(ended)
    links.open(Watch(f"127.0.0.1:{_free_port()}", 2))

    async def decline(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(frame(WATCH_GREETING)))
        writer.write(WATCH_DECLINED)
        writer.close()

    server = await asyncio.start_server(decline, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    links.open(Watch(f"127.0.0.1:{port}", 4))
    await _until(lambda: len(ended) == 2, 5.0)
    assert sorted(ended) == [(2, True), (4, False)]
    assert links.counters["watch_ended_peer_closed"] == 1 and links.counters["watch_ended_failed"] == 1
    server.close()


async def test_a_peer_that_closes_ends_the_watch_and_an_unwatch_reports_nothing() -> None:
    ended: list[tuple[int, bool]] = []
    links = _links(ended)
    held: list[asyncio.StreamWriter] = []
    greeted = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(frame(WATCH_GREETING)))
        held.append(writer)
        greeted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    dst = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    links.open(Watch(dst, 6))
    links.open(Watch(dst, 8))
    await _until(lambda: len(held) == 2, 5.0)
    await asyncio.sleep(0.2)
    assert ended == [] and links.held_out == 2  # idle: nothing ends by itself
    links.close(8)
    held[0].close()  # as a dying process's kernel does
    await _until(lambda: len(ended) == 1, 5.0)
    await asyncio.sleep(0.1)
    assert ended == [(6, True)] and links.held_out == 0
    server.close()


async def test_held_watches_are_bounded_per_watcher_and_in_all() -> None:
    links = _links([])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        watcher = (await reader.readexactly(2)).decode()  # the test's stand-in for the greeting
        await links.hold_in(reader, writer, watcher)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def watch_as(name: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(name.encode())
        clients.append((reader, writer))

    for held in (1, 2):
        await watch_as("aa")
        await _until(lambda held=held: links.held_in == held, 5.0)  # type: ignore[misc]
    await watch_as("aa")  # a third from one watcher replaces its first
    await _until(lambda: links.counters["watch_in_replaced"] == 1, 5.0)
    assert links.held_in == 2
    others = WATCHES_IN_MAX + 3
    for i in range(others):
        await watch_as(f"{i:02d}")
    await _until(lambda: links.held_in + links.counters["watch_in_declined"] == 2 + others, 5.0)
    assert links.held_in == WATCHES_IN_MAX
    assert links.counters["watch_in_declined"] == 2 + others - WATCHES_IN_MAX
    # The declined read one byte; the held read nothing (they are idle).
    replies = await asyncio.gather(
        *(asyncio.wait_for(reader.read(1), 1.0) for reader, _ in clients[3:]), return_exceptions=True
    )
    assert replies.count(WATCH_DECLINED) == 2 + others - WATCHES_IN_MAX
    for _, writer in clients:
        writer.close()
    await _until(lambda: links.held_in == 0, 5.0)  # a watcher's close ends what we hold
    server.close()


async def test_members_watch_each_other_and_a_stopped_one_is_probed_at_once() -> None:
    runtimes, nodes = await _region(3)
    try:
        # lan: each watches its two ring successors, i.e. both others here.
        await _until(lambda: all(rt.watches.held_out == 2 and rt.watches.held_in == 2 for rt in runtimes))
        assert all(rt.counters["watches_out_established"] == 2 for rt in runtimes)
        await runtimes[2].close()  # its sockets close, as a dead process's do
        try:
            await _until(
                lambda: (
                    all(rt.counters["watch_ended_peer_closed"] >= 1 for rt in runtimes[:2])
                    # (one may find its round-robin probe already on the way, or hear of the death first)
                    and sum(n.counters.get("region.urgent_probes", 0) for n in nodes[:2]) >= 1
                )
            )
        except TimeoutError:
            seen = [(dict(rt.counters), n.counters) for rt, n in zip(runtimes[:2], nodes[:2], strict=True)]
            raise AssertionError(f"runtime and core counters of the two others: {seen}") from None
    finally:
        for rt in runtimes:
            await rt.close()


async def test_a_greeting_a_stranger_seals_with_the_network_key_is_dropped() -> None:
    runtimes, _nodes = await _region(2)
    try:
        stranger = PeerEnvelope(Keyring([KEY]), None)
        host, port = runtimes[0].addr.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(frame(stranger.seal(WATCH_GREETING, nacl.utils.random(24))))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(1), 5.0) == b""  # closed, not held
        assert runtimes[0].counters["drop_watch_in_unauthenticated"] == 1
        writer.close()
    finally:
        for rt in runtimes:
            await rt.close()
