"""The lean path for the request a node answers most: an inference.

aiohttp's request machinery (request and response objects, routing, middlewares, streams) costs
the event loop more per request than decoding the tensors does, and the one loop is what limits
a node serving a fast model (docs/benchmarks.md, "A lean path for inference requests"). So each
API connection's protocol, behind the guard (mesh/service/httpguard.py), is an `InferWire`
that reads requests itself while they are

    POST /v2/models/{name}[/versions/{version}]/infer HTTP/1.1

with a `Content-Length` body no larger than the codec allows, the right inference token if
the cluster has one, and no header this path does not handle (`Transfer-Encoding`, `Expect`,
`Upgrade`). It answers them with the same code as the aiohttp route: served here through the
model's queue (v2api.serve_here) when this node holds a ready replica, else forwarded to one
(v2api.forward); it counts them the same way (murmur_inference_*), and drops a request whose
client leaves, as the guard does for aiohttp's.

The first request that is anything else (another path, a chunked body, HTTP/1.0, a head this
strict parser does not accept, a missing token) and every later request on that connection go
to aiohttp's protocol, with every byte as it arrived: the parser here only decides what it
takes, aiohttp answers the rest, errors included. Requests on one connection are answered in
order, pipelined ones too.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference.requestqueue import PRIORITY_HEADER
from inference.v2types import HEADER_LENGTH_HEADER
from mesh.service.httpguard import GuardedConnection
from mesh.service.v2api import (
    FORWARDED_HEADERS,
    HOP_HEADER,
    Answer,
    Ask,
    InferenceFront,
    forward,
    local_metadata,
    serve_here,
    token_refusal,
)

log = logging.getLogger(__name__)

HEAD_MAX_BYTES = 16 * 1024  # a longer head goes to aiohttp, which has its own limits
PIPELINED_MAX_BYTES = 64 * 1024  # read ahead while a request is served, then reading pauses
_PREFIX = b"POST /v2/models/"
_TARGET = re.compile(
    rb"/v2/models/([a-z0-9][a-z0-9-]{0,62})(?:/versions/([A-Za-z0-9][A-Za-z0-9._:+@-]{0,127}))?/infer"
)
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token
_FIELD_VALUE = re.compile(rb"[\x20-\x7e\t]*")  # visible ASCII, spaces and tabs: no obs-text
# The fields this path reads; those a forward carries keep their names (v2api.FORWARDED_HEADERS).
_FORWARDED = {name.lower().encode("ascii"): name for name in FORWARDED_HEADERS}
_KEPT = frozenset((b"content-length", b"connection", HOP_HEADER.lower().encode("ascii"), *_FORWARDED))
_REFUSED = frozenset((b"transfer-encoding", b"expect", b"upgrade"))  # aiohttp handles these


@dataclass(frozen=True, slots=True)
class InferHead:
    """A request head this path takes: what serving it needs."""

    model: str
    version: str | None
    path: str
    content_length: int
    close: bool  # Connection: close
    forwarded: bool  # another node sent it (v2api.HOP_HEADER)
    carried: dict[str, str]  # what a forward carries (v2api.FORWARDED_HEADERS), by those names

    @property
    def json_length(self) -> str | None:
        return self.carried.get(HEADER_LENGTH_HEADER)

    @property
    def priority(self) -> str | None:
        return self.carried.get(PRIORITY_HEADER)

    @property
    def authorization(self) -> str | None:
        return self.carried.get("Authorization")


def parse_head(head: bytes) -> InferHead | None:
    """The head (without its final blank line) if this path takes it, else None: aiohttp will."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    target = _TARGET.fullmatch(parts[1])
    if target is None:
        return None
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            return None
        key = name.lower()
        if key in _REFUSED:
            return None
        if key in _KEPT:
            if key in fields:
                return None  # a repeated field: aiohttp's rules decide
            fields[key] = value
    length = fields.get(b"content-length")
    if length is None or not length.isdigit() or len(length) > 15:
        return None
    tokens = {t.strip().lower() for t in fields.get(b"connection", b"").split(b",")}
    if b"upgrade" in tokens:
        return None

    version = target.group(2)
    return InferHead(
        model=target.group(1).decode("ascii"),
        version=version.decode("ascii") if version is not None else None,
        path=parts[1].decode("ascii"),
        content_length=int(length),
        close=b"close" in tokens,
        forwarded=HOP_HEADER.lower().encode("ascii") in fields,
        carried={_FORWARDED[k]: v.decode("ascii") for k, v in fields.items() if k in _FORWARDED},
    )


class _Dates:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(second, usegmt=True).encode("ascii")
        return self._value


_DATES = _Dates()
_REASONS = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}


def response_bytes(answer: Answer, close: bool) -> list[bytes]:
    """The answer as HTTP/1.1 writes it: head, then body."""
    head = [
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n"
        % (
            answer.status,
            _REASONS.get(answer.status, b"Unknown"),
            answer.content_type.encode("ascii", "replace"),
            len(answer.body),
            _DATES.now(),
        )
    ]
    # A peer's relayed values are ASCII but for a bad peer's (never CR or LF: relay.py splits on them)
    head.extend(b"%s: %s\r\n" % (k.encode("ascii"), v.encode("ascii", "replace")) for k, v in answer.headers)
    head.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
    return [b"".join(head), answer.body]


class InferWire(asyncio.Protocol):
    """One API connection: inference requests this node serves answered here, the connection
    handed to aiohttp's protocol (`make_inner`) at its first other request."""

    def __init__(
        self,
        front: InferenceFront,
        conn: GuardedConnection,
        make_inner: Callable[[], asyncio.Protocol],
        counters: Counter[str],
    ) -> None:
        self._front = front
        self._conn = conn
        self._make_inner = make_inner
        self._counters = counters
        self._inner: asyncio.Protocol | None = None  # aiohttp's, once handed over
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: InferHead | None = None  # its body still arriving
        self._done: Callable[[], None] = lambda: None  # the guard's, for the request in hand
        self._busy = False  # a request is being served: the next waits in the buffer
        self._close_when_served = False  # it said Connection: close
        self._gone = False
        self._reading_paused = False
        self._writing_paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._buffer += data
        if not self._busy:
            self._advance()
        self._flow()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        # A client's end of sending is taken as its leaving, as aiohttp takes it: the transport
        # closes and a request in hand is dropped (the guard's cancel_when_gone).
        return False

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._inner is not None:
            self._inner.resume_writing()
        elif not self._busy:
            self._advance()
            self._flow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True  # the guard cancels a request in hand (cancel_when_gone)
        self._buffer.clear()
        if self._head is not None:  # its body was arriving: its deadline has nothing to close
            self._head = None
            self._done()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    # --- reading requests ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Take the next request in the buffer, if it has arrived and the connection is free."""
        while not (self._busy or self._gone or self._writing_paused or self._inner is not None):
            if self._transport is None or self._transport.is_closing():
                return
            if self._head is None and not self._read_head():
                return
            head = self._head
            assert head is not None
            if len(self._buffer) < head.content_length:
                return
            with memoryview(self._buffer) as view:
                body = bytes(view[: head.content_length])
            del self._buffer[: head.content_length]
            self._conn.body_arrived()
            self._head, self._busy = None, True
            task = asyncio.get_running_loop().create_task(self._serve(head, body))
            self._conn.cancel_when_gone(task)
            task.add_done_callback(self._served)

    def _read_head(self) -> bool:
        """Whether a head this path takes was read into `_head`; hands the connection to aiohttp
        when the next request is not one."""
        buffer = self._buffer
        if not buffer:
            return False
        if not buffer.startswith(_PREFIX[: len(buffer)]):
            self._hand_over()
            return False
        end = buffer.find(b"\r\n\r\n", 0, HEAD_MAX_BYTES)
        if end < 0:
            if len(buffer) >= HEAD_MAX_BYTES:
                self._hand_over()
            return False
        head = parse_head(bytes(buffer[:end]))
        if (
            head is None
            or head.content_length > self._front.limits.body_max_bytes
            or token_refusal(self._front, head.path, head.authorization) is not None
        ):
            self._hand_over()
            return False
        del buffer[: end + 4]
        self._head = head
        self._done = self._conn.request_began(head.content_length, self._body_in)
        return True

    def _flow(self) -> None:
        """Pause reading while more is buffered than the request in hand's body and
        PIPELINED_MAX_BYTES of read-ahead; resume once it is not (a client that sends without
        reading its answers is held to that)."""
        if self._inner is not None or self._gone or self._transport is None:
            return
        limit = PIPELINED_MAX_BYTES + (self._head.content_length if self._head is not None else 0)
        over = len(self._buffer) > limit
        if over != self._reading_paused:
            self._reading_paused = over
            if over:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _body_in(self) -> bool:
        return self._head is None or len(self._buffer) >= self._head.content_length

    def _hand_over(self) -> None:
        """From here on aiohttp's protocol has this connection, starting with the bytes unread."""
        assert self._transport is not None
        self._counters["api_lean_handovers"] += 1
        inner = self._inner = self._make_inner()
        inner.connection_made(self._transport)
        if self._writing_paused:
            inner.pause_writing()
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            inner.data_received(data)
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    # --- answering ----------------------------------------------------------------------------

    async def _serve(self, head: InferHead, body: bytes) -> None:
        front = self._front
        started_s = time.monotonic()
        route, status = "refused", 500
        try:
            meta, answer = local_metadata(front, head.model, head.version)
            if meta is not None:
                route = "local"
                answer = await serve_here(
                    front, head.model, meta, body, json_length=head.json_length, priority=head.priority
                )
            elif answer is None:  # served elsewhere
                ask = Ask(head.model, "POST", head.path, head.carried, body, head.forwarded)
                answer, sent = await forward(front, ask)
                route = "forwarded" if sent else route
            status = answer.status
        except asyncio.CancelledError:  # its client left
            status = 499
            raise
        except Exception:
            log.exception("inference request for %s failed", head.model)
            answer = Answer.error(500, "internal error; see the node's log")
        finally:
            front.count(head.model, route, status, started_s)
        self._counters["api_lean_requests"] += 1
        if self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(response_bytes(answer, head.close))
            self._close_when_served = head.close  # closed once this task is done (`_served`)

    def _served(self, task: asyncio.Task[Any]) -> None:
        self._busy = False
        self._done()
        if task.cancelled() or self._gone:
            return
        if self._close_when_served and self._transport is not None:
            # Only now: closing from the task would end the connection while the guard still
            # counts the request in hand, and count its client as gone.
            self._gone = True
            self._transport.close()
            return
        if task.exception() is not None and self._transport is not None:
            self._gone = True  # the answer was not written: the client sees the connection end
            self._transport.abort()
            return
        self._advance()
        self._flow()
