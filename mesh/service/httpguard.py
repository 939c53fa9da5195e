"""The API listener's guard: caps on open connections, and deadlines for request heads and bodies.

aiohttp's server has no header read timeout: a client that sends a partial
request head, one byte now and then, holds its connection (and a file
descriptor) for as long as it likes, and a half-sent body holds its buffers.
This guard wraps each connection's protocol (`ApiGuard.protocol_factory`) and
the application (`ApiGuard.middleware`):

- Admission: a ConnectionTable (mesh/service/connlimits.py) with
  API_CONNECTIONS_PER_HOST_MAX per source address and a total of
  API_CONNECTIONS_MAX, never more than a quarter of the open-files limit (the
  gossip port, the database and artifacts need descriptors too). When the
  total is reached, the connection that has waited longest for a request head
  is closed to make room, else the one that has waited longest in the middle
  of a body; if every connection is busy with a whole request, the new one is
  answered 503 at once and closed.
- Head deadline: a complete request head must arrive within API_HEAD_TIMEOUT_S
  of the connection opening or of the end of its previous request (this is
  also how long an idle keep-alive connection stays open).
- Body deadline: a request's body must have arrived within API_BODY_TIMEOUT_S
  plus its length at API_BODY_RATE_MIN_BYTES_PER_S (a large artifact upload
  gets time in proportion), or the connection is closed.

Every refusal, eviction and timeout is counted (`counters`, shown in
GET /v1/health), never logged per connection.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web

from mesh.service.connlimits import ConnectionCaps, ConnectionTable, Slot
from mesh.service.memtrim import release_freed_memory

API_CONNECTIONS_MAX = 256
API_CONNECTIONS_PER_HOST_MAX = 32  # a CLI, a browser, peers forwarding reads from one NAT
API_OPEN_FILES_SHARE = 4  # the API holds at most 1/4 of the open-files limit
API_CONNECTIONS_MIN = 8  # even under a tiny open-files limit
API_HEAD_TIMEOUT_S = 5.0
API_BODY_TIMEOUT_S = 5.0
API_BODY_RATE_MIN_BYTES_PER_S = 64 * 1024
API_BODY_UNKNOWN_BYTES = 64 * 1024  # a chunked body's assumed length (the API's request bodies are small)
# After a burst of at least TRIM_AFTER_PEAK connections falls back to TRIM_WHEN_OPEN_AT_MOST,
# freed buffers go back to the system (mesh/service/memtrim.py), at most once per interval.
TRIM_AFTER_PEAK = 64
TRIM_WHEN_OPEN_AT_MOST = 4
TRIM_INTERVAL_MIN_S = 5.0
TRIM_DELAY_S = 0.5  # the closed connections' request tasks end and free their buffers first

_REFUSAL_TEXT = {
    "refused_per_host": (
        f"this node already has {API_CONNECTIONS_PER_HOST_MAX} open API connections from your address; "
        "close idle ones or retry in a moment"
    ),
    "refused_full": "this node's API is at its connection limit; retry in a moment or use another node",
}


def _busy_response(reason: str) -> bytes:
    body = json.dumps({"error": _REFUSAL_TEXT.get(reason, _REFUSAL_TEXT["refused_full"])}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class GuardedConnection(Protocol):
    """What a front door (ApiGuard.protocol_factory) tells the guard of a connection's requests."""

    def request_began(self, body_bytes: int | None, body_in: Callable[[], bool]) -> Callable[[], None]: ...
    def body_arrived(self) -> None: ...
    def cancel_when_gone(self, task: asyncio.Task[Any]) -> None: ...


# A connection's protocol made of the guard's connection and the aiohttp protocol's factory.
FrontDoor = Callable[[GuardedConnection, Callable[[], asyncio.Protocol]], asyncio.Protocol]


def api_caps(open_files_soft: int | None) -> ConnectionCaps:
    """The API's caps under a soft open-files limit (None: unlimited)."""
    total = API_CONNECTIONS_MAX
    if open_files_soft is not None:
        total = max(API_CONNECTIONS_MIN, min(total, open_files_soft // API_OPEN_FILES_SHARE))
    per_host = min(API_CONNECTIONS_PER_HOST_MAX, total)
    return ConnectionCaps(total_max=total, per_host_max=per_host, strangers_max=total)


class ApiGuard:
    """Admission and deadlines for the API's connections; one per listener."""

    def __init__(
        self,
        caps: ConnectionCaps,
        *,
        head_timeout_s: float = API_HEAD_TIMEOUT_S,
        body_timeout_s: float = API_BODY_TIMEOUT_S,
        body_rate_min_bytes_per_s: float = API_BODY_RATE_MIN_BYTES_PER_S,
        counters: Counter[str] | None = None,
        cancel_when_gone: Callable[[web.Request], bool] = lambda _request: False,
    ) -> None:
        """cancel_when_gone(request): whether to stop handling the request when its client's
        connection closes (aiohttp itself never does: a handler runs to its end). For work that
        is only worth doing for a client still waiting: the inference API's queued requests."""
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.cancel_when_gone = cancel_when_gone
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.body_rate_min_bytes_per_s = body_rate_min_bytes_per_s
        self._last_refusal = ""
        self.table = ConnectionTable(caps, self._count)
        self._connections: dict[asyncio.BaseTransport, _Guarded] = {}
        self._peak_open = 0  # since the last trim
        self._trimmed_s = float("-inf")
        self._trim: asyncio.TimerHandle | None = None

    def _opened(self) -> None:
        self._peak_open = max(self._peak_open, self.table.open)

    def _closed(self) -> None:
        if self._peak_open < TRIM_AFTER_PEAK or self.table.open > TRIM_WHEN_OPEN_AT_MOST:
            return
        if self._trim is not None:
            return  # one is due
        self._peak_open = self.table.open
        loop = asyncio.get_running_loop()
        due_s = max(loop.time() + TRIM_DELAY_S, self._trimmed_s + TRIM_INTERVAL_MIN_S)
        self._trim = loop.call_at(due_s, self._release)

    def _release(self) -> None:
        self._trim = None
        self._trimmed_s = asyncio.get_running_loop().time()
        if release_freed_memory():
            self.counters["api_memory_trims"] += 1

    def _count(self, reason: str) -> None:
        self._last_refusal = reason
        self.counters[f"api_{reason}"] += 1

    def protocol_factory(
        self, inner: Callable[[], asyncio.Protocol], front_door: FrontDoor | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server that guards what `inner` (runner.server)
        makes; with a `front_door`, each admitted connection's protocol is what it makes of the
        connection and `inner` (mesh/service/v2wire.py)."""
        return lambda: _Guarded(self, inner, front_door)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the request's connection busy (its head arrived) until the response is sent."""
        conn = self._connections.get(request.transport) if request.transport is not None else None
        task = asyncio.current_task()
        if conn is not None and task is not None:
            # The request's task ends once the response is written (a streamed file included).
            task.add_done_callback(conn.request_started(request))
            if self.cancel_when_gone(request):
                conn.cancel_when_gone(task)
        try:
            return await handler(request)
        except ConnectionResetError:
            # The client left (or a deadline closed it) mid-body: nobody to answer, nothing to log.
            self.counters["api_client_gone"] += 1
            return web.Response(status=408)


class _Guarded(asyncio.Protocol):
    """One API connection: admitted by the table, its inner aiohttp protocol made only if admitted."""

    def __init__(
        self, guard: ApiGuard, make_inner: Callable[[], asyncio.Protocol], front_door: FrontDoor | None
    ) -> None:
        self._guard = guard
        self._make_inner = make_inner
        self._front_door = front_door
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._slot: Slot | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._active = 0  # requests being handled (more than one only when pipelined)
        self._cancel_on_loss: set[asyncio.Task[Any]] = set()  # handled for a client still here

    # --- asyncio.Protocol, forwarded to aiohttp's protocol once admitted -------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer: Any = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        slot = self._guard.table.admit(host, member=False, close=self._abort)
        if slot is None:
            self._transport.write(_busy_response(self._guard._last_refusal))
            self._transport.close()  # after the 503 is flushed; no aiohttp protocol was made
            return
        self._slot = slot
        self._guard._connections[transport] = self
        door = self._front_door
        self._inner = self._make_inner() if door is None else door(self, self._make_inner)
        self._guard._opened()
        self._expect_head()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        for task in list(self._cancel_on_loss):
            if not task.done():  # not yet answered: nobody is left to answer
                self._guard.counters["api_client_gone"] += 1
                task.cancel()
        if self._slot is None or self._inner is None:
            return
        self._guard._connections.pop(cast(asyncio.BaseTransport, self._transport), None)
        self._guard.table.release(self._slot)
        self._inner.connection_lost(exc)
        self._guard._closed()

    def cancel_when_gone(self, task: asyncio.Task[Any]) -> None:
        """Cancel `task` if this connection closes before it ends."""
        self._cancel_on_loss.add(task)
        task.add_done_callback(self._cancel_on_loss.discard)

    # --- deadlines -------------------------------------------------------------------------

    def request_started(self, request: web.Request) -> Callable[[object], None]:
        """The request's head arrived (aiohttp's request): `request_began`, its body's end seen
        through aiohttp's stream; the done callback for the request's task."""
        content = request.content
        if request.body_exists and not content.is_eof():
            content.on_eof(self.body_arrived)
            done = self.request_began(request.content_length, content.is_eof)
        else:
            done = self.request_began(None, lambda: True)
        return lambda _task: done()

    def request_began(self, body_bytes: int | None, body_in: Callable[[], bool]) -> Callable[[], None]:
        """A request's head arrived: stop the head deadline and, if its body is still to come
        (`body_bytes`: its length, None if unknown or none is), start the body's deadline, at
        which `body_in()` says whether it all came; `body_arrived` when it has. Returns the
        request's `done`: its answer is written."""
        assert self._slot is not None
        slot = self._slot
        self._active += 1
        self._cancel_head_timer()
        body_timer: asyncio.TimerHandle | None = None
        if not body_in():
            # Until its body is in, the connection waits for its client: evictable after the idle.
            self._guard.table.receiving(slot)
            size = API_BODY_UNKNOWN_BYTES if body_bytes is None else body_bytes
            timeout_s = self._guard.body_timeout_s + size / self._guard.body_rate_min_bytes_per_s
            body_timer = asyncio.get_running_loop().call_later(timeout_s, self._body_deadline, body_in)
        else:
            self._guard.table.served(slot)

        def done() -> None:
            if body_timer is not None:
                body_timer.cancel()
            self._active -= 1
            if self._active == 0 and self._slot is not None and not self._slot.released:
                self._guard.table.waiting(self._slot)
                self._expect_head()

        return done

    def body_arrived(self) -> None:
        """The body of the request `request_began` was told of has all arrived."""
        if self._slot is not None:
            self._guard.table.served(self._slot)

    def _expect_head(self) -> None:
        self._cancel_head_timer()
        self._head_timer = asyncio.get_running_loop().call_later(
            self._guard.head_timeout_s, self._head_deadline
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self) -> None:
        self._head_timer = None
        self._guard.counters["api_head_timeout"] += 1
        self._abort()

    def _body_deadline(self, body_in: Callable[[], bool]) -> None:
        if not body_in():
            self._guard.counters["api_body_timeout"] += 1
            self._abort()

    def _abort(self) -> None:
        # abort, not close: nothing worth flushing to a client that stalls, and the buffers go now.
        if self._transport is not None:
            self._transport.abort()
