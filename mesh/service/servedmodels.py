"""The node's model host as the inference API sees it (mesh/service/modellanes.py `ModelHost`).

`ModelHost` (mesh/service/modelhost.py) keys replicas by deployment name and describes tensors
by numpy dtype with None for a dynamic dimension; the Open Inference Protocol names a model by
the same deployment name and describes tensors by v2 datatype with -1 for a dynamic dimension.
This adapter translates, and serves metadata only for a model loaded and warmed up here. It
also tells the model's lane (mesh/service/modellanes.py) how to batch: as the manifest of the
version serving now asks (`batching`), one request at a time otherwise.

Both are asked on every request, so each is built once per version serving (the
deployment, which pins the artifact's sha256 and so the signature) and kept until
another version serves: one entry per model, holding the deployment, never the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from inference.batching import NO_BATCHING, BatchPolicy
from inference.manifest import Deployment
from inference.signatures import TensorSpec as SignatureSpec
from inference.v2types import DATATYPE_OF_DTYPE_NAME, DYNAMIC, ModelMetadata, TensorSpec
from mesh.service.modelhost import LoadedModel, ModelHost

if TYPE_CHECKING:
    from inference.v2tensors import Array

PLATFORM = "onnxruntime_onnx"  # the KServe v2 platform name of an ONNX model run by onnxruntime


def v2_spec(spec: SignatureSpec) -> TensorSpec:
    """A signature tensor as v2 metadata: an unknown rank is `[-1]`, an unserved type its ONNX name."""
    datatype = DATATYPE_OF_DTYPE_NAME.get(spec.dtype or "", spec.onnx_type)
    shape = (DYNAMIC,) if spec.shape is None else tuple(DYNAMIC if d is None else d for d in spec.shape)
    return TensorSpec(spec.name, datatype, shape)


@dataclass(frozen=True, slots=True)
class _Served:
    """What the API asks about one version on every request, built once."""

    deployment: Deployment
    metadata: ModelMetadata
    policy: BatchPolicy


class ServedModels:
    """The inference API's view of the node's model host."""

    def __init__(self, host: ModelHost) -> None:
        self._host = host
        self._served: dict[str, _Served] = {}  # deployment name -> its version serving now

    def metadata(self, name: str) -> ModelMetadata | None:
        served = self._serving(name)
        return served.metadata if served is not None else None

    def run(self, name: str, inputs: dict[str, Array]) -> dict[str, Array]:
        return self._host.run(name, inputs)

    def policy_of(self, name: str) -> BatchPolicy:
        """The batching policy of the version of `name` serving now (none before one is ready)."""
        served = self._serving(name)
        return served.policy if served is not None else NO_BATCHING

    def _serving(self, name: str) -> _Served | None:
        loaded = self._host.loaded(name)
        if loaded is None:
            self._served.pop(name, None)
            return None
        served = self._served.get(name)
        if served is None or served.deployment is not loaded.deployment:
            served = self._served[name] = _describe(name, loaded)
        return served


def _describe(name: str, loaded: LoadedModel) -> _Served:
    batching = loaded.deployment.batching
    metadata = ModelMetadata(
        name,
        (loaded.deployment.model_version,),
        PLATFORM,
        tuple(v2_spec(s) for s in loaded.inputs),
        tuple(v2_spec(s) for s in loaded.outputs),
    )
    return _Served(loaded.deployment, metadata, NO_BATCHING if batching is None else batching.policy())
