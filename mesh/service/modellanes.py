"""The queue in front of each model this node serves, and the inference threads that empty it.

One lane per model: requests wait in its bounded priority queue
(inference/requestqueue.py). The node's inference threads (`--inference-threads`, all
models together) take the next request themselves: the highest priority first, then the
oldest, across every lane, one at a time or, when the model's batching policy says so
(inference/batching.py), several joined along the batch dimension. A full queue refuses
at once (`QueueFull`, answered 429 with Retry-After), never a hang; a client that goes
away takes its request out of the queue.

Why the threads pull (docs/benchmarks.md, "Inference threads that pull"): when the event
loop handed each run to a thread pool and waited for it, every request cost a thread
wake-up and a loop wake-up, a thread went idle between runs until the loop came back to
it, and the loop spent a fifth of its time handing runs over. Now a thread that finishes
a run takes the next queued one at once, and is woken only when it had nothing to do;
results go back to the loop in one wake-up for all the runs that finished meanwhile.
The queues are shared with the threads under one lock; the loop holds it only to queue
or withdraw a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from inference.batching import NO_BATCHING, BatchPolicy, RunNow, WaitUntil, decide
from inference.requestqueue import Priority, RequestQueue
from inference.v2types import ModelMetadata

if TYPE_CHECKING:
    from inference.v2tensors import Array

log = logging.getLogger(__name__)
QUEUE_CAPACITY = 64  # requests waiting per model; at ~10 ms each that is well under a second


class ModelHost(Protocol):
    """What the inference API needs from the node's model runtime (the onnxruntime host)."""

    def metadata(self, name: str) -> ModelMetadata | None:
        """The model's inputs and outputs when it is loaded and ready here; None otherwise."""
        ...

    def run(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        """Run the model on `inputs`, on the calling (inference) thread; raises if the run fails."""
        ...


class QueueFull(Exception):
    """The model's queue cannot take the request now: retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class InferFailed(Exception):
    """The model host failed to run the request."""


@dataclass(eq=False, slots=True)
class _Job:
    inputs: dict[str, Array]
    priority: Priority
    done: asyncio.Future[dict[str, Array]]  # set on the event loop only


_Outcome = tuple[_Job, "dict[str, Array] | None", "Exception | None"]


class ModelLane:
    """One model's queue. Requests enter on the event loop (`submit`); the lanes' inference
    threads take them out."""

    def __init__(self, name: str, lanes: ModelLanes, policy: BatchPolicy, queue: RequestQueue[_Job]) -> None:
        self.name = name
        self.policy = policy  # ModelLanes sets it again when the serving version's differs
        self._lanes = lanes
        self.queue = queue  # guarded by the lanes' lock

    @property
    def waiting(self) -> int:
        """Requests in the queue now (not the ones running)."""
        return len(self.queue)

    async def submit(self, inputs: dict[str, Array], priority: Priority) -> dict[str, Array]:
        """The model's outputs for `inputs`; QueueFull or InferFailed."""
        job = _Job(inputs, priority, asyncio.get_running_loop().create_future())
        self._lanes.offer(self, job)
        try:
            return await job.done
        except asyncio.CancelledError:
            self._lanes.withdraw(self, job)  # still queued only if this client went away
            raise


class ModelLanes:
    """The lanes of the models this node serves (one per model, made on first use) and the
    inference threads that serve them all (started with the first lane)."""

    def __init__(
        self,
        host: ModelHost,
        policy_of: Callable[[str], BatchPolicy] = lambda _name: NO_BATCHING,
        capacity: int = QUEUE_CAPACITY,
        threads: int = 1,
    ) -> None:
        """threads: inferences run at once, all models together (the agent's --inference-threads)."""
        self._host = host
        self._policy_of = policy_of
        self._capacity = capacity
        self._thread_count = max(1, threads)
        self._lanes: dict[str, ModelLane] = {}  # changed on the loop under the lock
        self._lock = threading.Condition()  # the queues, `_running`, `_idle`, `_closed`
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work: only then does a new request wake one
        self._running: set[_Job] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: deque[_Outcome] = deque()  # appended by threads, emptied on the loop
        self._drain_scheduled = False

    # --- the event loop's side ----------------------------------------------------------------

    def lane(self, name: str) -> ModelLane:
        # Asked on every request: a new version of the model may batch differently.
        policy = self._policy_of(name)
        lane = self._lanes.get(name)
        if lane is None:
            self._start_threads()
            queue: RequestQueue[_Job] = RequestQueue(self._capacity, workers=self._thread_count)
            lane = ModelLane(name, self, policy, queue)
            with self._lock:
                self._lanes[name] = lane
        elif lane.policy != policy:
            lane.policy = policy  # one attribute: a thread reads the old or the new one
        return lane

    def queue_depths(self) -> dict[str, int]:
        """model -> requests waiting in its queue now (murmur_inference_queue_depth)."""
        return {name: lane.waiting for name, lane in self._lanes.items()}

    def offer(self, lane: ModelLane, job: _Job) -> None:
        """Queue `job` on `lane`; raises QueueFull if the queue refuses it, fails the request it
        displaced instead if that one is another."""
        with self._lock:
            if self._closed:
                raise InferFailed(f"model {lane.name!r}: this node is stopping")
            refused = lane.queue.offer(time.monotonic(), job, job.priority)
            if (refused is None or refused.item is not job) and self._idle:
                self._lock.notify()  # one waiting thread; a busy one takes it when it is done
        if refused is None:
            return
        fail = QueueFull(refused.retry_after_s, f"model {lane.name!r}: {refused.reason}")
        if refused.item is job:
            raise fail
        if not refused.item.done.done():
            refused.item.done.set_exception(fail)

    def withdraw(self, lane: ModelLane, job: _Job) -> None:
        with self._lock:
            lane.queue.remove(job)

    async def close(self) -> None:
        """Stop the threads (a run under way ends on its own) and cancel every request queued
        or running: none hangs."""
        with self._lock:
            self._closed = True
            jobs = [q.item for lane in self._lanes.values() for q in lane.queue.take(self._capacity)]
            jobs.extend(self._running)
            self._running.clear()
            self._lanes = {}
            self._lock.notify_all()
        for job in jobs:
            job.done.cancel()

    def _start_threads(self) -> None:
        if self._threads:
            return
        self._loop = asyncio.get_running_loop()
        for i in range(self._thread_count):
            thread = threading.Thread(target=self._serve_forever, name=f"murmur-infer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _deliver(self) -> None:
        """On the loop: hand every finished run's outputs (or error) to its waiting request,
        critical ones first: the requests woken here answer in this order."""
        self._drain_scheduled = False  # before emptying: a run finishing from now on schedules again
        finished = [self._finished.popleft() for _ in range(len(self._finished))]
        if len(finished) > 1:
            finished.sort(key=lambda outcome: outcome[0].priority)  # stable: oldest first within one
        for job, outputs, error in finished:
            if job.done.done():  # its client went away, or the lanes closed
                continue
            if error is not None:
                job.done.set_exception(error)
            else:
                job.done.set_result(outputs)  # type: ignore[arg-type]

    # --- the inference threads' side ------------------------------------------------------------

    def _serve_forever(self) -> None:
        while True:
            picked = self._next()
            if picked is None:
                return
            lane, jobs = picked
            started_s = time.monotonic()
            try:
                outcomes = self._run(lane, jobs)
            except Exception as exc:  # e.g. a batch's join out of memory: fail these, keep the thread
                log.exception("model %s: serving %d requests failed", lane.name, len(jobs))
                outcomes = [(job, None, InferFailed(f"model {lane.name!r}: {exc}")) for job in jobs]
            with self._lock:
                lane.queue.served(time.monotonic() - started_s, len(jobs))
                self._running.difference_update(jobs)
            self._post(outcomes)

    def _next(self) -> tuple[ModelLane, list[_Job]] | None:
        """Wait for the next run: the lane whose head request comes first (priority, then age)
        among those the batching policy lets run now. None once the lanes are closed."""
        with self._lock:
            while not self._closed:
                now_s = time.monotonic()
                best: tuple[tuple[int, float], ModelLane, int] | None = None
                wake_s: float | None = None
                for lane in self._lanes.values():
                    decision = decide(lane.policy, now_s, lane.queue)
                    if isinstance(decision, RunNow):
                        head = lane.queue.head()
                        assert head is not None
                        rank = (int(head.priority), head.enqueued_s)
                        if best is None or rank < best[0]:
                            best = (rank, lane, decision.count)
                    elif isinstance(decision, WaitUntil):
                        wake_s = decision.deadline_s if wake_s is None else min(wake_s, decision.deadline_s)
                if best is not None:
                    _rank, lane, count = best
                    jobs = [q.item for q in lane.queue.take(count)]
                    self._running.update(jobs)
                    return lane, jobs
                self._idle += 1
                self._lock.wait(None if wake_s is None else max(0.0, wake_s - now_s))
                self._idle -= 1
        return None

    def _run(self, lane: ModelLane, jobs: list[_Job]) -> list[_Outcome]:
        if len(jobs) > 1:
            joined = self._run_batch(lane.name, jobs)
            if joined is not None:
                return joined
        outcomes: list[_Outcome] = []
        for job in jobs:
            try:
                outcomes.append((job, self._host.run(lane.name, job.inputs), None))
            except Exception as exc:
                outcomes.append((job, None, InferFailed(f"model {lane.name!r} failed: {exc}")))
        return outcomes

    def _run_batch(self, name: str, jobs: list[_Job]) -> list[_Outcome] | None:
        """`jobs` as one batch; None if they cannot be joined or the batch failed (they then run
        one by one)."""
        # Imported with the first batch, whose requests' arrays have loaded numpy already: an
        # agent that serves no model never loads it (docs/benchmarks.md, footprint).
        from inference.batchtensors import batch_rows, join_batch, split_batch

        batch = join_batch([job.inputs for job in jobs])
        if batch is None:
            return None
        try:
            outputs = self._host.run(name, batch)
            parts = split_batch(outputs, [batch_rows(job.inputs) for job in jobs])
        except Exception as exc:
            log.warning("model %s: a batch of %d failed (%s); running them one by one", name, len(jobs), exc)
            return None
        return [(job, part, None) for job, part in zip(jobs, parts, strict=True)]

    def _post(self, outcomes: Iterable[_Outcome]) -> None:
        """Queue outcomes for the loop; wake it only if no wake-up is on its way already."""
        self._finished.extend(outcomes)
        if self._drain_scheduled or self._loop is None:
            return
        self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._deliver)
