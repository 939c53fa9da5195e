"""The inference API's view of the model host (mesh/service/servedmodels.py): a model's
metadata and batching policy are those of the version serving now, built once per version."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inference.assignments import ReplicaState
from inference.batching import NO_BATCHING, BatchPolicy
from inference.manifest import Deployment, manifest_from_doc
from inference.v2types import TensorSpec
from mesh.service.modelhost import HostSettings, ModelHost
from mesh.service.servedmodels import ServedModels
from tests.mesh.test_modelhost import WAIT_S, Store, example, settle, settled


@pytest.fixture
async def store_and_host(tmp_path: Path) -> AsyncIterator[tuple[Store, ModelHost]]:
    store = Store(tmp_path)
    host = ModelHost(store.path, HostSettings(intra_op_threads=1))
    yield store, host
    await host.close()


def _deployment(data: bytes, version: str, batching: dict[str, int] | None = None) -> Deployment:
    doc: dict[str, Any] = {
        "name": "mlp",
        "model": {"name": "mlp", "version": version},
        "artifact": {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
        "replicas": 1,
    }
    if batching is not None:
        doc["batching"] = batching
    return manifest_from_doc(doc)


async def test_metadata_and_policy_follow_the_version_serving_and_are_built_once_each(
    store_and_host: tuple[Store, ModelHost],
) -> None:
    store, host = store_and_host
    served = ServedModels(host)
    data = example("tabular-mlp")
    store.hold(data)
    assert served.metadata("mlp") is None and served.policy_of("mlp") == NO_BATCHING
    assert await settle(host, _deployment(data, "1.0.0"), settled) is ReplicaState.READY
    first = served.metadata("mlp")
    assert first is not None and first.versions == ("1.0.0",)
    assert first.inputs == (TensorSpec("features", "FP32", (-1, 16)),)
    assert served.metadata("mlp") is first  # asked on every request: built once per version
    assert served.policy_of("mlp") == NO_BATCHING

    # Being asked is being wanted: version 2, which batches, loads while version 1 serves.
    host.replica_state(_deployment(data, "2.0.0", {"max_batch": 4, "max_delay_ms": 2}), 1.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while (meta := served.metadata("mlp")) is first:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert meta is not None and meta.versions == ("2.0.0",)
    assert served.policy_of("mlp") == BatchPolicy(4, 0.002)

    host.drop("mlp")
    assert served.metadata("mlp") is None and served.policy_of("mlp") == NO_BATCHING
