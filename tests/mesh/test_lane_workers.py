"""A model's lane with several workers (mesh/service/modellanes.py): that many runs at once, the
rest queued in priority order; one worker is the lane as before."""

from __future__ import annotations

import asyncio

import numpy as np

from inference.requestqueue import Priority
from mesh.service.modellanes import ModelLanes
from tests.mesh.test_v2api import FakeHost


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), value, np.float32)}


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_two_workers_run_two_requests_at_once_and_the_queue_keeps_its_order() -> None:
    gate = asyncio.Event()
    host = FakeHost(gate=gate)
    lanes = ModelLanes(host, workers=2)
    lane = lanes.lane("scorer")
    running = [asyncio.create_task(lane.submit(_row(v), Priority.NORMAL)) for v in (1, 2)]
    await _settle()
    assert [float(c["x"][0, 0]) for c in host.calls] == [1, 2]  # both in the host at once
    queued = [asyncio.create_task(lane.submit(_row(v), Priority.BULK)) for v in (3, 4)]
    await _settle()
    critical = asyncio.create_task(lane.submit(_row(9), Priority.CRITICAL))
    await _settle()
    assert lane.waiting == 3 and len(host.calls) == 2
    gate.set()
    results = await asyncio.gather(*running, *queued, critical)
    assert [float(r["score"][0]) for r in results] == [3.0, 6.0, 9.0, 12.0, 27.0]
    assert [float(c["x"][0, 0]) for c in host.calls][2] == 9  # the critical one first of the queued
    await lanes.close()


async def test_one_worker_runs_one_at_a_time() -> None:
    gate = asyncio.Event()
    host = FakeHost(gate=gate)
    lanes = ModelLanes(host)
    lane = lanes.lane("scorer")
    tasks = [asyncio.create_task(lane.submit(_row(v), Priority.NORMAL)) for v in (1, 2)]
    await _settle()
    assert len(host.calls) == 1 and lane.waiting == 1
    gate.set()
    await asyncio.gather(*tasks)
    await lanes.close()


async def test_closing_a_lane_with_workers_cancels_what_waits() -> None:
    gate = asyncio.Event()
    lanes = ModelLanes(FakeHost(gate=gate), workers=3)
    lane = lanes.lane("scorer")
    waiting = [asyncio.create_task(lane.submit(_row(v), Priority.NORMAL)) for v in range(5)]
    await _settle()
    await lanes.close()
    gate.set()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(d, asyncio.CancelledError) for d in done)  # running and queued: none hangs
