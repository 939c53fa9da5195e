"""How the agent wires the model host: a failed replica's event carries the host's error, a
dropped replica is unloaded, and the debug hook refuses a malformed request."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inference.assignments import ReplicaState
from inference.placing_ports import ReplicaDropped, ReplicaStateChanged
from mesh.service.eventkinds import EventRecorder
from mesh.service.events import EventLog
from mesh.service.modeldebug import add_routes
from mesh.service.modelhost import ModelHost
from mesh.service.modellanes import ModelLanes
from mesh.service.placements import unload_dropped
from mesh.service.servedmodels import ServedModels


def test_the_replica_failed_event_carries_the_error_and_other_states_do_not() -> None:
    log = EventLog("me")
    errors = {"cam": "load failed: InvalidProtobuf: broken"}
    recorder = EventRecorder(log, replica_error=errors.get)
    recorder.on_event(ReplicaStateChanged("cam", 0, ReplicaState.FAILED))
    recorder.on_event(ReplicaStateChanged("cam", 0, ReplicaState.READY))
    recorder.on_event(ReplicaStateChanged("other", 1, ReplicaState.FAILED))
    failed, ready, other = log.query()
    assert failed.kind == "replica_failed"
    assert failed.reason == "replica cam/0 is failed: load failed: InvalidProtobuf: broken"
    assert ("error", "load failed: InvalidProtobuf: broken") in failed.details
    assert ready.reason == "replica cam/0 is ready" and all(k != "error" for k, _ in ready.details)
    assert other.reason == "replica other/1 is failed"  # no error known: nothing invented


def test_a_dropped_replica_is_unloaded() -> None:
    dropped: list[str] = []

    class Host:
        def drop(self, name: str) -> None:
            dropped.append(name)

    on_event = unload_dropped(Host())  # type: ignore[arg-type]
    on_event(ReplicaStateChanged("cam", 0, ReplicaState.READY))
    on_event(ReplicaDropped("cam", 0))
    assert dropped == ["cam"]


async def test_the_debug_load_refuses_malformed_requests(tmp_path: Path) -> None:
    host = ModelHost(lambda sha256: None)
    lanes = ModelLanes(ServedModels(host))
    app = web.Application()
    add_routes(app, host, lanes)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for body in (
            b"not json",
            b"[]",
            b'{"deployment": "x", "duration_s": 0, "concurrency": 1}',
            b'{"deployment": "x", "duration_s": 1, "concurrency": 65}',
            b'{"deployment": "x", "duration_s": true, "concurrency": 1}',
            b'{"deployment": 5, "duration_s": 1, "concurrency": 1}',
        ):
            resp = await client.post("/v1/debug/infer-load", data=body)
            assert resp.status == 400, body
            assert "body must be JSON" in (await resp.json())["error"]
        resp = await client.post(
            "/v1/debug/infer-load", json={"deployment": "x", "duration_s": 0.2, "concurrency": 2}
        )
        assert resp.status == 202
        again = await client.post(
            "/v1/debug/infer-load", json={"deployment": "x", "duration_s": 0.2, "concurrency": 2}
        )
        assert again.status == 409
    await lanes.close()
    await host.close()
