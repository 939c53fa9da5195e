"""The relay that forwards inference requests to peers (mesh/service/relay.py): answers read
whole, connections reused, and every bad answer a clear RelayError that drops its connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.service.relay import HEAD_MAX_BYTES, PeerRelay, RelayError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def relay() -> AsyncIterator[PeerRelay]:
    r = PeerRelay(body_max_bytes=1000)
    yield r
    await r.close()


async def _server(handler: Handler, **kwargs: float) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1", **kwargs)  # type: ignore[arg-type]
    await server.start_server()
    return server


async def _raw_server(answer: bytes, close: bool = True) -> tuple[asyncio.Server, str]:
    """A peer that reads one request head and writes `answer` (then closes, if `close`)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


async def test_an_answer_comes_back_whole_and_the_connection_is_reused(relay: PeerRelay) -> None:
    peers: set[int] = set()

    async def echo(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername")[1])
        body = await request.read()
        headers = {"Inference-Header-Content-Length": "2", "Retry-After": "3"}
        return web.Response(
            status=201, body=body[::-1], headers=headers, content_type="application/octet-stream"
        )

    server = await _server(echo)
    addr = f"127.0.0.1:{server.port}"
    for i in range(3):
        answer = await relay.request(addr, "POST", "/v2/models/m/infer", {"X-Test": str(i)}, b"abc", 5.0)
        assert (answer.status, answer.body) == (201, b"cba")
        assert answer.headers["inference-header-content-length"] == "2"
        assert answer.headers["content-type"] == "application/octet-stream"
    assert len(peers) == 1 and relay.idle(addr) == 1  # one connection for all three
    await server.close()


async def test_a_chunked_answer_is_joined(relay: PeerRelay) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"ab", b"cd", b"e"):
            await response.write(part)
        await response.write_eof()
        return response

    server = await _server(chunked)
    answer = await relay.request(f"127.0.0.1:{server.port}", "GET", "/x", {}, b"", 5.0)
    assert answer.body == b"abcde"
    await server.close()


async def test_a_connection_the_peer_closed_while_idle_is_replaced_without_an_error(relay: PeerRelay) -> None:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(body=b"ok")

    server = await _server(ok, keepalive_timeout=0.05)
    addr = f"127.0.0.1:{server.port}"
    assert (await relay.request(addr, "GET", "/", {}, b"", 5.0)).body == b"ok"
    await asyncio.sleep(0.3)  # the peer closes the idle connection
    assert (await relay.request(addr, "GET", "/", {}, b"", 5.0)).body == b"ok"
    await server.close()


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (b"garbage\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", "at most 1000"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "'-1' bytes"),
        (b"HTTP/1.1 200 OK\r\n\r\nbody", "neither Content-Length nor chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended early"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n", "over 1000 bytes"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * HEAD_MAX_BYTES + b"\r\n\r\n", "a line over"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 4000 + b"\r\n", "head over"),
        (b"", "closed before an answer"),
    ],
)
async def test_a_bad_answer_is_a_clear_error_and_its_connection_is_dropped(
    relay: PeerRelay, answer: bytes, needle: str
) -> None:
    server, addr = await _raw_server(answer)
    with pytest.raises(RelayError, match=needle):
        await relay.request(addr, "GET", "/", {}, b"", 5.0)
    assert relay.idle(addr) == 0
    server.close()


async def test_no_answer_within_the_timeout_is_an_error(relay: PeerRelay) -> None:
    server, addr = await _raw_server(b"HTTP/1.1 200 OK\r\n", close=False)  # then silence
    with pytest.raises(RelayError, match=r"no answer within 0\.2 s"):
        await relay.request(addr, "GET", "/", {}, b"", 0.2)
    assert relay.idle(addr) == 0
    server.close()


async def test_a_refused_connection_and_a_bad_address_are_errors(relay: PeerRelay) -> None:
    server, addr = await _raw_server(b"")
    server.close()
    await server.wait_closed()
    with pytest.raises(RelayError, match="cannot connect"):
        await relay.request(addr, "GET", "/", {}, b"", 5.0)
    with pytest.raises(RelayError, match="not a host:port"):
        await relay.request("nowhere", "GET", "/", {}, b"", 5.0)
    with pytest.raises(RelayError, match="line break"):
        await relay.request(addr, "GET", "/", {"X": "a\r\nInjected: 1"}, b"", 5.0)


async def test_a_request_cancelled_midway_leaves_no_connection_behind(relay: PeerRelay) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"late")

    server = await _server(slow)
    addr = f"127.0.0.1:{server.port}"
    task = asyncio.create_task(relay.request(addr, "GET", "/", {}, b"", 5.0))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert relay.idle(addr) == 0  # its answer would have been the next request's
    release.set()
    await server.close()


async def test_connection_close_is_honoured_and_a_closed_relay_refuses(relay: PeerRelay) -> None:
    server, addr = await _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert (await relay.request(addr, "GET", "/", {}, b"", 5.0)).body == b"ok"
    assert relay.idle(addr) == 0
    await relay.close()
    with pytest.raises(RelayError, match="closed"):
        await relay.request(addr, "GET", "/", {}, b"", 5.0)
    server.close()


async def test_large_bodies_go_both_ways() -> None:
    relay = PeerRelay(body_max_bytes=4 * 1024 * 1024)

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    server = await _server(echo)
    body = bytes(range(256)) * 4096  # 1 MiB: many reads, past the reader's flow-control mark
    answer = await relay.request(f"127.0.0.1:{server.port}", "POST", "/", {}, body, 10.0)
    assert answer.body == body
    await relay.close()
    await server.close()
