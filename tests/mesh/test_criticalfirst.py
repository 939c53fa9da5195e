"""Other inference requests give way to critical ones being served (mesh/service/criticalfirst.py)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from inference.requestqueue import PRIORITY_HEADER
from mesh.service.criticalfirst import GIVE_WAY_MAX_S, CriticalFirst
from tests.mesh.test_v2api import FakeHost, Mesh, _infer, _json_body, _started


async def test_giving_way_costs_nothing_when_no_critical_request_is_served() -> None:
    first = CriticalFirst()
    await first.give_way()
    assert first.gave_way == 0


async def test_the_others_wait_until_the_last_critical_request_is_answered() -> None:
    first = CriticalFirst()
    order: list[str] = []

    async def other() -> None:
        await first.give_way()
        order.append("other")

    with first.serving(), first.serving():  # two critical requests at once
        waiting = asyncio.create_task(other())
        await asyncio.sleep(0)
        order.append("critical answered")
    await waiting
    assert order == ["critical answered", "other"] and first.gave_way == 1


async def test_a_critical_request_that_lasts_stops_nobody_for_long() -> None:
    first = CriticalFirst()
    loop = asyncio.get_running_loop()
    with first.serving():
        started = loop.time()
        await first.give_way()
        waited = loop.time() - started
    assert waited >= GIVE_WAY_MAX_S * 0.9  # it waited, and came back while the critical one still ran


async def test_a_request_served_while_a_critical_one_runs_gives_way_and_both_are_answered(mesh: Mesh) -> None:
    host = FakeHost(gate=threading.Event())
    client = await mesh.add("n1", host)
    critical = await _started(
        client, _json_body(np.full((1, 3), 9, np.float32)), {PRIORITY_HEADER: "critical"}
    )
    normal = await _started(client, _json_body(np.full((1, 3), 1, np.float32)))
    front = mesh.fronts["n1"]
    assert front.critical.gave_way == 1  # before decoding: the critical one is in the host
    assert host.gate is not None
    host.gate.set()
    (status_c, doc_c), (status_n, doc_n) = await asyncio.gather(critical, normal)
    assert (status_c, status_n) == (200, 200)
    assert doc_c["outputs"][0]["data"] == [27.0] and doc_n["outputs"][0]["data"] == [3.0]
    before = front.critical.gave_way
    status, _ = await _infer(client, _json_body(), {PRIORITY_HEADER: "bulk"})
    assert status == 200 and front.critical.gave_way == before  # nothing critical any more: no wait
