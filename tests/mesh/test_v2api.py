"""The /v2 inference API on test servers (loopback): local serving, forwarding with one retry,
priorities, a full queue, batching, the inference token and bad input.

The model host here is a TEST DOUBLE (`FakeHost`): pure numpy, no onnxruntime, standing in
for the onnxruntime model host (another branch) behind the `ModelHost` protocol.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inference.assignments import ReplicaState
from inference.batching import BatchPolicy
from inference.placing import ReplicaView
from inference.requestqueue import PRIORITY_HEADER
from inference.v2codec import RequestedOutput, encode_request, parse_response
from inference.v2tensors import Array
from inference.v2types import HEADER_LENGTH_HEADER, CodecLimits, ModelMetadata, TensorSpec
from mesh.cli.murmur import main as murmur_main
from mesh.service.modellanes import ModelLanes
from mesh.service.v2api import HOP_HEADER, InferenceFront, add_routes, read_token_file

GATE_MAX_S = 30.0  # a gated run never blocks its thread past the test

SCORER = ModelMetadata(
    "scorer",
    ("1",),
    "onnxruntime_onnx",
    (TensorSpec("x", "FP32", (-1, 3)),),
    (TensorSpec("score", "FP32", (-1,)),),
)


@dataclass
class FakeHost:
    """TEST DOUBLE for the onnxruntime model host: `score = x.sum(axis=1) * scale`."""

    serves: bool = True
    scale: float = 1.0
    gate: threading.Event | None = None  # when given, each run waits until it is set
    fail: bool = False
    calls: list[dict[str, Array]] = field(default_factory=list)

    def metadata(self, name: str) -> ModelMetadata | None:
        return SCORER if self.serves and name == "scorer" else None

    def run(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        self.calls.append(inputs)  # on the lanes' inference thread
        if self.gate is not None:
            self.gate.wait(GATE_MAX_S)
        if self.fail:
            raise RuntimeError("session.run failed: out of memory")
        return {"score": (inputs["x"].sum(axis=1) * self.scale).astype(np.float32)}


@dataclass(frozen=True)
class Member:
    region: str
    state: str
    api_addr: str


@dataclass
class Mesh:
    """Several nodes' /v2 APIs on loopback test servers, with a shared placement view."""

    replicas: list[ReplicaView] = field(default_factory=list)
    members: dict[str, Member] = field(default_factory=dict)
    clients: dict[str, TestClient[web.Request, web.Application]] = field(default_factory=dict)
    hops: list[tuple[str, str]] = field(default_factory=list)  # (node, the hop header it received)
    fronts: dict[str, InferenceFront] = field(default_factory=dict)

    async def add(
        self,
        node_id: str,
        host: FakeHost,
        *,
        region: str = "a",
        token: str | None = None,
        capacity: int = 8,
        policy: BatchPolicy | None = None,
        limits: CodecLimits | None = None,
    ) -> TestClient[web.Request, web.Application]:
        app = web.Application(client_max_size=64 * 1024)  # as the node's API app (its /v1 limit)

        @web.middleware
        async def record_hops(request: web.Request, handler: Callable[[web.Request], Any]) -> Any:
            if HOP_HEADER in request.headers:
                self.hops.append((node_id, request.headers[HOP_HEADER]))
            return await handler(request)

        app.middlewares.append(record_hops)
        lanes = ModelLanes(host, (lambda _n: policy) if policy else lambda _n: BatchPolicy(), capacity)
        front = InferenceFront(
            node_id, region, host, lambda: self.replicas, self.members.get, lanes, token=token
        )
        if limits is not None:
            front.limits = limits
        add_routes(app, front)
        self.fronts[node_id] = front
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        self.clients[node_id] = client
        self.members[node_id] = Member(region, "alive", f"127.0.0.1:{client.port}")
        if host.serves:
            self.replicas.append(ReplicaView("scorer", len(self.replicas), node_id, ReplicaState.READY))
        return client

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


X = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)


def _json_body(x: Array = X, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        **extra,
    }


async def _infer(
    client: TestClient[Any, Any], doc: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    resp = await client.post("/v2/models/scorer/infer", json=doc, headers=headers)
    return resp.status, await resp.json()


async def test_health_and_server_metadata(mesh: Mesh) -> None:
    client = await mesh.add("n1", FakeHost())
    for path, expected in [("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True})]:
        resp = await client.get(path)
        assert resp.status == 200 and await resp.json() == expected
    resp = await client.get("/v2")
    doc = await resp.json()
    assert doc["name"] == "murmuration" and "binary_tensor_data" in doc["extensions"]


async def test_model_metadata_and_readiness(mesh: Mesh) -> None:
    client = await mesh.add("n1", FakeHost())
    for path in ("/v2/models/scorer", "/v2/models/scorer/versions/1"):
        resp = await client.get(path)
        assert resp.status == 200 and await resp.json() == SCORER.to_json()
    resp = await client.get("/v2/models/scorer/versions/9")
    assert resp.status == 404 and "version '9' is not served" in (await resp.json())["error"]
    resp = await client.get("/v2/models/nope")
    assert resp.status == 404 and "model 'nope' is not deployed" in (await resp.json())["error"]
    assert (await client.get("/v2/models/scorer/ready")).status == 200
    assert (await client.get("/v2/models/nope/ready")).status == 404


async def test_a_json_request_is_served_locally_with_its_id_echoed(mesh: Mesh) -> None:
    client = await mesh.add("n1", FakeHost())
    status, doc = await _infer(client, _json_body(id="r1"))
    assert status == 200
    assert doc["model_name"] == "scorer" and doc["model_version"] == "1" and doc["id"] == "r1"
    assert doc["outputs"] == [{"name": "score", "shape": [2], "datatype": "FP32", "data": [6.0, 15.0]}]


async def test_binary_tensor_data_in_and_out_beyond_the_v1_body_limit(mesh: Mesh) -> None:
    client = await mesh.add("n1", FakeHost())
    x = np.arange(3 * 40_000, dtype=np.float32).reshape(-1, 3)  # 480 kB
    body, length = encode_request({"x": x}, binary=True, outputs=[RequestedOutput("score", binary=True)])
    assert length is not None
    resp = await client.post(
        "/v2/models/scorer/infer",
        data=body,
        headers={HEADER_LENGTH_HEADER: str(length), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 200
    out_length = int(resp.headers[HEADER_LENGTH_HEADER])
    response = parse_response(await resp.read(), out_length)
    assert response.outputs["score"].tolist() == x.sum(axis=1).tolist()


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_json_body(np.zeros((2, 4), np.float32)), "input 'x': shape [2, 4] does not fit"),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]},
            "input 'x': datatype INT32",
        ),
        ({"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}, "input 'y'"),
        (_json_body(parameters={"priority": "urgent"}), "priority 'urgent' is not one of"),
        ({"inputs": "nope"}, "inputs: must be a list"),
        (_json_body(outputs=[{"name": "nope"}]), "output 'nope'"),
    ],
)
async def test_bad_requests_get_400_naming_the_tensor(mesh: Mesh, doc: Any, needle: str) -> None:
    client = await mesh.add("n1", FakeHost())
    status, body = await _infer(client, doc)
    assert status == 400 and needle in body["error"]


async def test_bad_bodies_get_clear_errors(mesh: Mesh) -> None:
    client = await mesh.add("n1", FakeHost(), limits=CodecLimits(body_max_bytes=1000))
    resp = await client.post("/v2/models/scorer/infer", data=b"{")
    assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]
    resp = await client.post("/v2/models/scorer/infer", data=b" " * 2000)
    assert resp.status == 413 and "over the limit of 1000" in (await resp.json())["error"]
    resp = await client.post("/v2/models/scorer/infer", data=b"{}", headers={HEADER_LENGTH_HEADER: "99"})
    assert resp.status == 400 and HEADER_LENGTH_HEADER in (await resp.json())["error"]


async def test_a_body_shorter_than_its_content_length_is_dropped_and_the_node_keeps_serving(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    client = await mesh.add("n1", FakeHost())
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /v2/models/scorer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        b"Content-Type: application/json\r\n\r\n" + b'{"inputs": ['
    )
    await writer.drain()
    writer.write_eof()  # the client stops sending, still listening
    answer = await asyncio.wait_for(reader.read(), 10.0)
    writer.close()
    assert answer == b""  # the request is dropped with its connection, nothing half-answered
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    status, body = await _infer(client, _json_body())
    assert status == 200 and body["outputs"][0]["data"] == [6.0, 15.0]


async def test_a_failing_model_answers_500_with_the_reason(mesh: Mesh) -> None:
    client = await mesh.add("n1", FakeHost(fail=True))
    status, body = await _infer(client, _json_body())
    assert status == 500 and "out of memory" in body["error"]


async def test_a_node_without_a_replica_forwards_once_marked_and_returns_the_same_answer(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    replica = await mesh.add("n1", FakeHost())
    direct = await _infer(replica, _json_body(id="r"))
    through = await _infer(entry, _json_body(id="r"))
    assert through == direct
    assert mesh.hops == [("n1", "n0")]
    resp = await entry.get("/v2/models/scorer")
    assert resp.status == 200 and await resp.json() == SCORER.to_json()


async def test_a_failed_forward_is_retried_once_on_another_replica(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    await mesh.add("n2", FakeHost(scale=2.0))
    dead = await mesh.add("n1", FakeHost())
    await dead.close()  # n1 ranks first (node id) but its port no longer answers
    status, doc = await _infer(entry, _json_body())
    assert status == 200 and doc["outputs"][0]["data"] == [12.0, 30.0]


async def test_when_both_tries_fail_the_last_failure_is_answered(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    for node in ("n1", "n2", "n3"):
        await (await mesh.add(node, FakeHost())).close()
    status, doc = await _infer(entry, _json_body())
    assert status == 502 and "node n2" in doc["error"]


async def test_a_forwarded_request_is_never_forwarded_again(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    await mesh.add("n1", FakeHost())
    status, doc = await _infer(entry, _json_body(), headers={HOP_HEADER: "n9"})
    assert status == 503 and "never forwarded again" in doc["error"]
    assert mesh.hops == [("n0", "n9")]


async def test_a_model_with_no_ready_replica_is_503(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    mesh.replicas.append(ReplicaView("scorer", 0, "n5", ReplicaState.LOADING))
    status, doc = await _infer(entry, _json_body())
    assert status == 503 and "no ready replica" in doc["error"]
    assert (await entry.get("/v2/models/scorer/ready")).status == 503


async def _started(
    client: TestClient[Any, Any], doc: Any, headers: dict[str, str] | None = None
) -> asyncio.Task[Any]:
    task = asyncio.create_task(_infer(client, doc, headers))
    await asyncio.sleep(0.05)  # the request reaches the queue (ordering only; no timing is asserted)
    return task


async def test_a_full_queue_answers_429_with_retry_after(mesh: Mesh) -> None:
    host = FakeHost(gate=threading.Event())
    client = await mesh.add("n1", host, capacity=1)
    running = await _started(client, _json_body())  # taken by the worker, blocked in the host
    queued = await _started(client, _json_body())
    resp = await client.post("/v2/models/scorer/infer", json=_json_body())
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "holds 1 requests" in (await resp.json())["error"]
    assert host.gate is not None
    host.gate.set()
    assert (await running)[0] == (await queued)[0] == 200


async def test_critical_requests_are_served_before_queued_bulk_ones(mesh: Mesh) -> None:
    host = FakeHost(gate=threading.Event())
    client = await mesh.add("n1", host)
    first = await _started(client, _json_body(np.full((1, 3), 0, np.float32)))
    bulk = [
        await _started(client, _json_body(np.full((1, 3), i, np.float32), parameters={"priority": "bulk"}))
        for i in (1, 2)
    ]
    critical = await _started(
        client, _json_body(np.full((1, 3), 9, np.float32)), {PRIORITY_HEADER: "critical"}
    )
    assert host.gate is not None
    host.gate.set()
    await asyncio.gather(first, critical, *bulk)
    assert [float(c["x"][0, 0]) for c in host.calls] == [0, 9, 1, 2]


async def test_batching_joins_queued_requests_into_one_run(mesh: Mesh) -> None:
    host = FakeHost(gate=threading.Event())
    client = await mesh.add("n1", host, policy=BatchPolicy(max_batch=4, max_delay_s=60.0))
    first = await _started(client, _json_body(np.ones((1, 3), np.float32)))  # fills no batch: waits
    rest = [await _started(client, _json_body(np.full((2, 3), i, np.float32))) for i in (2, 3, 4)]
    assert host.gate is not None
    host.gate.set()
    results = await asyncio.gather(first, *rest)
    assert len(host.calls) == 1 and host.calls[0]["x"].shape == (7, 3)
    assert [r[1]["outputs"][0]["data"] for r in results] == [[3.0], [6.0, 6.0], [9.0, 9.0], [12.0, 12.0]]


async def test_the_inference_token_guards_every_v2_call_but_health(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False), token="s3cret")
    await mesh.add("n1", FakeHost(), token="s3cret")
    status, doc = await _infer(entry, _json_body())
    assert status == 401 and "Authorization: Bearer" in doc["error"]
    status, _ = await _infer(entry, _json_body(), {"Authorization": "Bearer wrong"})
    assert status == 401
    assert (await entry.get("/v2/health/ready")).status == 200
    assert (await entry.get("/v2")).status == 401
    status, doc = await _infer(entry, _json_body(), {"Authorization": "Bearer s3cret"})
    assert status == 200 and doc["outputs"][0]["data"] == [6.0, 15.0]  # the token went with the forward


async def test_murmur_infer_prints_the_outputs(
    mesh: Mesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    await mesh.add("n1", FakeHost())
    request = tmp_path / "x.json"
    request.write_text(json.dumps(_json_body()))
    url = f"http://127.0.0.1:{entry.port}"
    argv = ["infer", "scorer", "--input", str(request), "--node", url, "--priority", "critical"]
    assert await asyncio.to_thread(murmur_main, argv) == 0
    assert capsys.readouterr().out == "score [2] FP32: [6.0, 15.0]\n"
    assert (
        await asyncio.to_thread(murmur_main, ["infer", "nope", "--input", str(request), "--node", url]) == 1
    )
    assert "nope: HTTP 404: model 'nope' is not deployed" in capsys.readouterr().err
    request.write_text("[1]")
    assert await asyncio.to_thread(murmur_main, argv) == 1
    assert "needs an inputs list" in capsys.readouterr().err


def test_the_inference_token_file_is_one_printable_line(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("abc-123\n")
    assert read_token_file(good) == "abc-123"
    for content in ("", "\n", "two words", "x" * 600):
        bad = tmp_path / "bad"
        bad.write_text(content)
        with pytest.raises(ValueError, match=r"one line of 1\.\.512 printable"):
            read_token_file(bad)
    with pytest.raises(ValueError, match="cannot read"):
        read_token_file(tmp_path / "missing")


@dataclass
class TotalHost(FakeHost):
    """TEST DOUBLE whose output has no batch dimension: a batch cannot be split back."""

    def run(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        self.calls.append(inputs)
        if self.gate is not None:
            self.gate.wait(GATE_MAX_S)
        return {"score": np.array(inputs["x"].sum(), dtype=np.float32)}


async def test_a_batch_that_cannot_be_split_back_runs_one_by_one(mesh: Mesh) -> None:
    host = TotalHost(gate=threading.Event())
    client = await mesh.add("n1", host, policy=BatchPolicy(max_batch=2, max_delay_s=60.0))
    first = await _started(client, _json_body(np.ones((1, 3), np.float32), outputs=[{"name": "score"}]))
    second = await _started(client, _json_body(np.full((1, 3), 2, np.float32)))
    assert host.gate is not None
    host.gate.set()
    results = await asyncio.gather(first, second)
    assert [len(c["x"]) for c in host.calls] == [2, 1, 1]
    assert [r[1]["outputs"][0]["data"] for r in results] == [[3.0], [6.0]]
