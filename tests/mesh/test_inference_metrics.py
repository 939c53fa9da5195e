"""murmur_inference_*: every /v2 infer request counted by model, route and status, timed in a
histogram, and each model's queue depth; label values never taken from a client."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from mesh.service.inferencemetrics import LATENCY_BUCKETS_S, InferenceStats
from tests.mesh.test_v2api import FakeHost, Mesh, _infer, _json_body


class _Collect:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _scrape(stats: InferenceStats, depths: dict[str, int] | None = None) -> dict[str, dict[tuple, float]]:
    """The families as Prometheus parses the text exposition: sample name -> labels -> value."""
    registry = CollectorRegistry()
    registry.register(_Collect(stats.families(depths or {})))  # type: ignore[arg-type]
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_requests_and_latency_as_prometheus_reads_them() -> None:
    stats = InferenceStats()
    for seconds in (0.0002, 0.003, 0.003, 7.0):
        stats.record(stats.model_label("vibration-ae", True), "local", 200, seconds)
    stats.record(stats.model_label("vibration-ae", True), "forwarded", 502, 0.02)
    got = _scrape(stats, {"vibration-ae": 3})
    local = (("code", "200"), ("model", "vibration-ae"), ("route", "local"))
    assert got["murmur_inference_requests_total"][local] == 4
    assert got["murmur_inference_requests_total"][(("code", "502"), *local[1:2], ("route", "forwarded"))] == 1
    buckets = got["murmur_inference_request_duration_seconds_bucket"]
    key = (("le", "0.005"), ("model", "vibration-ae"), ("route", "local"))
    assert buckets[key] == 3  # cumulative: 0.2 ms and twice 3 ms
    assert buckets[(("le", "+Inf"), ("model", "vibration-ae"), ("route", "local"))] == 4
    assert (
        got["murmur_inference_request_duration_seconds_count"][
            (("model", "vibration-ae"), ("route", "local"))
        ]
        == 4
    )
    assert (
        abs(
            got["murmur_inference_request_duration_seconds_sum"][
                (("model", "vibration-ae"), ("route", "local"))
            ]
            - 7.0062
        )
        < 1e-9
    )
    assert got["murmur_inference_queue_depth"][(("model", "vibration-ae"),)] == 3
    assert len(LATENCY_BUCKETS_S) + 1 == len([k for k in buckets if ("route", "local") in k])


def test_label_values_stay_bounded_whatever_clients_send() -> None:
    stats = InferenceStats(models_max=2)
    for name in ("a", "b", "c", "d"):
        stats.record(stats.model_label(name, True), "local", 200, 0.001)
    for name in ("x" * 60, "../../etc", "é"):
        stats.record(stats.model_label(name, False), "refused", 404, 0.001)
    stats.record(stats.model_label("a", True), "sideways", 299, 0.001)  # not a route, not a code we list
    got = _scrape(stats)["murmur_inference_requests_total"]
    models = {dict(k)["model"] for k in got}
    assert models == {"a", "b", "other", "unknown"}
    assert got[(("code", "404"), ("model", "unknown"), ("route", "refused"))] == 3
    assert got[(("code", "other"), ("model", "a"), ("route", "refused"))] == 1


async def test_the_api_counts_local_forwarded_and_refused_requests(mesh: Mesh) -> None:
    entry = await mesh.add("n0", FakeHost(serves=False))
    replica = await mesh.add("n1", FakeHost())
    assert (await _infer(replica, _json_body()))[0] == 200
    assert (await _infer(entry, _json_body()))[0] == 200
    assert (await _infer(entry, {"inputs": "nope"}))[0] == 400  # refused by the replica, relayed
    resp = await entry.post("/v2/models/no-such-model/infer", json=_json_body())
    assert resp.status == 404
    entry_got = _scrape(mesh.fronts["n0"].stats)["murmur_inference_requests_total"]
    replica_got = _scrape(mesh.fronts["n1"].stats)["murmur_inference_requests_total"]
    assert entry_got == {
        (("code", "200"), ("model", "scorer"), ("route", "forwarded")): 1,
        (("code", "400"), ("model", "scorer"), ("route", "forwarded")): 1,
        (("code", "404"), ("model", "unknown"), ("route", "refused")): 1,
    }
    assert replica_got == {
        (("code", "200"), ("model", "scorer"), ("route", "local")): 2,  # its own client's and n0's
        (("code", "400"), ("model", "scorer"), ("route", "local")): 1,
    }


async def test_a_refused_token_is_counted(mesh: Mesh) -> None:
    entry = await mesh.add("n1", FakeHost(), token="s3cret")
    assert (await _infer(entry, _json_body()))[0] == 401
    got = _scrape(mesh.fronts["n1"].stats)["murmur_inference_requests_total"]
    assert got == {(("code", "401"), ("model", "scorer"), ("route", "refused")): 1}


async def test_queue_depth_reads_the_waiting_requests(mesh: Mesh) -> None:
    gate = threading.Event()
    client = await mesh.add("n1", FakeHost(gate=gate))
    pending = [asyncio.create_task(_infer(client, _json_body())) for _ in range(3)]
    front = mesh.fronts["n1"]
    for _ in range(200):
        if front.lanes.queue_depths().get("scorer") == 2:  # one running, two waiting
            break
        await asyncio.sleep(0.01)
    assert front.lanes.queue_depths() == {"scorer": 2}
    gate.set()
    assert [status for status, _ in await asyncio.gather(*pending)] == [200, 200, 200]
    assert front.lanes.queue_depths() == {"scorer": 0}


async def test_a_request_whose_client_left_is_counted_as_499_not_as_a_server_error(mesh: Mesh) -> None:
    gate = threading.Event()
    client = await mesh.add("n1", FakeHost(gate=gate))
    waiting = asyncio.create_task(_infer(client, _json_body()))
    front = mesh.fronts["n1"]
    for _ in range(200):
        if front.lanes.queue_depths().get("scorer") == 0 and not waiting.done():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the request is in the host, blocked
    waiting.cancel()  # the client gives up: its connection closes, the test server cancels the handler
    for _ in range(200):
        got = _scrape(front.stats).get("murmur_inference_requests_total", {})
        if got:
            break
        await asyncio.sleep(0.01)
    gate.set()
    assert got == {(("code", "499"), ("model", "scorer"), ("route", "local")): 1}
