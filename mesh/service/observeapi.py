"""The API's observability endpoints: `GET /v1/events`, the Server-Sent Events stream
`GET /v1/events/stream`, and `GET /metrics` (Prometheus text format).

Events are this node's own (mesh/service/events.py). The stream sends every event as
one SSE message whose `id:` is the event's sequence number, so a reader that
reconnects with `Last-Event-ID` gets what it missed (as long as the log still holds
it). The stream is bounded three ways: at most STREAMS_MAX open at once (then 503),
a reader that falls SUBSCRIPTION_QUEUE_MAX events behind or does not take a write
within WRITE_TIMEOUT_S is cut off (its connection closed, counted), and a comment
line every HEARTBEAT_S keeps proxies from closing an idle stream and shows a dead
reader. docs/api.md and docs/observability.md describe both for their users.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from mesh.service.eventkinds import KINDS
from mesh.service.events import SUBSCRIPTION_QUEUE_MAX, EventLog, LoggedEvent, Subscription

STREAMS_MAX = 16
HEARTBEAT_S = 15.0
WRITE_TIMEOUT_S = 10.0
RETRY_MS = 3000  # what an EventSource waits before it reconnects
LIMIT_DEFAULT = 1000
KINDS_PER_QUERY_MAX = len(KINDS)
PARAM_MAX_CHARS = 1024
# The classic text format (what generate_latest writes), which every Prometheus version reads;
# prometheus_client's CONTENT_TYPE_LATEST now names version 1.0.0, which Prometheus 2 predates.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EventStreams:
    """The open streams of one API: their cap, their counters, and their end at shutdown."""

    def __init__(
        self,
        log: EventLog,
        region: str,
        *,
        streams_max: int = STREAMS_MAX,
        heartbeat_s: float = HEARTBEAT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        queue_max: int = SUBSCRIPTION_QUEUE_MAX,
    ) -> None:
        self.log = log
        self.region = region
        self.streams_max = streams_max
        self.heartbeat_s = heartbeat_s
        self.write_timeout_s = write_timeout_s
        self.queue_max = queue_max
        self.open: list[Subscription] = []
        self.closing = False
        # stream_opened, stream_refused_full, stream_dropped_slow, stream_client_gone, ...
        self.counters: collections.Counter[str] = collections.Counter()

    async def close_all(self, _app: web.Application | None = None) -> None:
        """End every stream (the API is shutting down): their handlers return at once."""
        self.closing = True
        for subscription in self.open:
            subscription.wakeup.set()


STREAMS = web.AppKey("event_streams", EventStreams)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


class BadQuery(Exception):
    """A query parameter that cannot be used; the message says what to send instead."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def parse_time_ms(text: str) -> int:
    """`since`: Unix milliseconds, or an ISO 8601 time (`2026-05-01T10:00:00Z`; no zone is UTC)."""
    text = text.strip()
    if len(text) > 64:
        raise BadQuery("since: too long; give Unix milliseconds or an ISO 8601 time")
    if text.isdigit():
        value = int(text)
        if value > 10**15:
            raise BadQuery("since: too large for Unix milliseconds")
        return value
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadQuery(
            f"since: {text!r} is neither Unix milliseconds nor an ISO 8601 time such as 2026-05-01T10:00:00Z"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return int(stamp.timestamp() * 1000)


def _int_param(name: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or len(text) > 20 or not low <= int(text) <= high:
        raise BadQuery(f"{name}: give a whole number from {low} to {high}")
    return int(text)


def parse_kinds(values: Iterable[str]) -> list[str]:
    """`kind=a,b&kind=c`: every kind named must be one the node records."""
    kinds: list[str] = []
    for value in values:
        for kind in value.split(","):
            kind = kind.strip()
            if not kind:
                continue
            if kind not in KINDS:
                raise BadQuery(f"kind: unknown kind {kind[:64]!r}; kinds: {', '.join(KINDS)}")
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def _query(request: web.Request) -> dict[str, Any]:
    """The common parameters of both event endpoints; BadQuery if one is not usable."""
    query = request.query
    for key, value in query.items():
        if len(value) > PARAM_MAX_CHARS:
            raise BadQuery(f"{key}: over {PARAM_MAX_CHARS} characters")
    parsed: dict[str, Any] = {"kinds": parse_kinds(query.getall("kind", []))}
    if "since" in query:
        parsed["since_unix_ms"] = parse_time_ms(query["since"])
    return parsed


async def get_events(request: web.Request) -> web.Response:
    streams = request.app[STREAMS]
    log = streams.log
    try:
        parsed = _query(request)
        query = request.query
        limit = _int_param("limit", query["limit"], 1, log.max_events) if "limit" in query else LIMIT_DEFAULT
        if "after" in query:
            parsed["after_seq"] = _int_param("after", query["after"], 0, 2**63)
    except BadQuery as exc:
        return _error(400, str(exc))
    events = log.query(limit=limit, **parsed)
    return web.json_response(
        {
            "node_id": log.node_id,
            "region": streams.region,
            "last_seq": log.last_seq,
            "max_events": log.max_events,
            "max_age_s": log.max_age_s,
            "events": [e.to_json() for e in events],
        }
    )


def sse_message(event: LoggedEvent) -> bytes:
    """One event as an SSE message: `id:` its sequence number, `data:` its JSON on one line."""
    data = json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=True)
    return f"id: {event.seq}\ndata: {data}\n\n".encode("ascii")


def _last_event_id(request: web.Request) -> int | None:
    """Where a reconnecting reader left off: the Last-Event-ID header (what EventSource sends)
    or `last_event_id` in the query (for a first connection that resumes)."""
    text = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    if text is None or not text.strip():
        return None
    return _int_param("Last-Event-ID", text.strip(), 0, 2**63)


def _backlog(
    log: EventLog, last_id: int | None, since_ms: int | None, kinds: Sequence[str]
) -> list[LoggedEvent]:
    """What a new stream sends before live events: after `last_id` (all held, if that id is above
    the newest: it is from before this node restarted), else since `since_ms`, else nothing."""
    if last_id is not None:
        after = last_id if last_id <= log.last_seq else 0
        return log.query(after_seq=after, kinds=kinds, limit=log.max_events)
    if since_ms is not None:
        return log.query(since_unix_ms=since_ms, kinds=kinds, limit=log.max_events)
    return []


async def get_event_stream(request: web.Request) -> web.StreamResponse:
    streams = request.app[STREAMS]
    try:
        parsed = _query(request)
        last_id = _last_event_id(request)
    except BadQuery as exc:
        return _error(400, str(exc))
    if len(streams.open) >= streams.streams_max or streams.closing:
        streams.counters["stream_refused_full"] += 1
        return _error(
            503,
            f"this node already serves {streams.streams_max} event streams; close one, retry shortly, "
            "or poll GET /v1/events",
            {"Retry-After": "5"},
        )
    kinds: list[str] = parsed["kinds"]
    wanted = frozenset(kinds)
    subscription = streams.log.subscribe(streams.queue_max)  # before the backlog: no gap between
    streams.open.append(subscription)
    streams.counters["stream_opened"] += 1
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
        }
    )
    try:
        await response.prepare(request)
        sent_seq = 0
        backlog = _backlog(streams.log, last_id, parsed.get("since_unix_ms"), kinds)
        if not await _write(
            streams, request, response, f"retry: {RETRY_MS}\n: murmur events of {streams.log.node_id}\n\n"
        ):
            return response
        for event in backlog:
            if not await _write(streams, request, response, sse_message(event)):
                return response
            sent_seq = event.seq
        while not streams.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.wakeup.wait(), streams.heartbeat_s)
            if streams.closing:
                break
            if subscription.overflowed:
                _cut_off(streams, request, "stream_dropped_slow")
                return response
            events = subscription.take()
            if not events:
                if not await _write(streams, request, response, b": heartbeat\n\n"):
                    return response
                continue
            for event in events:
                if event.seq <= sent_seq or (wanted and event.kind not in wanted):
                    continue
                if not await _write(streams, request, response, sse_message(event)):
                    return response
                sent_seq = event.seq
        streams.counters["stream_closed_shutdown"] += 1
        return response
    finally:
        streams.log.unsubscribe(subscription)
        streams.open.remove(subscription)


async def _write(
    streams: EventStreams, request: web.Request, response: web.StreamResponse, data: bytes | str
) -> bool:
    """Write to a stream; False (the stream is over, counted) if the reader is gone or too slow."""
    payload = data.encode("ascii") if isinstance(data, str) else data
    try:
        await asyncio.wait_for(response.write(payload), streams.write_timeout_s)
    except TimeoutError:
        _cut_off(streams, request, "stream_dropped_slow")
        return False
    except (ConnectionError, RuntimeError):
        # RuntimeError: aiohttp's "cannot write to closing transport".
        streams.counters["stream_client_gone"] += 1
        return False
    return True


def _cut_off(streams: EventStreams, request: web.Request, reason: str) -> None:
    """End a reader's stream now, without flushing what it did not read: nothing more is buffered."""
    streams.counters[reason] += 1
    if request.transport is not None:
        request.transport.abort()


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def add_routes(app: web.Application, streams: EventStreams, registry: CollectorRegistry) -> None:
    """Serve GET /v1/events, GET /v1/events/stream and GET /metrics on `app`."""
    app[STREAMS] = streams
    app[REGISTRY] = registry
    app.on_shutdown.append(streams.close_all)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/events/stream", get_event_stream)
    app.router.add_get("/metrics", get_metrics)
