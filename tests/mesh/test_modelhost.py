"""The model host with the example models: replica states, warm-up, failures kept with their
error, a version switch with no gap, unload, and the errors of infer()."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from inference.assignments import ReplicaState
from inference.manifest import Deployment, manifest_from_doc
from mesh.examples.build_models import MODELS_DIR
from mesh.service.modelhost import (
    BadInput,
    HostSettings,
    ModelHost,
    ModelNotReady,
    UnknownModel,
    zeros_like_signature,
)

WAIT_S = 30.0  # a bound on waiting for a load, never a timing assertion


async def _run(host: ModelHost, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """`host.run` on a thread, as a model lane's inference thread calls it."""
    return await asyncio.to_thread(host.run, name, inputs)


class Store:
    """A stand-in for the artifact store: sha256 -> file, only once `hold` was called."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.held: dict[str, Path] = {}

    def hold(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / sha256
        path.write_bytes(data)
        self.held[sha256] = path
        return sha256

    def path(self, sha256: str) -> Path | None:
        return self.held.get(sha256)


def deployment(name: str, data: bytes, version: str = "1.0.0", accelerator: str | None = None) -> Deployment:
    requirements: dict[str, Any] = {} if accelerator is None else {"accelerator": accelerator}
    return manifest_from_doc(
        {
            "name": name,
            "model": {"name": name, "version": version},
            "artifact": {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
            "replicas": 1,
            "requirements": requirements,
        }
    )


def example(name: str) -> bytes:
    return (MODELS_DIR / f"{name}.onnx").read_bytes()


@pytest.fixture
async def store_and_host(tmp_path: Path) -> AsyncIterator[tuple[Store, ModelHost, list[tuple[str, str]]]]:
    store = Store(tmp_path)
    failures: list[tuple[str, str]] = []
    host = ModelHost(
        store.path,
        HostSettings(intra_op_threads=1),
        on_failed=lambda name, d, error: failures.append((name, error)),
    )
    yield store, host, failures
    await host.close()


async def settle(
    host: ModelHost, d: Deployment, until: Callable[[ReplicaState | None], bool]
) -> ReplicaState:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        state = host.replica_state(d, loop.time())
        if until(state):
            assert state is not None
            return state
        assert loop.time() < deadline, f"{d.name} still {state}"
        await asyncio.sleep(0.01)


def settled(state: ReplicaState | None) -> bool:
    return state in (ReplicaState.READY, ReplicaState.FAILED)


async def test_a_replica_waits_for_its_artifact_then_loads_warms_up_and_serves(
    store_and_host: tuple[Store, ModelHost, list[tuple[str, str]]],
) -> None:
    store, host, failures = store_and_host
    data = example("vibration-anomaly")
    d = deployment("vibration-anomaly", data)
    assert host.replica_state(d, 0.0) is None  # not held, nothing fetching it: the core shows it assigned
    fetching: set[str] = set()
    host.fetching = fetching.__contains__
    fetching.add(d.artifact_sha256)
    assert host.replica_state(d, 0.0) is ReplicaState.LOADING  # on its way from peers
    fetching.clear()
    assert host.replica_state(d, 0.0) is None  # the transfer failed: assigned again, fetched again later
    store.hold(data)
    assert host.replica_state(d, 0.0) is ReplicaState.LOADING
    with pytest.raises(ModelNotReady, match="'vibration-anomaly' is loading on this node"):
        await _run(host, "vibration-anomaly", {"window": np.zeros((1, 3, 128), np.float32)})
    assert await settle(host, d, settled) is ReplicaState.READY
    assert failures == [] and host.error("vibration-anomaly") is None
    window = np.random.default_rng(3).standard_normal((4, 3, 128)).astype(np.float32)
    out = await _run(host, "vibration-anomaly", {"window": window})
    direct = onnxruntime.InferenceSession(str(MODELS_DIR / "vibration-anomaly.onnx"))
    assert np.array_equal(out["score"], direct.run(None, {"window": window})[0])
    (row,) = host.status()
    assert (
        row["state"] == "ready" and row["version"] == "1.0.0" and row["providers"] == ["CPUExecutionProvider"]
    )
    assert row["inputs"] == [{"name": "window", "type": "float32[-1, 3, 128]"}]
    assert host.counters["loads"] == 1


async def test_a_corrupt_model_is_failed_with_its_error_and_never_serves(
    store_and_host: tuple[Store, ModelHost, list[tuple[str, str]]],
) -> None:
    store, host, failures = store_and_host
    data = example("tabular-mlp")[:-100] + b"\x00" * 100  # truncated weights: onnxruntime refuses it
    store.hold(data)
    d = deployment("tabular-mlp", data)
    assert await settle(host, d, settled) is ReplicaState.FAILED
    error = host.error("tabular-mlp")
    assert error is not None and error.startswith("load failed: ")
    assert failures == [("tabular-mlp", error)]
    assert host.status()[0]["error"] == error
    with pytest.raises(ModelNotReady, match="is failed on this node, not ready: load failed"):
        await _run(host, "tabular-mlp", {"features": np.zeros((1, 16), np.float32)})
    # Asked again about the same version: still failed, not loaded again in a loop.
    assert host.replica_state(d, 1.0) is ReplicaState.FAILED
    assert host.counters["loads"] == 1
    # A new version is tried.
    good = example("tabular-mlp")
    store.hold(good)
    fixed = deployment("tabular-mlp", good, version="1.0.1")
    assert await settle(host, fixed, settled) is ReplicaState.READY
    assert host.error("tabular-mlp") is None


async def test_a_model_that_loads_but_fails_its_warm_up_is_failed(
    store_and_host: tuple[Store, ModelHost, list[tuple[str, str]]],
) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx (the dev extra) builds the broken model")
    h = onnx.helper
    # Reshape to a fixed [2, 4]: fine for a batch of 2, but the warm-up sends a batch of 1.
    graph = h.make_graph(
        [h.make_node("Reshape", ["x", "shape"], ["y"])],
        "needs_batch_2",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.numpy_helper.from_array(np.array([2, 4], np.int64), "shape")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    store, host, failures = store_and_host
    store.hold(data)
    d = deployment("needs-batch-2", data)
    assert await settle(host, d, settled) is ReplicaState.FAILED
    error = host.error("needs-batch-2")
    assert error is not None and error.startswith("warm-up failed: ") and "Reshape" in error
    assert [name for name, _ in failures] == ["needs-batch-2"]


async def test_a_version_switch_answers_requests_throughout(
    store_and_host: tuple[Store, ModelHost, list[tuple[str, str]]],
) -> None:
    store, host, _failures = store_and_host
    data = example("tabular-mlp")
    store.hold(data)
    v1, v2 = deployment("mlp", data, "1.0.0"), deployment("mlp", data, "2.0.0")
    assert await settle(host, v1, settled) is ReplicaState.READY
    features = {"features": np.ones((2, 16), np.float32)}
    # Hold the loader thread, so the switch is under way for as long as the test needs.
    gate = threading.Event()
    host._loader.submit(gate.wait)
    assert host.replica_state(v2, 1.0) is ReplicaState.READY  # v1 keeps serving while v2 loads
    assert host.status()[0]["next_version"] == "2.0.0"
    during = await _run(host, "mlp", features)
    assert during["probabilities"].shape == (2, 2)
    loaded = host.loaded("mlp")
    assert loaded is not None and loaded.deployment.model_version == "1.0.0"
    gate.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while (m := host.loaded("mlp")) is not None and m.deployment.model_version == "1.0.0":
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert m is not None and m.deployment.model_version == "2.0.0"
    assert host.replica_state(v2, 2.0) is ReplicaState.READY
    assert (await _run(host, "mlp", features))["probabilities"].shape == (2, 2)


async def test_a_dropped_replica_is_unloaded_and_a_load_under_way_is_discarded(
    store_and_host: tuple[Store, ModelHost, list[tuple[str, str]]],
) -> None:
    store, host, _failures = store_and_host
    data = example("image-classifier")
    store.hold(data)
    d = deployment("camera", data)
    assert await settle(host, d, settled) is ReplicaState.READY
    host.drop("camera")
    assert host.loaded("camera") is None and host.status() == []
    with pytest.raises(UnknownModel, match="'camera': no replica of it on this node"):
        await _run(host, "camera", {"image": np.zeros((1, 3, 32, 32), np.float32)})
    assert host.counters["unloads"] == 1
    gate = threading.Event()
    host._loader.submit(gate.wait)
    assert host.replica_state(d, 1.0) is ReplicaState.LOADING
    host.drop("camera")
    gate.set()
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while host.counters.get("loads_discarded", 0) == 0:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert host.loaded("camera") is None


@pytest.mark.parametrize(
    ("inputs", "tensor", "message"),
    [
        ({"pixels": np.zeros((1, 16), np.float32)}, "pixels", "the model has no such input"),
        ({}, "features", r"missing \(expected float32\[-1, 16\]\)"),
        ({"features": np.zeros((1, 16), np.float64)}, "features", "datatype float64, expected"),
        ({"features": np.zeros((1, 15), np.float32)}, "features", r"shape \[1, 15\], expected"),
        ({"features": np.zeros((16,), np.float32)}, "features", r"shape \[16\], expected"),
        ({"features": [[0.0] * 16]}, "features", "must be a numpy array"),
    ],
)
async def test_a_request_that_does_not_fit_names_the_tensor(
    store_and_host: tuple[Store, ModelHost, list[tuple[str, str]]],
    inputs: dict[str, Any],
    tensor: str,
    message: str,
) -> None:
    store, host, _failures = store_and_host
    data = example("tabular-mlp")
    store.hold(data)
    d = deployment("mlp", data)
    assert await settle(host, d, settled) is ReplicaState.READY
    with pytest.raises(BadInput, match=message) as caught:
        await _run(host, "mlp", inputs)
    assert caught.value.tensor == tensor
    loaded = host.loaded("mlp")
    assert loaded is not None
    assert (await _run(host, "mlp", zeros_like_signature(loaded)))["probabilities"].shape == (1, 2)


async def test_an_accelerator_asked_for_and_offered_comes_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = example("tabular-mlp")
    store.hold(data)
    asked: list[list[str]] = []

    def providers() -> list[str]:
        real = [str(p) for p in onnxruntime.get_available_providers()]
        asked.append(real)
        return real

    host = ModelHost(store.path, available_providers=providers)
    try:
        d = deployment("mlp", data, accelerator="cpu")
        assert await settle(host, d, settled) is ReplicaState.READY
        assert asked and host.status()[0]["providers"] == ["CPUExecutionProvider"]
    finally:
        await host.close()
    assert host.replica_state(d, 0.0) is None  # closed: nothing loads any more
