"""A manifest's `batching` reaches the model's lane (mesh/service/servedmodels.py `policy_of`,
as mesh/service/launch.py wires it): two concurrent requests to a model deployed with
`batching` run as one batch on the onnxruntime host; without it, as two runs."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from inference.manifest import manifest_from_doc
from inference.requestqueue import Priority
from mesh.examples.build_models import MODELS_DIR
from mesh.service.modelhost import HostSettings, ModelHost
from mesh.service.modellanes import ModelLanes
from mesh.service.servedmodels import ServedModels
from tests.mesh.test_modelhost import Store, settle, settled

MODEL = "image-classifier"


async def _two_at_once(tmp_path: Path, batching: dict[str, int] | None) -> tuple[list[int], list[Any]]:
    """Host calls' batch sizes and the two answers for two concurrent requests."""
    data = (MODELS_DIR / f"{MODEL}.onnx").read_bytes()
    store = Store(tmp_path)
    store.hold(data)
    doc: dict[str, Any] = {
        "name": MODEL,
        "model": {"name": MODEL, "version": "1"},
        "artifact": {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
        "replicas": 1,
    }
    if batching is not None:
        doc["batching"] = batching
    host = ModelHost(store.path, HostSettings(intra_op_threads=1))
    served = ServedModels(host)
    calls: list[int] = []
    run = served.run

    def counted(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        calls.append(len(next(iter(inputs.values()))))
        return run(name, inputs)

    served.run = counted  # type: ignore[method-assign]
    lanes = ModelLanes(served, served.policy_of)
    try:
        await settle(host, manifest_from_doc(doc), settled)
        rng = np.random.default_rng(5)
        images = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
        answers = await asyncio.gather(
            *(lanes.lane(MODEL).submit({"image": x}, Priority.NORMAL) for x in images)
        )
        direct = onnxruntime.InferenceSession(str(MODELS_DIR / f"{MODEL}.onnx"))
        for x, answer in zip(images, answers, strict=True):
            (want,) = direct.run(None, {"image": x})
            (got,) = answer.values()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # a batch may sum in another order
        return calls, answers
    finally:
        await lanes.close()
        await host.close()


async def test_two_concurrent_requests_to_a_batching_model_run_as_one_batch(tmp_path: Path) -> None:
    # max_delay_ms is long: the first request waits for the second, which fills the batch.
    calls, _answers = await _two_at_once(tmp_path, {"max_batch": 2, "max_delay_ms": 10_000})
    assert calls == [2]


async def test_without_batching_they_run_one_by_one(tmp_path: Path) -> None:
    calls, _answers = await _two_at_once(tmp_path, None)
    assert calls == [1, 1]
