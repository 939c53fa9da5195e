"""The queue in front of each model this node serves, and the task that empties it.

One lane per model: requests wait in its bounded priority queue
(inference/requestqueue.py) and one worker runs them on the model host, one at a time
or, when the model's batching policy says so (inference/batching.py), several at once
joined along the batch dimension. A full queue refuses at once (`QueueFull`, answered
429 with Retry-After), never a hang; a client that goes away takes its request out of
the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from inference.batching import NO_BATCHING, BatchPolicy, Idle, RunNow, WaitUntil, decide
from inference.requestqueue import Priority, Queued, RequestQueue
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

    async def infer(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        """Run the model on `inputs` (off the event loop); raises if the run fails."""
        ...


class QueueFull(Exception):
    """The model's queue cannot take the request now: retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class InferFailed(Exception):
    """The model host failed to run the request."""


@dataclass(eq=False)
class _Job:
    inputs: dict[str, Array]
    done: asyncio.Future[dict[str, Array]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ModelLane:
    """One model's queue and its workers: `workers` runs (or batches) of the model at once, each
    taking the queue's next request (highest priority, then oldest) when it is free."""

    def __init__(
        self, name: str, host: ModelHost, policy: BatchPolicy, capacity: int, workers: int = 1
    ) -> None:
        self.name = name
        self._host = host
        self.policy = policy  # ModelLanes sets it again when the serving version's differs
        self._queue: RequestQueue[_Job] = RequestQueue(capacity, workers=workers)
        self._wake = asyncio.Event()  # a hint that the queue changed; each worker reads the queue itself
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(), name=f"model lane {name} #{i}") for i in range(workers)]

    @property
    def waiting(self) -> int:
        """Requests in the queue now (not the ones running)."""
        return len(self._queue)

    async def submit(self, inputs: dict[str, Array], priority: Priority) -> dict[str, Array]:
        """The model's outputs for `inputs`; QueueFull or InferFailed."""
        job = _Job(inputs)
        refused = self._queue.offer(asyncio.get_running_loop().time(), job, priority)
        if refused is not None:
            fail = QueueFull(refused.retry_after_s, f"model {self.name!r}: {refused.reason}")
            if refused.item is job:
                raise fail
            refused.item.done.set_exception(fail)
        self._wake.set()
        try:
            return await job.done
        finally:
            self._queue.remove(job)  # still queued only if this client went away

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queued in self._queue.take(self._queue.capacity):
            queued.item.done.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            decision = decide(self.policy, loop.time(), self._queue)
            match decision:
                case Idle():
                    await self._wake.wait()
                    self._wake.clear()
                case WaitUntil(deadline_s=deadline_s):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), max(0.0, deadline_s - loop.time()))
                    self._wake.clear()
                case RunNow(count=count):
                    jobs = [q for q in self._queue.take(count) if not q.item.done.done()]
                    started_s = loop.time()
                    try:
                        await self._serve(jobs)
                    except asyncio.CancelledError:  # the lane closes: its running requests end too
                        for q in jobs:
                            q.item.done.cancel()
                        raise
                    except Exception as exc:  # a bug here must fail these requests, not stop the lane
                        log.exception("model %s: serving a batch failed", self.name)
                        for q in jobs:
                            if not q.item.done.done():
                                q.item.done.set_exception(InferFailed(f"model {self.name!r}: {exc}"))
                    self._queue.served(loop.time() - started_s, max(1, len(jobs)))

    async def _serve(self, jobs: list[Queued[_Job]]) -> None:
        if len(jobs) > 1 and await self._serve_batch(jobs):
            return
        for q in jobs:
            try:
                result = await self._host.infer(self.name, q.item.inputs)
            except Exception as exc:
                if not q.item.done.done():
                    q.item.done.set_exception(InferFailed(f"model {self.name!r} failed: {exc}"))
                continue
            if not q.item.done.done():
                q.item.done.set_result(result)

    async def _serve_batch(self, jobs: list[Queued[_Job]]) -> bool:
        """Run `jobs` as one batch; False if they cannot be joined or the batch failed (the
        caller then runs them one by one)."""
        # Imported with the first batch, whose requests' arrays have loaded numpy already: an
        # agent that serves no model never loads it (docs/benchmarks.md, footprint).
        from inference.batchtensors import batch_rows, join_batch, split_batch

        batch = join_batch([q.item.inputs for q in jobs])
        if batch is None:
            return False
        try:
            outputs = await self._host.infer(self.name, batch)
            parts = split_batch(outputs, [batch_rows(q.item.inputs) for q in jobs])
        except Exception as exc:
            log.warning(
                "model %s: a batch of %d failed (%s); running them one by one", self.name, len(jobs), exc
            )
            return False
        for q, part in zip(jobs, parts, strict=True):
            if not q.item.done.done():
                q.item.done.set_result(part)
        return True


class ModelLanes:
    """The lanes of the models this node serves, made on first use (one per model the host has)."""

    def __init__(
        self,
        host: ModelHost,
        policy_of: Callable[[str], BatchPolicy] = lambda _name: NO_BATCHING,
        capacity: int = QUEUE_CAPACITY,
        workers: int = 1,
    ) -> None:
        """workers: runs of one model at once (the agent: its --inference-threads, the runs the
        model host makes at once for all models together)."""
        self._host = host
        self._policy_of = policy_of
        self._capacity = capacity
        self._workers = max(1, workers)
        self._lanes: dict[str, ModelLane] = {}

    def lane(self, name: str) -> ModelLane:
        # Asked on every request: a new version of the model may batch differently.
        policy = self._policy_of(name)
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = ModelLane(name, self._host, policy, self._capacity, self._workers)
        elif lane.policy != policy:
            lane.policy = policy
        return lane

    def queue_depths(self) -> dict[str, int]:
        """model -> requests waiting in its queue now (murmur_inference_queue_depth)."""
        return {name: lane.waiting for name, lane in self._lanes.items()}

    async def close(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            await lane.close()
