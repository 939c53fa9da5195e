"""The model lanes' inference threads (mesh/service/modellanes.py): that many runs at once, the
rest queued in priority order across every model; one thread runs one at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np

from inference.batching import NO_BATCHING, BatchPolicy
from inference.requestqueue import Priority
from mesh.service.modellanes import InferFailed, ModelLanes, _Job
from tests.mesh.test_v2api import GATE_MAX_S, SCORER, FakeHost, ModelMetadata


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), value, np.float32)}


async def _until(check: Callable[[], bool], what: str) -> None:
    """Wait for the threads to reach a state (a functional bound, not a timing assertion)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_two_threads_run_two_requests_at_once_and_the_queue_keeps_its_order() -> None:
    gate = threading.Event()
    host = FakeHost(gate=gate)
    lanes = ModelLanes(host, threads=2)
    lane = lanes.lane("scorer")
    running = [asyncio.create_task(lane.submit(_row(v), Priority.NORMAL)) for v in (1, 2)]
    await _until(lambda: len(host.calls) == 2, "both in the host at once")
    queued = [asyncio.create_task(lane.submit(_row(v), Priority.BULK)) for v in (3, 4)]
    await _until(lambda: lane.waiting == 2, "two queued")
    critical = asyncio.create_task(lane.submit(_row(9), Priority.CRITICAL))
    await _until(lambda: lane.waiting == 3, "three queued")
    assert len(host.calls) == 2
    gate.set()
    results = await asyncio.gather(*running, *queued, critical)
    assert [float(r["score"][0]) for r in results] == [3.0, 6.0, 9.0, 12.0, 27.0]
    assert [float(c["x"][0, 0]) for c in host.calls][2] == 9  # the critical one first of the queued
    await lanes.close()


async def test_one_thread_runs_one_at_a_time() -> None:
    gate = threading.Event()
    host = FakeHost(gate=gate)
    lanes = ModelLanes(host)
    lane = lanes.lane("scorer")
    tasks = [asyncio.create_task(lane.submit(_row(v), Priority.NORMAL)) for v in (1, 2)]
    await _until(lambda: len(host.calls) == 1 and lane.waiting == 1, "one running, one queued")
    await asyncio.sleep(0.05)
    assert len(host.calls) == 1  # the second still waits for the only thread
    gate.set()
    await asyncio.gather(*tasks)
    await lanes.close()


class TwoModels(FakeHost):
    """TEST DOUBLE serving `scorer` and `other` (the same signature)."""

    def metadata(self, name: str) -> ModelMetadata | None:
        return SCORER if name in ("scorer", "other") else None


async def test_the_threads_serve_a_critical_request_of_another_model_before_older_bulk_ones() -> None:
    gate = threading.Event()
    host = TwoModels(gate=gate)
    lanes = ModelLanes(host, threads=1)
    scorer, other = lanes.lane("scorer"), lanes.lane("other")
    first = asyncio.create_task(scorer.submit(_row(0), Priority.NORMAL))
    await _until(lambda: len(host.calls) == 1, "the first running")
    bulk = [asyncio.create_task(scorer.submit(_row(v), Priority.BULK)) for v in (1, 2)]
    normal = asyncio.create_task(other.submit(_row(5), Priority.NORMAL))
    critical = asyncio.create_task(other.submit(_row(9), Priority.CRITICAL))
    await _until(lambda: scorer.waiting == 2 and other.waiting == 2, "four queued")
    gate.set()
    await asyncio.gather(first, *bulk, normal, critical)
    assert [float(c["x"][0, 0]) for c in host.calls] == [0, 9, 5, 1, 2]
    await lanes.close()


async def test_closing_the_lanes_cancels_what_runs_and_what_waits() -> None:
    gate = threading.Event()
    host = FakeHost(gate=gate)
    lanes = ModelLanes(host, threads=3)
    lane = lanes.lane("scorer")
    waiting = [asyncio.create_task(lane.submit(_row(v), Priority.NORMAL)) for v in range(5)]
    await _until(lambda: len(host.calls) == 3 and lane.waiting == 2, "three running, two queued")
    await lanes.close()
    gate.set()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(d, asyncio.CancelledError) for d in done)  # running and queued: none hangs


async def test_a_client_that_goes_away_takes_its_request_out_of_the_queue() -> None:
    gate = threading.Event()
    host = FakeHost(gate=gate)
    lanes = ModelLanes(host)
    lane = lanes.lane("scorer")
    running = asyncio.create_task(lane.submit(_row(1), Priority.NORMAL))
    gone = asyncio.create_task(lane.submit(_row(2), Priority.NORMAL))
    await _until(lambda: len(host.calls) == 1 and lane.waiting == 1, "one running, one queued")
    gone.cancel()
    await _until(lambda: lane.waiting == 0, "the departed request withdrawn")
    gate.set()
    assert float((await running)["score"][0]) == 3.0
    await asyncio.sleep(0.05)
    assert [float(c["x"][0, 0]) for c in host.calls] == [1]  # the departed one never ran
    await lanes.close()


async def test_many_requests_from_many_clients_each_get_their_own_answer() -> None:
    host = FakeHost()
    lanes = ModelLanes(host, threads=2)
    lane = lanes.lane("scorer")
    values = list(range(60))  # within the queue (64) with two running
    results = await asyncio.gather(*(lane.submit(_row(v), Priority.NORMAL) for v in values))
    assert [float(r["score"][0]) for r in results] == [3.0 * v for v in values]
    await lanes.close()


async def test_one_delivery_wakes_the_critical_requests_first() -> None:
    lanes = ModelLanes(FakeHost())
    loop = asyncio.get_running_loop()
    order = [Priority.BULK, Priority.NORMAL, Priority.CRITICAL, Priority.BULK, Priority.CRITICAL]
    jobs = [_Job(_row(i), p, loop.create_future()) for i, p in enumerate(order)]
    woken: list[tuple[Priority, int]] = []
    for i, job in enumerate(jobs):
        job.done.add_done_callback(lambda _f, p=job.priority, i=i: woken.append((p, i)))
    lanes._finished.extend((job, {"score": np.zeros(1, np.float32)}, None) for job in jobs)
    lanes._deliver()  # what runs finishing together hand back in one loop wake-up
    await asyncio.sleep(0)
    assert woken == [
        (Priority.CRITICAL, 2),
        (Priority.CRITICAL, 4),
        (Priority.NORMAL, 1),
        (Priority.BULK, 0),
        (Priority.BULK, 3),
    ]
    await lanes.close()


def _rows_too_many_to_join() -> dict[str, np.ndarray]:
    """A request whose rows cannot be joined with another's: two of them make an array over
    numpy's size limit, as a join of big requests on a small device runs out of memory."""
    return {"x": np.broadcast_to(np.float32(0), (2**60, 1))}


async def test_a_batch_whose_join_fails_fails_its_requests_and_the_thread_serves_on() -> None:
    batched = BatchPolicy(max_batch=2, max_delay_s=10.0)
    lanes = ModelLanes(TwoModels(), lambda name: batched if name == "scorer" else NO_BATCHING)
    scorer = lanes.lane("scorer")
    pair = [scorer.submit(_rows_too_many_to_join(), Priority.NORMAL) for _ in range(2)]
    failed = await asyncio.wait_for(asyncio.gather(*pair, return_exceptions=True), GATE_MAX_S)
    assert all(isinstance(f, InferFailed) for f in failed), failed
    after = await asyncio.wait_for(lanes.lane("other").submit(_row(1), Priority.NORMAL), GATE_MAX_S)
    assert float(after["score"][0]) == 3.0  # the node's only thread still serves
    await lanes.close()
