"""Connection caps and deadlines of both ports, rate-limited logging and the open-files limit (issue 8).

Real sockets on loopback; source addresses 127.0.0.2 and up stand for other hosts.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable

import nacl.utils
import pytest
from aiohttp import web

from gossip.envelope import Keyring
from mesh.service import fdlimit
from mesh.service import runtime as runtime_module
from mesh.service.connlimits import ConnectionCaps, ConnectionTable
from mesh.service.httpguard import ApiGuard, api_caps
from mesh.service.lograte import RepeatFilter
from tests.mesh.test_runtime import KEY, FakeCore, _port, _runtime, _until

# --- the table ------------------------------------------------------------------------------


def _table(total: int = 6, per_host: int = 2, strangers: int = 4) -> tuple[ConnectionTable, Counter[str]]:
    counts: Counter[str] = Counter()
    return ConnectionTable(ConnectionCaps(total, per_host, strangers), lambda r: counts.update([r])), counts


def test_a_stranger_address_holds_at_most_its_cap() -> None:
    table, counts = _table()
    assert table.admit("10.0.0.9", member=False, close=lambda: None) is not None
    assert table.admit("10.0.0.9", member=False, close=lambda: None) is not None
    assert table.admit("10.0.0.9", member=False, close=lambda: None) is None
    assert counts == {"refused_per_host": 1}
    assert table.admit("10.0.0.8", member=False, close=lambda: None) is not None


def test_a_full_strangers_share_evicts_the_longest_waiting_stranger_never_a_served_one() -> None:
    table, counts = _table()
    closed: list[str] = []
    slots = [
        table.admit(f"10.0.0.{i}", member=False, close=lambda i=i: closed.append(f"s{i}")) for i in range(4)
    ]
    assert all(slots)
    table.served(slots[0])  # delivered its request: not evictable
    assert table.admit("10.0.1.1", member=False, close=lambda: None) is not None
    assert closed == ["s1"] and slots[1] is not None and slots[1].evicted
    assert table.strangers == 4
    for slot in slots[2:]:
        assert slot is not None
        table.served(slot)
    table.served(
        table.admit("10.0.1.2", member=False, close=lambda: None) or slots[0]
    )  # evicts the newest waiter
    assert table.admit("10.0.1.3", member=False, close=lambda: None) is None
    assert counts["refused_full"] == 1 and counts["evicted"] == 2


def test_members_skip_the_per_address_cap_use_the_kept_room_and_are_never_evicted() -> None:
    table, _ = _table()
    for i in range(4):
        assert table.admit(f"10.0.0.{i}", member=False, close=lambda: None) is not None
    assert table.admit("10.0.0.9", member=False, close=lambda: None) is not None  # evicts a stranger
    members = [table.admit("10.0.5.5", member=True, close=lambda: None) for _ in range(2)]
    assert all(members) and table.open == 6
    # Full: a member evicts a waiting stranger; strangers never evict a member.
    assert table.admit("10.0.5.5", member=True, close=lambda: None) is not None
    assert all(m is not None and not m.evicted for m in members)
    assert table.strangers == 3


def test_release_is_idempotent_and_waiting_requeues_a_slot_as_the_newest() -> None:
    table, _ = _table(total=3, per_host=3, strangers=3)
    closed: list[int] = []
    a = table.admit("h", member=False, close=lambda: closed.append(1))
    b = table.admit("h", member=False, close=lambda: closed.append(2))
    assert a is not None and b is not None
    table.served(a)
    table.waiting(a)  # a keep-alive connection waits again: now the newest waiter
    table.admit("h", member=False, close=lambda: None)
    assert table.admit("h2", member=False, close=lambda: None) is not None
    assert closed == [2]
    table.release(a)
    table.release(a)
    assert table.open == 2


def test_connections_mid_body_are_evicted_only_when_none_waits_for_a_head() -> None:
    table, _ = _table(total=3, per_host=3, strangers=3)
    closed: list[str] = []
    body = table.admit("a", member=False, close=lambda: closed.append("body"))
    head = table.admit("b", member=False, close=lambda: closed.append("head"))
    done = table.admit("c", member=False, close=lambda: closed.append("done"))
    assert body is not None and head is not None and done is not None
    table.receiving(body)  # the oldest, but its head arrived: after the idle one
    table.served(done)
    d = table.admit("d", member=False, close=lambda: closed.append("d"))
    assert d is not None and closed == ["head"]
    table.served(d)
    assert table.admit("e", member=False, close=lambda: None) is not None
    assert closed == ["head", "body"]


def test_caps_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        ConnectionCaps(total_max=4, per_host_max=8, strangers_max=4)


# --- the gossip port ------------------------------------------------------------------------


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _closed_by_peer(sock: socket.socket, timeout_s: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            return await loop.sock_recv(sock, 1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def _request(port: int, payload: bytes = b"ping") -> bytes:
    sealed = Keyring([KEY]).seal(payload, nacl.utils.random(24))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack(">I", len(sealed)) + sealed)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return Keyring([KEY]).open(answer[4:]) or b""


async def test_idle_stream_connections_are_closed_at_the_request_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "REQUEST_FRAME_DEADLINE_S", 0.2)
    rt = await _runtime(FakeCore(), timeout_s=30.0)
    try:
        idle = _connect(_port(rt), "127.0.0.2")
        assert await _closed_by_peer(idle, timeout_s=3.0), (
            "an idle connection must not last the stream timeout"
        )
        idle.close()
        assert rt.counters["drop_stream_request_timeout"] == 1
    finally:
        await rt.close()


async def test_a_slow_frame_that_keeps_arriving_is_read_past_the_base_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "REQUEST_FRAME_DEADLINE_S", 0.2)
    monkeypatch.setattr(runtime_module, "REQUEST_FRAME_RATE_MIN_BYTES_PER_S", 100.0)
    core = FakeCore()
    rt = await _runtime(core, timeout_s=30.0)
    try:
        sealed = Keyring([KEY]).seal(b"x" * 200, nacl.utils.random(24))
        data = struct.pack(">I", len(sealed)) + sealed
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(rt))
        for i in range(0, len(data), 40):  # 40 bytes every 0.1 s: 400 B/s, above the minimum rate
            writer.write(data[i : i + 40])
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await reader.read()
        writer.close()
        assert Keyring([KEY]).open(answer[4:]) == b"pong"
        assert len(core.requests) == 1
    finally:
        await rt.close()


async def test_one_address_holds_at_most_its_cap_of_streams_and_members_get_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = await _runtime(FakeCore(), timeout_s=30.0)
    rt.is_member_host = lambda host: host == "127.0.0.3"
    held: list[socket.socket] = []
    try:
        cap = runtime_module.STREAMS_IN_PER_HOST_MAX
        held += [_connect(_port(rt), "127.0.0.2") for _ in range(cap)]
        extra = _connect(_port(rt), "127.0.0.2")
        assert await _closed_by_peer(extra, timeout_s=2.0)
        extra.close()
        await _until(lambda: rt.counters["drop_stream_in_refused_per_host"] == 1)
        # A member's address is not held to the per-address cap.
        held += [_connect(_port(rt), "127.0.0.3") for _ in range(cap + 2)]
        await asyncio.sleep(0.1)
        assert rt.counters["drop_stream_in_refused_per_host"] == 1
        # And a prompt peer from elsewhere is answered.
        assert await _request(_port(rt)) == b"pong"
    finally:
        for sock in held:
            sock.close()
        await rt.close()


# --- the API --------------------------------------------------------------------------------


async def _hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="hello")


async def _api(
    guard: ApiGuard, more: list[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]] | None = None
) -> tuple[asyncio.Server, web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", _hello)
    app.router.add_post("/", _hello)
    for path, handler in more or []:
        app.router.add_get(path, handler)
    app.middlewares.append(guard.middleware)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    server = await asyncio.get_running_loop().create_server(
        guard.protocol_factory(runner.server), "127.0.0.1", 0
    )
    return server, runner, int(server.sockets[0].getsockname()[1])


async def _http(port: int, raw: bytes, source: str = "127.0.0.1") -> bytes:
    sock = _connect(port, source)
    loop = asyncio.get_running_loop()
    if raw:
        await loop.sock_sendall(sock, raw)
    chunks = []
    async with asyncio.timeout(5.0):
        while chunk := await loop.sock_recv(sock, 65536):
            chunks.append(chunk)
            if b"hello" in chunk:
                break
    sock.close()
    return b"".join(chunks)


async def _with_api(guard: ApiGuard, test: Callable[[int], Awaitable[None]]) -> None:
    server, runner, port = await _api(guard)
    try:
        await test(port)
    finally:
        server.close()
        await runner.cleanup()


async def test_a_partial_request_head_is_closed_at_the_head_deadline_and_others_are_answered() -> None:
    guard = ApiGuard(api_caps(1024), head_timeout_s=0.2)

    async def test(port: int) -> None:
        slow = _connect(port, "127.0.0.2")
        slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert await _closed_by_peer(slow, timeout_s=3.0)
        slow.close()
        assert guard.counters["api_head_timeout"] == 1
        assert b"200 OK" in await _http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    await _with_api(guard, test)


async def test_a_body_that_stops_arriving_is_closed_at_the_body_deadline() -> None:
    guard = ApiGuard(api_caps(1024), body_timeout_s=0.2, body_rate_min_bytes_per_s=1e9)

    async def test(port: int) -> None:
        half = _connect(port, "127.0.0.2")
        half.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
        assert await _closed_by_peer(half, timeout_s=3.0)
        half.close()
        assert guard.counters["api_body_timeout"] == 1
        whole = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        assert b"200 OK" in await _http(port, whole)

    await _with_api(guard, test)


async def test_connections_over_the_per_address_cap_get_503_and_others_still_get_in() -> None:
    guard = ApiGuard(ConnectionCaps(total_max=6, per_host_max=3, strangers_max=6))

    async def test(port: int) -> None:
        held = [_connect(port, "127.0.0.2") for _ in range(3)]
        # Answered at once, before it sends (a request sent first may meet a reset instead).
        assert b"503 Service Unavailable" in await _http(port, b"", "127.0.0.2")
        assert guard.counters["api_refused_per_host"] == 1
        # Full in total: the longest-waiting idle connection makes room.
        held += [_connect(port, "127.0.0.3") for _ in range(3)]
        assert b"200 OK" in await _http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert guard.counters["api_evicted"] >= 1
        for sock in held:
            sock.close()

    await _with_api(guard, test)


def test_api_caps_follow_the_open_files_limit() -> None:
    assert api_caps(None).total_max == 256
    assert api_caps(8192).total_max == 256
    assert api_caps(256).total_max == 64
    assert api_caps(16).total_max == 8 and api_caps(16).per_host_max == 8


# --- logging and the open-files limit --------------------------------------------------------


def _record(msg: str, args: tuple[object, ...] = (), level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("asyncio", level, __file__, 1, msg, args, None)


def test_a_repeated_error_is_logged_once_per_interval_with_the_count_suppressed() -> None:
    now = [0.0]
    repeat = RepeatFilter(interval_s=60.0, clock=lambda: now[0])
    assert repeat.filter(_record("accept failed on %s", ("fd 12",)))
    assert not any(repeat.filter(_record("accept failed on %s", ("fd 12",))) for _ in range(1000))
    assert repeat.filter(_record("accept failed on %s", ("fd 13",)))  # another error: its own line
    assert repeat.filter(_record("routine", level=logging.INFO))
    assert repeat.filter(_record("routine", level=logging.INFO))
    now[0] = 61.0
    record = _record("accept failed on %s", ("fd 12",))
    assert repeat.filter(record)
    assert record.getMessage() == "accept failed on fd 12 [1000 more like this suppressed in the last 60 s]"
    assert repeat.suppressed == 1000


def test_the_soft_open_files_limit_is_raised_within_the_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: limits.update(now=value))
    assert fdlimit.raise_open_files_limit(8192) == 4096
    assert limits["now"] == (4096, 4096)
    limits["now"] = (1024, resource.RLIM_INFINITY)
    assert fdlimit.raise_open_files_limit(8192) == 8192
    limits["now"] = (20000, 20000)
    assert fdlimit.raise_open_files_limit(8192) == 20000  # never lowered


async def test_a_request_whose_client_left_is_cancelled_when_asked_and_others_run_on() -> None:
    guard = ApiGuard(api_caps(1024), cancel_when_gone=lambda request: request.path == "/wait")
    ended: list[str] = []
    release = asyncio.Event()

    async def wait(request: web.Request) -> web.Response:
        try:
            await release.wait()
        finally:
            ended.append(request.path)
        return web.Response(text="hello")

    async def test(port: int) -> None:
        for path in ("/wait", "/keep"):
            sock = _connect(port, "127.0.0.2")
            sock.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await asyncio.sleep(0.1)
            sock.close()  # the client leaves before the answer
        await asyncio.sleep(0.2)
        assert ended == ["/wait"]  # cancelled; /keep still runs, as aiohttp runs every handler
        assert guard.counters["api_client_gone"] == 1
        release.set()
        await asyncio.sleep(0.1)
        assert ended == ["/wait", "/keep"]
        assert b"200 OK" in await _http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    app_routes = [("/wait", wait), ("/keep", wait)]
    server, runner, port = await _api(guard, app_routes)
    try:
        await test(port)
    finally:
        server.close()
        await runner.cleanup()
