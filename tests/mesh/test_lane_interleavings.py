"""Random interleavings of submit, cancel, runs finishing and close on the model lanes
(mesh/service/modellanes.py) with real inference threads: no request hangs, each gets its
own answer or a clear refusal, and no more runs go on at once than there are threads."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.batching import NO_BATCHING, BatchPolicy
from inference.requestqueue import Priority
from mesh.service.modellanes import InferFailed, ModelLanes, QueueFull
from tests.mesh.test_v2api import GATE_MAX_S, SCORER, Array, FakeHost, ModelMetadata

MODELS = ("scorer", "other")
POLICIES = (NO_BATCHING, BatchPolicy(max_batch=3), BatchPolicy(max_batch=2, max_delay_s=0.002))


@dataclass
class TurnstileHost(FakeHost):
    """TEST DOUBLE serving both MODELS: each run waits for one permit the test gives."""

    permits: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    running: int = 0
    running_max: int = 0
    counting: threading.Lock = field(default_factory=threading.Lock)

    def metadata(self, name: str) -> ModelMetadata | None:
        return SCORER if name in MODELS else None

    def run(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        with self.counting:
            self.running += 1
            self.running_max = max(self.running_max, self.running)
        try:
            self.permits.acquire(timeout=GATE_MAX_S)
            return super().run(name, inputs)
        finally:
            with self.counting:
                self.running -= 1


_op = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(MODELS), st.sampled_from(list(Priority))),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("finish"), st.integers(1, 3)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("close")),
)


async def _scenario(ops: list[tuple[object, ...]], threads: int, capacity: int, policy: BatchPolicy) -> None:
    host = TurnstileHost()
    lanes = ModelLanes(host, lambda name: policy if name == "scorer" else NO_BATCHING, capacity, threads)
    tasks: list[tuple[float, asyncio.Task[dict[str, Array]]]] = []
    cancelled: set[int] = set()
    closed_at: int | None = None
    for op in ops:
        match op:
            case ("submit", str(model), Priority() as priority):
                value = float(len(tasks))
                row = {"x": np.full((1, 3), value, np.float32)}
                tasks.append((value, asyncio.create_task(lanes.lane(model).submit(row, priority))))
            case ("cancel", int(i)) if i < len(tasks):
                if tasks[i][1].cancel():
                    cancelled.add(i)
            case ("finish", int(n)):
                host.permits.release(n)
            case ("tick",):
                await asyncio.sleep(0.001)
            case ("close",) if closed_at is None:
                closed_at = len(tasks)
                await lanes.close()
        await asyncio.sleep(0)
    if closed_at is None:
        host.permits.release(1000)  # every run may finish now: every request must be answered
    pending = [task for _value, task in tasks]
    outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), GATE_MAX_S)
    for i, ((value, _task), outcome) in enumerate(zip(tasks, outcomes, strict=True)):
        if isinstance(outcome, dict):
            assert float(outcome["score"][0]) == 3 * value, (i, outcome)  # its own answer
        elif isinstance(outcome, asyncio.CancelledError):
            assert i in cancelled or closed_at is not None, (i, "cancelled, but not by its client")
        elif isinstance(outcome, InferFailed):
            assert closed_at is not None and i >= closed_at, (i, outcome)  # only after close
        else:
            assert isinstance(outcome, QueueFull), (i, outcome)
    if closed_at is None:
        assert all(lanes.lane(m).waiting == 0 for m in MODELS)
        await lanes.close()
    host.permits.release(1000)  # runs still under way after close end
    assert host.running_max <= threads


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(_op, max_size=40),
    threads=st.integers(1, 3),
    capacity=st.integers(1, 4),
    policy=st.sampled_from(POLICIES),
)
def test_no_interleaving_of_submit_cancel_and_close_leaves_a_request_hanging(
    ops: list[tuple[object, ...]], threads: int, capacity: int, policy: BatchPolicy
) -> None:
    asyncio.run(_scenario(ops, threads, capacity, policy))
