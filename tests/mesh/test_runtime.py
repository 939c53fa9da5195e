"""The asyncio runtime on 127.0.0.1: real sockets, a fake core or two real gossip nodes."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Callable

import nacl.utils

from gossip.config import LOCAL
from gossip.envelope import Keyring
from gossip.events import Event, MemberChanged, MemberState
from gossip.io import CheckResult, ConnCheck, Datagram, StreamOpen
from gossip.node import GossipNode
from mesh.service.runtime import Runtime

KEY = bytes(range(32))
OTHER_KEY = bytes(32)


class FakeCore:
    """Records what the runtime feeds it; sends what the test queues."""

    def __init__(self, reply: bytes | None = b"pong") -> None:
        self.datagrams: list[tuple[str, bytes]] = []
        self.requests: list[tuple[str, bytes]] = []
        self.replies: list[tuple[int, bytes | None]] = []
        self.checks: list[tuple[int, CheckResult]] = []
        self.timers: list[float] = []
        self.outbox: list[Datagram | StreamOpen | ConnCheck] = []
        self.events: list[Event] = []
        self.deadline: float | None = None
        self.reply = reply

    def handle_datagram(self, now: float, src: str, data: bytes, sender_id: str = "") -> None:
        self.datagrams.append((src, data))

    def handle_stream_request(
        self, now: float, src: str, data: bytes, sender_id: str = "", claimed_id: str = ""
    ) -> bytes | None:
        self.requests.append((src, data))
        return self.reply

    def handle_stream_reply(self, now: float, request_id: int, data: bytes | None) -> None:
        self.replies.append((request_id, data))

    def handle_conn_check(self, now: float, request_id: int, result: CheckResult) -> None:
        self.checks.append((request_id, result))

    def handle_timer(self, now: float) -> None:
        self.timers.append(now)
        self.deadline = None

    def next_deadline(self) -> float | None:
        return self.deadline

    def poll_transmit(self) -> list[Datagram | StreamOpen | ConnCheck]:
        out, self.outbox = self.outbox, []
        return out

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None


async def _runtime(core: FakeCore | GossipNode | None = None, *, timeout_s: float = 2.0) -> Runtime:
    runtime = Runtime(
        Keyring([KEY]), packet_max_bytes=1400, stream_max_bytes=4096, stream_timeout_s=timeout_s
    )
    await runtime.bind("127.0.0.1", 0)
    if core is not None:
        runtime.attach(core)
    return runtime


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def _port(runtime: Runtime) -> int:
    return int(runtime.addr.rsplit(":", 1)[1])


def _udp_send(runtime: Runtime, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", _port(runtime)))


async def _tcp_exchange(runtime: Runtime, data: bytes, *, eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(runtime))
    writer.write(data)
    if eof:
        writer.write_eof()
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_datagrams_are_sealed_and_delivered() -> None:
    a_core, b_core = FakeCore(), FakeCore()
    a, b = await _runtime(a_core), await _runtime(b_core)
    try:
        a.drive(lambda now: a_core.outbox.append(Datagram(b.addr, b"hello")))
        await _until(lambda: bool(b_core.datagrams))
        assert b_core.datagrams == [(a.addr, b"hello")]
        assert a.counters["datagrams_out"] == 1
    finally:
        await a.close()
        await b.close()


async def test_bad_datagrams_are_counted_not_fatal() -> None:
    core = FakeCore()
    runtime = await _runtime(core)
    try:
        _udp_send(runtime, b"garbage")
        _udp_send(runtime, Keyring([OTHER_KEY]).seal(b"hi", nacl.utils.random(24)))
        _udp_send(runtime, b"x" * 2000)
        await _until(lambda: runtime.counters["datagrams_in"] == 3)
        assert runtime.counters["drop_datagram_unsealed"] == 2
        assert runtime.counters["drop_datagram_too_large"] == 1
        assert core.datagrams == []
        # Still working afterwards.
        _udp_send(runtime, Keyring([KEY]).seal(b"ok", nacl.utils.random(24)))
        await _until(lambda: bool(core.datagrams))
    finally:
        await runtime.close()


async def test_stream_exchange_round_trip() -> None:
    client_core, server_core = FakeCore(), FakeCore(reply=b"pong")
    client, server = await _runtime(client_core), await _runtime(server_core)
    try:
        client.drive(lambda now: client_core.outbox.append(StreamOpen(server.addr, 7, b"ping")))
        await _until(lambda: bool(client_core.replies))
        assert client_core.replies == [(7, b"pong")]
        assert server_core.requests[0][1] == b"ping"
    finally:
        await client.close()
        await server.close()


async def test_stream_to_a_closed_port_reports_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    core = FakeCore()
    runtime = await _runtime(core)
    try:
        runtime.drive(lambda now: core.outbox.append(StreamOpen(dead, 3, b"ping")))
        await _until(lambda: bool(core.replies))
        assert core.replies == [(3, None)]
        assert runtime.counters["drop_stream_failed"] == 1
    finally:
        await runtime.close()


async def test_bad_frames_are_counted_not_fatal() -> None:
    core = FakeCore()
    runtime = await _runtime(core, timeout_s=0.3)
    try:
        # Announces more than stream_max_bytes: refused before reading it.
        await _tcp_exchange(runtime, struct.pack(">I", 10_000_000))
        # Right size, wrong key.
        sealed = Keyring([OTHER_KEY]).seal(b"hi", nacl.utils.random(24))
        assert await _tcp_exchange(runtime, struct.pack(">I", len(sealed)) + sealed) == b""
        # Truncated: the peer closes mid-frame.
        await _tcp_exchange(runtime, struct.pack(">I", 100) + b"short")
        # Silent and never closing: closed at the request deadline (the timeout here is shorter).
        await _tcp_exchange(runtime, b"", eof=False)
        await _until(lambda: runtime.counters["drop_stream_request_timeout"] == 1)
        assert runtime.counters["drop_frame_too_large"] == 1
        assert runtime.counters["drop_frame_unsealed"] == 1
        assert runtime.counters["drop_stream_failed"] == 1
        assert core.requests == []
        # A good request still works.
        good = Keyring([KEY]).seal(b"ping", nacl.utils.random(24))
        answer = await _tcp_exchange(runtime, struct.pack(">I", len(good)) + good)
        assert Keyring([KEY]).open(answer[4:]) == b"pong"
    finally:
        await runtime.close()


async def test_timer_is_armed_from_next_deadline() -> None:
    core = FakeCore()
    runtime = await _runtime(core)
    try:
        loop = asyncio.get_running_loop()
        runtime.drive(lambda now: setattr(core, "deadline", now + 0.05))
        await _until(lambda: bool(core.timers))
        assert core.timers[0] >= loop.time() - 1.0
        assert len(core.timers) == 1
    finally:
        await runtime.close()


async def test_events_reach_subscribers_and_subscriber_errors_are_contained() -> None:
    core = FakeCore()
    runtime = await _runtime()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    runtime.subscribe(broken)
    runtime.subscribe(seen.append)
    event = MemberChanged("region", "n2", "127.0.0.1:1", MemberState.ALIVE, 1)
    core.events.append(event)
    runtime.attach(core)
    try:
        assert seen == [event]
        assert runtime.counters["subscriber_error"] == 1
    finally:
        await runtime.close()


async def test_two_gossip_nodes_find_each_other_and_see_a_leave() -> None:
    loop = asyncio.get_running_loop()
    a_rt, b_rt = await _runtime(), await _runtime()
    a = GossipNode(
        "node-a", a_rt.addr, "r1", random.Random(1), region_config=LOCAL, fleet_config=LOCAL, now=loop.time()
    )
    b = GossipNode(
        "node-b", b_rt.addr, "r1", random.Random(2), region_config=LOCAL, fleet_config=LOCAL, now=loop.time()
    )
    a_rt.attach(a)
    b_rt.attach(b)

    def state(node: GossipNode, other: str) -> MemberState | None:
        return next((m.state for m in node.members("region") if m.node_id == other), None)

    try:
        b_rt.drive(lambda now: b.join(now, [a_rt.addr]))
        await _until(
            lambda: state(a, "node-b") == MemberState.ALIVE and state(b, "node-a") == MemberState.ALIVE
        )
        b_rt.drive(b.leave)
        await _until(lambda: state(a, "node-b") == MemberState.LEFT)
        assert a_rt.counters["drop_datagram_unsealed"] == 0
    finally:
        await a_rt.close()
        await b_rt.close()


async def test_connection_checks_tell_a_dead_port_from_a_live_or_frozen_one() -> None:
    # A live runtime's port accepts (so would a frozen one's: the kernel answers); a
    # port nobody listens on refuses; the check sends no bytes and the server counts it.
    a_core, b_core = FakeCore(), FakeCore()
    a, b = await _runtime(a_core), await _runtime(b_core)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
        try:
            a.drive(lambda now: a_core.outbox.append(ConnCheck(b.addr, 7, 1.0)))
            a.drive(lambda now: a_core.outbox.append(ConnCheck(closed, 9, 1.0)))
            await _until(lambda: len(a_core.checks) == 2)
            assert sorted(a_core.checks) == [(7, CheckResult.ACCEPTED), (9, CheckResult.REFUSED)]
            await _until(lambda: b.counters["conn_checks_in"] == 1)
            assert b_core.requests == []
            assert not any(k.startswith("drop_stream") for k in b.counters)
        finally:
            await a.close()
            await b.close()


async def test_connection_checks_are_bounded_and_the_excess_answered_as_timed_out() -> None:
    from mesh.service.runtime import CONN_CHECKS_MAX

    core = FakeCore()
    runtime = await _runtime(core)
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:

        def many(now: float) -> None:
            for i in range(CONN_CHECKS_MAX + 3):
                core.outbox.append(ConnCheck(f"127.0.0.1:{port}", i, 1.0))

        runtime.drive(many)
        await _until(lambda: len(core.checks) == CONN_CHECKS_MAX + 3)
        assert runtime.counters["drop_conn_check_busy"] == 3
        timed_out = [i for i, result in core.checks if result == CheckResult.TIMED_OUT]
        assert len(timed_out) == 3
    finally:
        listener.close()
        await runtime.close()
