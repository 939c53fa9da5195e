"""The lean inference path (mesh/service/v2wire.py) on a loopback server built as launch.py builds
the node's API: its strict head parser, answers equal to aiohttp's, pipelining, hand-overs to
aiohttp, deadlines, clients that leave, flow control and garbage.

Raw bytes on real sockets. The model host is the TEST DOUBLE `FakeHost` of test_v2api.py (pure
numpy, standing in for the onnxruntime host). The guard's counters tell which path answered:
`api_lean_requests` (the lean path) and `api_lean_handovers` (connections given to aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from inference.assignments import ReplicaState
from inference.batching import BatchPolicy
from inference.placing import ReplicaView
from inference.v2codec import RequestedOutput, encode_request, parse_response
from inference.v2types import CodecLimits
from mesh.service.connlimits import ConnectionCaps
from mesh.service.httpguard import ApiGuard, GuardedConnection, api_caps
from mesh.service.modellanes import ModelLanes
from mesh.service.v2api import InferenceFront, add_routes
from mesh.service.v2wire import HEAD_MAX_BYTES, InferHead, InferWire, parse_head
from tests.mesh.test_runtime import _until
from tests.mesh.test_v2api import FakeHost, Member, _json_body

REPLY_TIMEOUT_S = 10.0  # a reply that has not come by then is a failure, not a slow machine

# --- the node's API, built as launch.py builds it --------------------------------------------


@dataclass
class Node:
    host: FakeHost
    front: InferenceFront
    guard: ApiGuard
    port: int
    transports: list[asyncio.Transport]  # each connection's, as its InferWire saw it made

    @property
    def counters(self) -> Counter[str]:
        return self.guard.counters

    def paths(self) -> tuple[int, int]:
        """(requests the lean path answered, connections handed to aiohttp)."""
        return self.counters["api_lean_requests"], self.counters["api_lean_handovers"]


class _SeenWire(InferWire):
    """The real InferWire; only keeps its transport where the test can ask it `is_reading()`."""

    def __init__(self, seen: list[asyncio.Transport], *args: Any) -> None:
        super().__init__(*args)
        self._seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._seen.append(transport)
        super().connection_made(transport)


@contextlib.asynccontextmanager
async def _node(
    host: FakeHost | None = None,
    *,
    token: str | None = None,
    capacity: int = 8,
    limits: CodecLimits | None = None,
    head_timeout_s: float = 5.0,
    body_timeout_s: float = 5.0,
    socket_buffer_bytes: int | None = None,
    caps: ConnectionCaps | None = None,
    node_id: str = "n1",
    replicas: list[ReplicaView] | None = None,
    members: dict[str, Member] | None = None,
) -> AsyncIterator[Node]:
    host = host if host is not None else FakeHost()
    guard = ApiGuard(
        caps if caps is not None else api_caps(1024),
        head_timeout_s=head_timeout_s,
        body_timeout_s=body_timeout_s,
        body_rate_min_bytes_per_s=1e9,  # the body deadline is body_timeout_s, whatever the length
        cancel_when_gone=lambda request: request.path.startswith("/v2/models/"),
    )
    lanes = ModelLanes(host, lambda _name: BatchPolicy(), capacity)
    views = replicas if replicas is not None else []
    known = members if members is not None else {}
    front = InferenceFront(node_id, "a", host, lambda: views, known.get, lanes, token=token)
    if limits is not None:
        front.limits = limits
    app = web.Application(client_max_size=64 * 1024)  # as the node's API app
    add_routes(app, front)
    app.middlewares.append(guard.middleware)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=head_timeout_s)
    await runner.setup()
    assert runner.server is not None
    seen: list[asyncio.Transport] = []

    def wire(conn: GuardedConnection, inner: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        return _SeenWire(seen, front, conn, inner, guard.counters)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if socket_buffer_bytes is not None:  # accepted sockets inherit these
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, socket_buffer_bytes)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, socket_buffer_bytes)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    server = await asyncio.get_running_loop().create_server(
        guard.protocol_factory(runner.server, wire), sock=listener
    )
    try:
        yield Node(host, front, guard, listener.getsockname()[1], seen)
    finally:
        if host.gate is not None:
            host.gate.set()  # a gated run ends so the lanes' threads can stop
        server.close()
        await runner.cleanup()


# --- the client's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def same_answer(self) -> tuple[Any, ...]:
        """What a lean answer and aiohttp's must agree on."""
        h = self.headers
        return (
            self.status,
            self.body,
            h.get("content-type"),
            h.get("inference-header-content-length"),
            h.get("retry-after"),
            h.get("www-authenticate"),
        )


def _post(body: bytes, path: str = "/v2/models/scorer/infer", *, headers: str = "") -> bytes:
    """A request as a client writes it (`headers`: more lines, each ending in CRLF)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: node\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
    )


def _infer(x: np.ndarray[Any, Any] | None = None, *, headers: str = "", **extra: Any) -> bytes:
    """A JSON inference request for the scorer."""
    doc = _json_body(**extra) if x is None else _json_body(x, **extra)
    return _post(json.dumps(doc).encode(), headers="Content-Type: application/json\r\n" + headers)


def _binary(x: np.ndarray[Any, Any], *, json_out: bool = False) -> bytes:
    """A binary-tensor inference request; its answer binary too unless `json_out`."""
    body, length = encode_request({"x": x}, binary=True, outputs=[RequestedOutput("score", not json_out)])
    return _post(body, headers=f"Inference-Header-Content-Length: {length}\r\n")


async def _reply(reader: asyncio.StreamReader) -> Reply:
    """The next final answer on the connection (a 100 Continue is skipped)."""
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            status = int(lines[0].split(" ")[1])
            if status >= 200:
                break
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body)


async def _exchange(port: int, raw: bytes, count: int = 1) -> list[Reply]:
    """Send `raw` in one write on a new connection; its first `count` answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return [await _reply(reader) for _ in range(count)]
    finally:
        writer.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (nothing more is sent before it does)."""
    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a reset, as a client that gives up does with SO_LINGER 0: the
    node learns at once that it left (a FIN alone reads as a half-close, answered)."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _scores(reply: Reply) -> list[float]:
    length = reply.headers.get("inference-header-content-length")
    outputs = parse_response(reply.body, int(length) if length is not None else None).outputs
    return [float(v) for v in outputs["score"]]


def _requests_counted(front: InferenceFront, code: str) -> float:
    """murmur_inference_requests{model="scorer", route="local", code=...}."""
    requests = front.stats.families({})[0]
    return sum(
        s.value
        for s in requests.samples
        if s.labels == {"model": "scorer", "route": "local", "code": code} and s.name.endswith("_total")
    )


def _routes_counted(front: InferenceFront, route: str) -> float:
    """murmur_inference_requests{model="scorer", route=...}, every code."""
    requests = front.stats.families({})[0]
    return sum(
        s.value
        for s in requests.samples
        if s.labels.get("model") == "scorer" and s.labels.get("route") == route and s.name.endswith("_total")
    )


HEALTH = b"GET /v2/health/ready HTTP/1.1\r\nHost: node\r\n\r\n"

# --- 1. the head parser ----------------------------------------------------------------------

GOOD_HEAD = (
    b"POST /v2/models/scorer/infer HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
    b"Content-Length: 42"
)


def test_an_accepted_head_gives_the_fields_serving_needs() -> None:
    assert parse_head(GOOD_HEAD) == InferHead(
        "scorer",
        None,
        "/v2/models/scorer/infer",
        42,
        False,
        False,
        {"Content-Type": "application/json"},
    )
    good = parse_head(GOOD_HEAD)
    assert good is not None and (good.json_length, good.priority, good.authorization) == (None, None, None)
    head = (
        b"POST /v2/models/conv-small-2/versions/1.0+b@x/infer HTTP/1.1\r\n"
        b"content-length:\t0007 \r\nINFERENCE-HEADER-CONTENT-LENGTH: 5\r\nMurmur-Priority:  critical\r\n"
        b"Authorization: Bearer s3cret\r\nConnection: keep-alive, Close\r\nX-Anything: a\tb ~\r\nHost: h\r\n"
        b"content-type: application/octet-stream\r\nMurmur-Forwarded: node-a"
    )
    carried = {  # what a forward of it carries, by their usual names
        "Inference-Header-Content-Length": "5",
        "Murmur-Priority": "critical",
        "Authorization": "Bearer s3cret",
        "Content-Type": "application/octet-stream",
    }
    assert parse_head(head) == InferHead(
        "conv-small-2",
        "1.0+b@x",
        "/v2/models/conv-small-2/versions/1.0+b@x/infer",
        7,
        close=True,
        forwarded=True,
        carried=carried,
    )
    parsed = parse_head(head)
    assert parsed is not None
    assert (parsed.json_length, parsed.priority, parsed.authorization) == ("5", "critical", "Bearer s3cret")
    assert parse_head(GOOD_HEAD + b"\r\nConnection: keep-alive") == parse_head(GOOD_HEAD)


@given(st.binary(max_size=4096))
def test_the_head_parser_never_raises_on_any_bytes(data: bytes) -> None:
    assert parse_head(data) is None or isinstance(parse_head(data), InferHead)


@given(st.lists(st.binary(max_size=80), max_size=12))
def test_the_head_parser_never_raises_on_any_lines_after_a_good_request_line(lines: list[bytes]) -> None:
    head = b"\r\n".join([b"POST /v2/models/scorer/infer HTTP/1.1", *lines])
    assert parse_head(head) is None or isinstance(parse_head(head), InferHead)


_TOKEN_CHARS = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
_SPECIAL = {
    "content-length",
    "connection",
    "authorization",
    "murmur-priority",
    "inference-header-content-length",
    "content-type",
    "murmur-forwarded",
    "transfer-encoding",
    "expect",
    "upgrade",
}
_OTHER_FIELDS = st.lists(
    st.tuples(
        st.text(_TOKEN_CHARS, min_size=1, max_size=20).filter(lambda n: n.lower() not in _SPECIAL),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    ).map(lambda f: f"{f[0]}: {f[1]}".encode()),
    max_size=8,
)


@given(_OTHER_FIELDS, st.integers(0, 10**15 - 1), st.sampled_from(["Content-Length", "content-LENGTH"]))
def test_any_other_fields_leave_a_good_head_accepted(others: list[bytes], length: int, name: str) -> None:
    head = b"\r\n".join(
        [b"POST /v2/models/scorer/versions/2/infer HTTP/1.1", *others, f"{name}: {length}".encode()]
    )
    assert parse_head(head) == InferHead(
        "scorer", "2", "/v2/models/scorer/versions/2/infer", length, False, False, {}
    )


# Each breaks a field line a good head could hold: aiohttp must see such a request.
BAD_FIELDS = [
    b"X-A: 1\nX-B: 2",  # bare LF
    b" folded-on",  # obs-fold (space)
    b"\tfolded-on",  # obs-fold (tab)
    b"X-A : 1",  # space before the colon
    b"Content-Length: 42",  # a second Content-Length
    b"Transfer-Encoding: chunked",
    b"transfer-encoding: identity",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"X-A: caf\xc3\xa9",  # non-ASCII in a value
    b"X-A: \x7f",
    b"X-A: a\rb",  # bare CR
    b"X-\xff: 1",
    b"no colon here",
    b": no name",
    b"",  # an empty line inside the head
]
BAD_LINES = [
    b"POST /v2/models/scorer/infer HTTP/1.0",
    b"post /v2/models/scorer/infer HTTP/1.1",
    b"PUT /v2/models/scorer/infer HTTP/1.1",
    b"POST /v2/models/scorer/infer?x=1 HTTP/1.1",
    b"POST /v2/models/sc%6Frer/infer HTTP/1.1",
    b"POST /v2/models/Scorer/infer HTTP/1.1",
    b"POST /v2/models/scorer/infer/ HTTP/1.1",
    b"POST /v2/models/scorer/versions//infer HTTP/1.1",
    b"POST http://node/v2/models/scorer/infer HTTP/1.1",
    b"POST  /v2/models/scorer/infer HTTP/1.1",
    b"POST /v2/models/scorer/infer HTTP/1.1 ",
    b"POST /v2/models/scorer/infer HTTP/2",
]
FULLWIDTH_42 = "\uff14\uff12".encode()  # digits to str.isdigit, not to bytes.isdigit
BAD_LENGTHS = [b"+42", b"-42", b"4 2", b"42a", b"0x2a", b"", b"4.2", b"1" * 16, FULLWIDTH_42]


@given(_OTHER_FIELDS, st.integers(0, 8), st.sampled_from(BAD_FIELDS))
def test_a_bad_field_line_anywhere_sends_the_request_to_aiohttp(
    others: list[bytes], at: int, bad: bytes
) -> None:
    lines = [b"POST /v2/models/scorer/infer HTTP/1.1", *others, b"Content-Length: 42"]
    lines.insert(1 + min(at, len(lines) - 1), bad)
    assert parse_head(b"\r\n".join(lines)) is None


@given(_OTHER_FIELDS, st.sampled_from(BAD_LINES))
def test_a_request_line_this_path_does_not_serve_sends_the_request_to_aiohttp(
    others: list[bytes], line: bytes
) -> None:
    assert parse_head(b"\r\n".join([line, *others, b"Content-Length: 42"])) is None


@given(_OTHER_FIELDS, st.sampled_from(BAD_LENGTHS))
def test_a_length_that_is_not_plain_digits_sends_the_request_to_aiohttp(
    others: list[bytes], length: bytes
) -> None:
    lines = [b"POST /v2/models/scorer/infer HTTP/1.1", *others, b"Content-Length: " + length]
    assert parse_head(b"\r\n".join(lines)) is None
    assert parse_head(b"\r\n".join(lines[:-1])) is None  # no length at all


# --- 2. a lean answer is aiohttp's -----------------------------------------------------------


async def _lean_and_aiohttp(node: Node, raw: bytes) -> tuple[Reply, Reply]:
    """`raw` answered by the lean path (a new connection) and by aiohttp (a connection handed
    over by a health check first)."""
    before = node.paths()
    [lean] = await _exchange(node.port, raw)
    assert node.paths() == (before[0] + 1, before[1])
    health, handed = await _exchange(node.port, HEALTH + raw, count=2)
    assert health.json() == {"ready": True}
    assert node.paths() == (before[0] + 1, before[1] + 1)
    return lean, handed


@pytest.mark.parametrize(
    ("raw", "status", "needle"),
    [
        (_infer(id="r1"), 200, b'"id":"r1"'),
        (_binary(np.arange(3000, dtype=np.float32).reshape(-1, 3)), 200, b"binary_data_size"),
        (_binary(np.ones((4, 3), np.float32), json_out=True), 200, b"[3.0,3.0,3.0,3.0]"),
        (_infer(np.zeros((2, 4), np.float32)), 400, b"input 'x': shape [2, 4] does not fit"),
        (_infer(parameters={"priority": "urgent"}), 400, b"priority 'urgent'"),
        (_post(b"{"), 400, b"not valid JSON"),
        (_post(b"{}", headers="Inference-Header-Content-Length: 99\r\n"), 400, b"Inference-Header"),
        (_infer().replace(b"/scorer/", b"/scorer/versions/9/"), 404, b"version '9' is not served"),
        (_infer().replace(b"/scorer/", b"/scorer/versions/1/"), 200, b"[6.0,15.0]"),
    ],
)
async def test_a_lean_answer_is_the_same_as_aiohttps(raw: bytes, status: int, needle: bytes) -> None:
    async with _node() as node:
        lean, handed = await _lean_and_aiohttp(node, raw)
    assert lean.status == status and needle in lean.body
    assert lean.same_answer() == handed.same_answer()


async def test_a_failing_model_answers_500_on_both_paths() -> None:
    async with _node(FakeHost(fail=True)) as node:
        lean, handed = await _lean_and_aiohttp(node, _infer())
    assert lean.status == 500 and b"out of memory" in lean.body
    assert lean.same_answer() == handed.same_answer()


async def test_a_full_queue_answers_429_with_retry_after_on_both_paths() -> None:
    host = FakeHost(gate=threading.Event())
    async with _node(host, capacity=1) as node:
        running = asyncio.create_task(_exchange(node.port, _infer()))
        await _until(lambda: len(host.calls) == 1)  # taken by the thread, held in the host
        queued = asyncio.create_task(_exchange(node.port, _infer()))
        await _until(lambda: node.front.lanes.queue_depths()["scorer"] == 1)
        lean, handed = await _lean_and_aiohttp(node, _infer())
        assert lean.status == 429 and int(lean.headers["retry-after"]) >= 1
        assert lean.same_answer() == handed.same_answer()
        assert host.gate is not None
        host.gate.set()
        assert [r[0].status for r in await asyncio.gather(running, queued)] == [200, 200]


# --- 3. pipelining ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("middle", "status", "needle", "paths"),
    [
        (HEALTH, 200, b'"ready": true', (1, 1)),
        # a model not served here: the lean path forwards it (here: to no replica, 404)
        (_post(b"{}", "/v2/models/nope/infer"), 404, b"model 'nope' is not deployed", (3, 0)),
        (b"GET /v2/models/scorer HTTP/1.1\r\nHost: node\r\n\r\n", 200, b'"name": "scorer"', (1, 1)),
    ],
)
async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(
    middle: bytes, status: int, needle: bytes, paths: tuple[int, int]
) -> None:
    async with _node() as node:
        first, second, third = await _exchange(
            node.port, _infer(id="a") + middle + _infer(np.ones((1, 3), np.float32), id="c"), count=3
        )
        assert (first.status, first.json()["id"], first.json()["outputs"][0]["data"]) == (
            200,
            "a",
            [6.0, 15.0],
        )
        assert second.status == status and needle in second.body
        assert (third.status, third.json()["id"], third.json()["outputs"][0]["data"]) == (200, "c", [3.0])
        assert node.paths() == paths  # (lean requests, hand-overs)


async def test_lean_requests_sent_in_one_write_are_all_answered_in_order() -> None:
    async with _node() as node:
        raw = b"".join(_infer(np.full((1, 3), i, np.float32), id=str(i)) for i in range(8))
        replies = await _exchange(node.port, raw, count=8)
        assert [(r.json()["id"], r.json()["outputs"][0]["data"]) for r in replies] == [
            (str(i), [3.0 * i]) for i in range(8)
        ]
        assert node.paths() == (8, 0)


# --- 4. bytes one at a time, and the guard's deadlines ---------------------------------------


async def test_a_request_written_one_byte_at_a_time_is_answered_by_the_lean_path() -> None:
    async with _node() as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        for i, byte in enumerate(_binary(np.ones((2, 3), np.float32)) + _infer(id="next")):
            writer.write(bytes([byte]))
            await writer.drain()
            if i % 4 == 0:
                await asyncio.sleep(0.001)  # let the server read what came so far
        assert _scores(await _reply(reader)) == [3.0, 3.0]
        assert (await _reply(reader)).json()["id"] == "next"
        writer.close()
        assert node.paths() == (2, 0)


async def test_a_head_that_stops_arriving_is_closed_at_the_head_deadline() -> None:
    async with _node(head_timeout_s=0.3) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(_infer()[:40])  # "POST /v2/models/scorer/infer HTTP/1.1\r\nH"
        assert await _closed(reader)
        writer.close()
        assert node.counters["api_head_timeout"] == 1 and node.paths() == (0, 0)


async def test_a_body_that_stops_arriving_is_closed_at_the_body_deadline_and_others_are_served() -> None:
    async with _node(body_timeout_s=0.3) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(_infer()[:-10])
        assert await _closed(reader)
        writer.close()
        assert node.counters["api_body_timeout"] == 1
        [reply] = await _exchange(node.port, _infer())
        assert reply.status == 200 and node.paths() == (1, 0)


async def test_a_request_whose_body_came_later_is_served_not_evicted_when_the_api_is_full() -> None:
    host = FakeHost(gate=threading.Event())
    async with _node(host, caps=ConnectionCaps(total_max=1, per_host_max=1, strangers_max=1)) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        raw = _infer()
        head_end = raw.index(b"\r\n\r\n") + 4
        writer.write(raw[:head_end])
        await writer.drain()
        await asyncio.sleep(0.05)  # the head is read before its body comes (ordering only)
        writer.write(raw[head_end:])
        await _until(lambda: len(host.calls) == 1)
        # Its body is in, so it is being served: the full API refuses a newcomer instead.
        newcomer = socket.create_connection(("127.0.0.1", node.port), source_address=("127.0.0.2", 0))
        newcomer.setblocking(False)
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            refused = await asyncio.get_running_loop().sock_recv(newcomer, 4096)
        newcomer.close()
        assert refused.startswith(b"HTTP/1.1 503") and node.counters["api_refused_full"] == 1
        assert host.gate is not None
        host.gate.set()
        assert (await _reply(reader)).status == 200
        writer.close()
        assert node.counters["api_evicted"] == 0 and node.paths() == (1, 0)


async def test_a_client_that_leaves_mid_body_is_not_counted_as_a_body_timeout() -> None:
    async with _node(body_timeout_s=0.3) as node:
        _reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(_infer()[:-10])
        await writer.drain()
        await _until(lambda: len(node.transports) == 1)
        writer.close()  # it leaves; its body deadline, if still set, fires before the next one's
        reader, stalled = await asyncio.open_connection("127.0.0.1", node.port)
        stalled.write(_infer()[:-10])
        assert await _closed(reader)
        stalled.close()
        assert node.counters["api_body_timeout"] == 1


# --- 5. a client that leaves while queued ----------------------------------------------------


async def test_a_client_that_leaves_while_queued_is_cancelled_and_the_next_is_served() -> None:
    host = FakeHost(gate=threading.Event())
    async with _node(host) as node:
        running = asyncio.create_task(_exchange(node.port, _infer(id="running")))
        await _until(lambda: len(host.calls) == 1)
        _reader, leaving = await asyncio.open_connection("127.0.0.1", node.port)
        leaving.write(_infer(id="left"))
        await _until(lambda: node.front.lanes.queue_depths()["scorer"] == 1)
        _reset(leaving)
        await _until(lambda: node.counters["api_client_gone"] == 1)
        await _until(lambda: node.front.lanes.queue_depths()["scorer"] == 0)
        await _until(lambda: _requests_counted(node.front, "499") == 1)
        assert host.gate is not None
        host.gate.set()
        assert (await running)[0].json()["id"] == "running"
        [after] = await _exchange(node.port, _infer(id="after"))
        assert after.json()["id"] == "after"
        assert len(host.calls) == 2  # the one that left never ran
        assert node.paths() == (2, 0) and _requests_counted(node.front, "200") == 2


# --- 6. the connection's end -----------------------------------------------------------------


async def test_connection_close_is_answered_then_the_connection_closes() -> None:
    async with _node() as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(_infer(headers="Connection: close\r\n") + _infer())
        reply = await _reply(reader)
        assert reply.status == 200 and reply.headers["connection"] == "close"
        assert await _closed(reader)  # the request after it is not read
        writer.close()
        assert node.paths() == (1, 0)
        assert node.counters["api_client_gone"] == 0  # it was answered: its client did not leave
        assert _requests_counted(node.front, "200") == 1


async def test_a_client_that_ends_its_sending_has_left_as_aiohttp_takes_it() -> None:
    # A normal close and a half-close look the same to the node (a FIN): both are taken as the
    # client leaving, so an overloaded node drops the requests of clients that gave up.
    host = FakeHost(gate=threading.Event())
    async with _node(host) as node:
        running = asyncio.create_task(_exchange(node.port, _infer(id="running")))
        await _until(lambda: len(host.calls) == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(_infer(id="left"))
        await _until(lambda: node.front.lanes.queue_depths()["scorer"] == 1)
        writer.write_eof()  # shutdown(SHUT_WR) while its request is queued
        assert await _closed(reader)
        await _until(lambda: node.counters["api_client_gone"] == 1)
        await _until(lambda: _requests_counted(node.front, "499") == 1)
        assert node.front.lanes.queue_depths()["scorer"] == 0
        assert host.gate is not None
        host.gate.set()
        assert (await running)[0].json()["id"] == "running"
        writer.close()
        assert len(host.calls) == 1  # the one that left never ran


# --- 7. what aiohttp answers -----------------------------------------------------------------

CHUNKED = (
    b"POST /v2/models/scorer/infer HTTP/1.1\r\nHost: node\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(
        b"%x\r\n%s\r\n" % (len(c), c)
        for c in (
            b'{"inputs": [{"name": "x", ',
            b'"shape": [1, 3], ',
            b'"datatype": "FP32", "data": [1, 2, 3]}]}',
        )
    )
    + b"0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("raw", "status", "needle"),
    [
        (CHUNKED, 200, b'"data":[6.0]'),
        (_post(b" " * 2000), 413, b"over the limit of 1000"),
        (_post(b"{}", headers="Content-Length: 2\r\n"), 400, b""),  # a second length: never served
        (_infer(headers="Expect: 100-continue\r\n"), 200, b"[6.0,15.0]"),
        (_infer().replace(b"HTTP/1.1", b"HTTP/1.0"), 200, b"[6.0,15.0]"),
        (_infer(headers="".join(f"X-Filler-{i}: {'f' * 500}\r\n" for i in range(40))), 200, b"[6.0,15.0]"),
        (_infer().replace(b"Host: node", b"Host: node\r\nX-A : b"), 400, b""),
    ],
    ids=["chunked", "over-limit", "two-lengths", "expect", "http10", "20KiB-head", "space-before-colon"],
)
async def test_requests_the_lean_path_does_not_take_are_answered_by_aiohttp(
    raw: bytes, status: int, needle: bytes
) -> None:
    async with _node(limits=CodecLimits(body_max_bytes=1000)) as node:
        [reply] = await _exchange(node.port, raw)
        assert reply.status == status and needle in reply.body
        assert node.paths() == (0, 1)
        if status != 200:
            assert node.host.calls == []
        [lean] = await _exchange(node.port, _infer())  # and a new connection is lean again
        assert lean.status == 200 and node.paths() == (1, 1)


def test_the_20kib_head_is_longer_than_the_lean_path_reads() -> None:
    head = _infer(headers="".join(f"X-Filler-{i}: {'f' * 500}\r\n" for i in range(40)))
    assert head.index(b"\r\n\r\n") > HEAD_MAX_BYTES


async def test_the_inference_token_the_lean_path_takes_and_the_ones_aiohttp_refuses() -> None:
    async with _node(token="s3cret") as node:
        for auth, status in (
            ("", 401),
            ("Authorization: Bearer wrong\r\n", 401),
            ("Authorization: s3cret\r\n", 401),
        ):
            [reply] = await _exchange(node.port, _infer(headers=auth))
            assert reply.status == status and reply.headers["www-authenticate"] == "Bearer"
        assert node.paths() == (0, 3)
        [reply] = await _exchange(node.port, _infer(headers="Authorization: Bearer s3cret\r\n"))
        assert reply.status == 200 and node.paths() == (1, 3)


# --- 8. flow control -------------------------------------------------------------------------


async def test_big_pipelined_data_while_a_request_is_served_pauses_reading_then_all_are_answered() -> None:
    host = FakeHost(gate=threading.Event())
    async with _node(host) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(_binary(np.zeros((1, 3), np.float32)))
        await _until(lambda: len(host.calls) == 1)
        more = [_binary(np.full((1000, 3), i, np.float32)) for i in range(1, 27)]
        assert sum(map(len, more)) > 300 * 1024
        writer.write(b"".join(more))
        [transport] = node.transports
        await _until(lambda: not transport.is_reading())  # past the read-ahead while the first is served
        assert host.gate is not None
        host.gate.set()
        replies = [await _reply(reader) for _ in range(27)]
        assert [_scores(r)[0] for r in replies] == [3.0 * i for i in range(27)]
        assert transport.is_reading()
        writer.close()
        assert node.paths() == (27, 0)


async def test_a_client_that_sends_without_reading_answers_is_held_to_the_read_ahead() -> None:
    small_bytes = 4096
    async with _node(socket_buffer_bytes=small_bytes, head_timeout_s=1.0) as node:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, small_bytes)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, small_bytes)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", node.port))
        request = _binary(np.ones((2000, 3), np.float32), json_out=True)  # ~24 kB, answered ~30 kB
        sending = asyncio.create_task(loop.sock_sendall(client, request * 400))  # 9.6 MB, never read
        done, _ = await asyncio.wait({sending}, timeout=REPLY_TIMEOUT_S)
        sending.cancel()
        client.close()
        # Answers fill the small socket buffers and the transport's: its writing pauses; then the
        # node holds only its read-ahead, so the client cannot get 9.6 MB into it: no request
        # is read meanwhile, and the head deadline cuts it off.
        assert done and isinstance(sending.exception(), ConnectionError)
        assert node.counters["api_head_timeout"] == 1
        assert node.counters["api_lean_requests"] < 100  # of the 400 sent


# --- 10. forwarding from the lean path -------------------------------------------------------


async def test_a_model_served_elsewhere_is_forwarded_by_the_lean_path_marked_and_answered_the_same() -> None:
    replicas: list[ReplicaView] = []
    members: dict[str, Member] = {}
    async with (
        _node(node_id="n1", replicas=replicas, members=members) as holder,
        _node(FakeHost(serves=False), node_id="n0", replicas=replicas, members=members) as entry,
    ):
        members["n1"] = Member("a", "alive", f"127.0.0.1:{holder.port}")
        replicas.append(ReplicaView("scorer", 0, "n1", ReplicaState.READY))
        request = _binary(np.ones((2, 3), np.float32)) + _infer(
            id="j", headers="Murmur-Priority: critical\r\n"
        )
        through = await _exchange(entry.port, request, count=2)
        direct = await _exchange(holder.port, request, count=2)
        assert [r.same_answer() for r in through] == [r.same_answer() for r in direct]
        assert through[1].json()["id"] == "j" and through[0].status == 200
        assert entry.paths() == (2, 0) and holder.paths() == (4, 0)  # both read by the lean path
        assert _routes_counted(entry.front, "forwarded") == 2
        # a request another node forwarded (marked) is never forwarded again by the lean path
        [again] = await _exchange(entry.port, _infer(headers="Murmur-Forwarded: n9\r\n"))
        assert again.status == 503 and b"never forwarded again" in again.body


async def test_a_forward_to_a_replica_that_is_gone_is_retried_on_another_from_the_lean_path() -> None:
    replicas: list[ReplicaView] = []
    members: dict[str, Member] = {}
    async with (
        _node(FakeHost(scale=2.0), node_id="n2", replicas=replicas, members=members) as second,
        _node(FakeHost(serves=False), node_id="n0", replicas=replicas, members=members) as entry,
    ):
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        members["n1"] = Member("a", "alive", f"127.0.0.1:{closed.getsockname()[1]}")  # nothing listens
        closed.close()
        members["n2"] = Member("a", "alive", f"127.0.0.1:{second.port}")
        replicas += [
            ReplicaView("scorer", 0, "n1", ReplicaState.READY),
            ReplicaView("scorer", 1, "n2", ReplicaState.READY),
        ]
        [reply] = await _exchange(entry.port, _infer())
        assert reply.status == 200 and reply.json()["outputs"][0]["data"] == [12.0, 30.0]
        assert entry.paths() == (1, 0)


async def test_a_peers_answer_with_a_non_ascii_header_is_relayed_not_dropped() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\xe9\r\n")
        writer.write(b"Retry-After: 1\xff\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    replicas = [ReplicaView("scorer", 0, "n1", ReplicaState.READY)]
    members = {"n1": Member("a", "alive", f"127.0.0.1:{server.sockets[0].getsockname()[1]}")}
    try:
        async with _node(FakeHost(serves=False), node_id="n0", replicas=replicas, members=members) as entry:
            [reply] = await _exchange(entry.port, _infer())
            [after] = await _exchange(entry.port, HEALTH)
    finally:
        server.close()
    assert (reply.status, reply.body, reply.headers["retry-after"]) == (400, b"{}", "1?")
    assert after.status == 200  # the node goes on serving


# --- 9. garbage ------------------------------------------------------------------------------

GARBAGE = [
    bytes(range(256)) * 8,
    b"\x00" * 5000,
    b"POST /v2/models/" + b"\xff\xfe" * 100 + b"\r\n\r\n",
    b"POST /v2/models/scorer/infer HTTP/1.1\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n{}",
    b"POST /v2/models/scorer/infer HTTP/1.1\r\nContent-Length: " + b"9" * 15 + b"\r\n\r\n{}",
    b"POST /v2/models/scorer/infer HTTP/1.1\r\nX: " + b"y" * (HEAD_MAX_BYTES + 100),
    b"POST /v2/models/scorer/infer HTTP/1.1\r\n\r\n",
    b"POST /v2/models/scorer/infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n\xff\xfe",
    b"\r\n\r\n\r\n",
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
async def test_garbage_never_breaks_the_loop_and_the_next_connection_is_served(
    garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with _node() as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(garbage)
        writer.write_eof()
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                answer = await reader.read()  # whatever comes, until the server closes
                assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
        writer.close()
        [reply] = await _exchange(node.port, _infer())
        assert reply.status == 200
    # aiohttp logs the bad requests it answers 400; nothing of the loop's or the node's goes wrong
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name != "aiohttp.server"]
