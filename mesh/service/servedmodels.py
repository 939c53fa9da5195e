"""The node's model host as the inference API sees it (mesh/service/modellanes.py `ModelHost`).

`ModelHost` (mesh/service/modelhost.py) keys replicas by deployment name and describes tensors
by numpy dtype with None for a dynamic dimension; the Open Inference Protocol names a model by
the same deployment name and describes tensors by v2 datatype with -1 for a dynamic dimension.
This adapter translates, and serves metadata only for a model loaded and warmed up here. It
also tells the model's lane (mesh/service/modellanes.py) how to batch: as the manifest of the
version serving now asks (`batching`), one request at a time otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference.batching import NO_BATCHING, BatchPolicy
from inference.signatures import TensorSpec as SignatureSpec
from inference.v2types import DATATYPE_OF_DTYPE_NAME, DYNAMIC, ModelMetadata, TensorSpec
from mesh.service.modelhost import ModelHost

if TYPE_CHECKING:
    from inference.v2tensors import Array

PLATFORM = "onnxruntime_onnx"  # the KServe v2 platform name of an ONNX model run by onnxruntime


def v2_spec(spec: SignatureSpec) -> TensorSpec:
    """A signature tensor as v2 metadata: an unknown rank is `[-1]`, an unserved type its ONNX name."""
    datatype = DATATYPE_OF_DTYPE_NAME.get(spec.dtype or "", spec.onnx_type)
    shape = (DYNAMIC,) if spec.shape is None else tuple(DYNAMIC if d is None else d for d in spec.shape)
    return TensorSpec(spec.name, datatype, shape)


class ServedModels:
    """The inference API's view of the node's model host."""

    def __init__(self, host: ModelHost) -> None:
        self._host = host

    def metadata(self, name: str) -> ModelMetadata | None:
        loaded = self._host.loaded(name)
        if loaded is None:
            return None
        return ModelMetadata(
            name,
            (loaded.deployment.model_version,),
            PLATFORM,
            tuple(v2_spec(s) for s in loaded.inputs),
            tuple(v2_spec(s) for s in loaded.outputs),
        )

    async def infer(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        return await self._host.infer(name, inputs)

    def policy_of(self, name: str) -> BatchPolicy:
        """The batching policy of the version of `name` serving now (none before one is ready)."""
        loaded = self._host.loaded(name)
        if loaded is None or loaded.deployment.batching is None:
            return NO_BATCHING
        return loaded.deployment.batching.policy()
