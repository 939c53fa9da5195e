"""This node's event log: what it saw happen, kept in memory for `GET /v1/events`, its
Server-Sent Events stream and `murmur events`.

Events are per node: each node records what it sees (a member's death, a command it
accepted), and nothing is gossiped; an operator reads any node of the region. The log
is bounded twice: at most `max_events` (a ring buffer) and none older than `max_age_s`.
Every event gets the next sequence number, so a reader resumes after the last one it
saw. A live reader holds a Subscription, a queue of at most `queue_max` events: a
reader that falls that far behind is cut off (`overflowed`) rather than buffered
without bound. mesh/service/eventkinds.py says which core events become which kinds.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

EVENTS_MAX = 10_000
EVENTS_MAX_AGE_S = 24 * 3600.0
SUBSCRIPTION_QUEUE_MAX = 1024  # events a live reader may fall behind before it is cut off
TEXT_MAX_CHARS = 512  # a subject or reason longer than this (a peer's text) is cut

Detail = tuple[str, str | int | bool]


def iso_utc(unix_ms: int) -> str:
    """`2026-05-01T10:00:00.123Z`: an instant in ISO 8601, UTC, to the millisecond."""
    seconds, ms = divmod(unix_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_MAX_CHARS else text[: TEXT_MAX_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class Observation:
    """Something this node saw: what kind, about whom or what (`subject`), and why."""

    kind: str
    subject: str
    reason: str
    details: tuple[Detail, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An observation as the log keeps it: numbered, timed and signed off by this node."""

    seq: int
    unix_ms: int
    node_id: str
    kind: str
    subject: str
    reason: str
    details: tuple[Detail, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The event as the API shows it (docs/observability.md)."""
        return {
            "seq": self.seq,
            "time": iso_utc(self.unix_ms),
            "unix_ms": self.unix_ms,
            "node": self.node_id,
            "kind": self.kind,
            "subject": self.subject,
            "reason": self.reason,
            "details": dict(self.details),
        }


class Subscription:
    """A live reader's queue of new events; `overflowed` once it fell `queue_max` behind."""

    def __init__(self, queue_max: int) -> None:
        self.queue_max = queue_max
        self.pending: collections.deque[LoggedEvent] = collections.deque()
        self.overflowed = False
        self.wakeup = asyncio.Event()

    def offer(self, event: LoggedEvent) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= self.queue_max:
            # Cut off, not buffered: the reader resumes with Last-Event-ID if it wants the rest.
            self.overflowed = True
            self.pending.clear()
        else:
            self.pending.append(event)
        self.wakeup.set()

    def take(self) -> list[LoggedEvent]:
        """Every event queued so far (oldest first); the queue is left empty."""
        events = list(self.pending)
        self.pending.clear()
        self.wakeup.clear()
        return events


class EventLog:
    """The bounded, numbered log of one node's events, and its live subscribers."""

    def __init__(
        self,
        node_id: str,
        *,
        max_events: int = EVENTS_MAX,
        max_age_s: float = EVENTS_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1 or not max_age_s > 0:
            raise ValueError("an event log keeps at least one event for a positive time")
        self.node_id = node_id
        self.max_events = max_events
        self.max_age_s = max_age_s
        self._clock = clock
        self._events: collections.deque[LoggedEvent] = collections.deque(maxlen=max_events)
        self._seq = 0
        self._subscribers: list[Subscription] = []
        # Every event ever recorded, by kind (GET /metrics: murmur_events_total).
        self.counts_by_kind: collections.Counter[str] = collections.Counter()

    def now_s(self) -> float:
        """The log's wall clock (Unix seconds)."""
        return self._clock()

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event recorded (0: none yet)."""
        return self._seq

    def record(self, observation: Observation) -> LoggedEvent:
        """Append `observation`, numbered and timed now; every subscriber is offered it."""
        self._seq += 1
        event = LoggedEvent(
            self._seq,
            int(self._clock() * 1000),
            self.node_id,
            observation.kind,
            _clip(observation.subject),
            _clip(observation.reason),
            observation.details,
        )
        self._events.append(event)  # the deque's maxlen drops the oldest
        self.counts_by_kind[event.kind] += 1
        self._expire(event.unix_ms)
        for subscriber in self._subscribers:
            subscriber.offer(event)
        return event

    def record_all(self, observations: Iterable[Observation]) -> None:
        for observation in observations:
            self.record(observation)

    def _expire(self, now_ms: int) -> None:
        oldest_ms = now_ms - int(self.max_age_s * 1000)
        while self._events and self._events[0].unix_ms < oldest_ms:
            self._events.popleft()

    def __len__(self) -> int:
        return len(self._events)

    def query(
        self,
        *,
        since_unix_ms: int | None = None,
        after_seq: int | None = None,
        kinds: Sequence[str] = (),
        limit: int = EVENTS_MAX,
    ) -> list[LoggedEvent]:
        """Held events that match, oldest first: at most `limit`, the oldest ones after `after_seq`
        when it is given (paging forward), else the newest ones."""
        self._expire(int(self._clock() * 1000))
        wanted = frozenset(kinds)
        matches = [
            e
            for e in self._events
            if (since_unix_ms is None or e.unix_ms >= since_unix_ms)
            and (after_seq is None or e.seq > after_seq)
            and (not wanted or e.kind in wanted)
        ]
        if limit <= 0:
            return []
        return matches[:limit] if after_seq is not None else matches[-limit:]

    def subscribe(self, queue_max: int = SUBSCRIPTION_QUEUE_MAX) -> Subscription:
        """A live reader's subscription; end it with `unsubscribe`."""
        subscription = Subscription(queue_max)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
