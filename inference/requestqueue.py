"""A model's bounded request queue with priorities (sans-IO): who is served next, who is refused.

Every request carries a priority: `critical`, `normal` (the default) or `bulk`. The queue
hands out the highest priority first and, within one priority, the oldest first (FIFO).
It holds at most `capacity` requests; when it is full, an arriving request displaces the
newest queued request of a lower priority (that one is refused instead), so a flood of
bulk work never keeps a critical request out; an arriving request nothing can make room
for is refused. A refusal carries a retry-after estimate from the queue's length and the
moving average of the service time the driver reports, so clients back off by about the
time the queue needs to drain (HTTP 429 with Retry-After, never a hang).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")
SERVICE_WEIGHT_NEW = 0.2  # each measurement's share in the moving average of the service time
RETRY_AFTER_MIN_S = 1.0  # HTTP's Retry-After counts whole seconds
RETRY_AFTER_MAX_S = 60.0


class Priority(IntEnum):
    """Lower values are served first."""

    CRITICAL = 0
    NORMAL = 1
    BULK = 2


PRIORITY_HEADER = "Murmur-Priority"
_BY_NAME = {p.name.lower(): p for p in Priority}


def parse_priority(value: Any) -> Priority:
    """A priority from a request's `parameters.priority` or header (None: normal)."""
    if value is None:
        return Priority.NORMAL
    if isinstance(value, str) and value.strip().lower() in _BY_NAME:
        return _BY_NAME[value.strip().lower()]
    shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
    raise ValueError(f"priority {shown} is not one of {', '.join(_BY_NAME)}")


@dataclass(frozen=True, slots=True)
class Queued(Generic[T]):
    """A request in the queue, with when it arrived (the driver's clock, seconds)."""

    item: T
    priority: Priority
    enqueued_s: float


@dataclass(frozen=True, slots=True)
class Refused(Generic[T]):
    """A request the queue cannot hold: answer 429 with Retry-After `retry_after_s`."""

    item: T
    retry_after_s: float
    reason: str


class RequestQueue(Generic[T]):
    """Requests waiting for one model's replica on this node (bounded)."""

    def __init__(self, capacity: int, service_s: float = 0.01, workers: int = 1) -> None:
        if capacity < 1 or workers < 1 or not service_s > 0:
            raise ValueError("a request queue needs capacity >= 1, workers >= 1 and service_s > 0")
        self._capacity = capacity
        self._workers = workers
        self._service_s = service_s
        self._lanes: dict[Priority, deque[Queued[T]]] = {p: deque() for p in Priority}

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    @property
    def capacity(self) -> int:
        return self._capacity

    def offer(self, now_s: float, item: T, priority: Priority = Priority.NORMAL) -> Refused[T] | None:
        """Queue `item`; the request refused to make room (maybe `item` itself), or None."""
        displaced: Refused[T] | None = None
        if len(self) >= self._capacity:
            victim = next(
                (self._lanes[p] for p in reversed(Priority) if p > priority and self._lanes[p]), None
            )
            if victim is None:
                return Refused(item, self.retry_after_s(), f"the queue holds {self._capacity} requests")
            # The newest of the lowest priority has waited least, so refusing it wastes least.
            dropped = victim.pop()
            displaced = Refused(
                dropped.item,
                self.retry_after_s(),
                f"displaced by a {priority.name.lower()} request from a full queue",
            )
        self._lanes[priority].append(Queued(item, priority, now_s))
        return displaced

    def take(self, count_max: int = 1) -> list[Queued[T]]:
        """Up to `count_max` requests in service order: highest priority first, FIFO within one."""
        taken: list[Queued[T]] = []
        for priority in Priority:
            lane = self._lanes[priority]
            while lane and len(taken) < count_max:
                taken.append(lane.popleft())
        return taken

    def head(self) -> Queued[T] | None:
        """The request `take` would hand out next."""
        return next((lane[0] for lane in self._lanes.values() if lane), None)

    def oldest_enqueued_s(self) -> float | None:
        """When the longest-waiting request arrived (None if the queue is empty)."""
        return min((lane[0].enqueued_s for lane in self._lanes.values() if lane), default=None)

    def remove(self, item: T) -> bool:
        """Drop a queued request whose client went away; whether it was queued."""
        for lane in self._lanes.values():
            for queued in lane:
                if queued.item is item:
                    lane.remove(queued)
                    return True
        return False

    def served(self, duration_s: float, items: int = 1) -> None:
        """The driver served `items` requests (one batch) in `duration_s`: feeds the estimate."""
        if items < 1 or not math.isfinite(duration_s) or duration_s < 0:
            return
        per_item_s = duration_s / items
        self._service_s = (1 - SERVICE_WEIGHT_NEW) * self._service_s + SERVICE_WEIGHT_NEW * per_item_s

    def retry_after_s(self) -> float:
        """About how long the queued requests take to drain, in whole seconds within bounds."""
        drain_s = len(self) * self._service_s / self._workers
        return float(min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(drain_s))))
