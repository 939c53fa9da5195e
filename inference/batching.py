"""When a model's queued requests are run, and how many at once: the dynamic batcher's policy.

A model with a batch dimension may ask, in its manifest, for `batching: {max_batch: 8,
max_delay_ms: 2}`. As Triton's dynamic batcher does, requests then wait in the model's
queue (inference/requestqueue.py) until either `max_batch` of them are there or the
oldest has waited `max_delay_ms`, and run as one batch (one `session.run` over inputs
joined along the batch dimension). A critical request never waits for company: the
batch is formed at once with whatever is queued. Without `batching` (or with
`max_batch: 1`) every request runs on its own as soon as a worker is free.

`decide` is pure: given the clock and the queue it answers run n now, wake up at t, or
idle; the driver acts and asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from inference.requestqueue import Priority, RequestQueue

T = TypeVar("T")
MAX_BATCH_LIMIT = 1024
MAX_DELAY_LIMIT_MS = 10_000


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """`max_batch` requests at most in one run; wait at most `max_delay_s` to fill one."""

    max_batch: int = 1
    max_delay_s: float = 0.0


NO_BATCHING = BatchPolicy()


class BatchingError(ValueError):
    """A `batching` section that is not valid; the message names the field and the fix."""


def policy_from_doc(doc: Any) -> BatchPolicy:
    """A manifest's `batching` section (None: no batching)."""
    if doc is None:
        return NO_BATCHING
    if not isinstance(doc, dict) or sorted(doc) not in (["max_batch"], ["max_batch", "max_delay_ms"]):
        raise BatchingError("batching: must be {max_batch: N, max_delay_ms: M} (max_delay_ms optional)")
    max_batch, delay_ms = doc["max_batch"], doc.get("max_delay_ms", 0)
    if type(max_batch) is not int or not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise BatchingError(f"batching.max_batch: must be an integer 1..{MAX_BATCH_LIMIT}")
    if type(delay_ms) not in (int, float) or not 0 <= delay_ms <= MAX_DELAY_LIMIT_MS:
        raise BatchingError(f"batching.max_delay_ms: must be a number 0..{MAX_DELAY_LIMIT_MS}")
    return BatchPolicy(max_batch, delay_ms / 1000)


@dataclass(frozen=True, slots=True)
class RunNow:
    """Take `count` requests from the queue and run them as one batch."""

    count: int


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing to run yet; decide again at `deadline_s` (or when a request arrives)."""

    deadline_s: float


@dataclass(frozen=True, slots=True)
class Idle:
    """The queue is empty."""


Decision = RunNow | WaitUntil | Idle


def decide(policy: BatchPolicy, now_s: float, queue: RequestQueue[T]) -> Decision:
    """What a free worker does now with `queue` under `policy`."""
    queued = len(queue)
    oldest_s = queue.oldest_enqueued_s()
    head = queue.head()
    if oldest_s is None or head is None:
        return Idle()
    count = min(queued, policy.max_batch)
    if queued >= policy.max_batch or head.priority is Priority.CRITICAL:
        return RunNow(count)
    deadline_s = oldest_s + policy.max_delay_s
    if now_s >= deadline_s:
        return RunNow(count)
    return WaitUntil(deadline_s)
