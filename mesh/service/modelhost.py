"""The model host: one onnxruntime session per replica this node holds, loaded, warmed up and
run off the event loop; the placement core's `ReplicaRuntime` (inference/placing_ports.py).

The placement core asks `replica_state(deployment, now)` about each replica this node
holds, at every reconcile (and every `state_poll_s` while one is on its way). Being
asked is being wanted: the first time the host is asked about a version (model name,
version, artifact sha256) whose artifact the store holds, it starts loading it. Until
the artifact is there the answer is None (the core shows `assigned`, or `provisional`).
Loading runs in a one-thread executor: the session (CPU, or the manifest's accelerator
when this node offers it; small-device thread settings), then a warm-up inference with
zeros shaped by the model's own input signature (dynamic dimensions 1,
inference/signatures.py). Only when both succeed is the replica `ready`; a load or
warm-up that fails makes it `failed` with the error kept (`error(name)`, logged once,
in the `replica_failed` event and GET /v1/placements).

A new version is loaded while the old one keeps serving (the replica stays `ready`), and
replaces it only once warmed up: no request finds no session. If the new version fails,
the replica is `failed` and the old session is dropped too (it is not what the operator
asked for any more). A failed version is not retried; a newer version, or the replica
assigned again after it left, is. `drop(name)` (the core's ReplicaDropped) unloads.

`run(name, inputs)` runs one request on the calling thread: the model lanes' inference
threads (mesh/service/modellanes.py; onnxruntime releases the GIL while it runs, so gossip
keeps its loop), never the event loop. Callers get `UnknownModel`, `ModelNotReady` or
`BadInput` (naming the tensor) before anything runs.

State changes happen on the event loop thread only (load results come back through their
futures' callbacks there); a run reads the replica it serves once, and only the counters
are shared with the inference threads (under a lock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.assignments import ReplicaState
from inference.manifest import Deployment
from inference.signatures import (
    SignatureError,
    TensorSpec,
    input_problem,
    session_providers,
    tensor_spec,
    warmup_inputs,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger("murmur.models")

INTRA_OP_THREADS_DEFAULT = 1  # per session: a small device runs several models on 2-4 cores
INFERENCE_THREADS_DEFAULT = 2  # session.run calls at once, all models together (the model lanes' threads)
THREADS_MAX = 64
ERROR_MAX_CHARS = 400  # an error kept and shown; onnxruntime's can be pages long


class ModelError(Exception):
    """An inference this host refuses or could not run; `reason` is a short key."""

    reason = "model_error"


class UnknownModel(ModelError):
    """No replica of that deployment on this node."""

    reason = "unknown_model"


class ModelNotReady(ModelError):
    """The replica is here but not ready (loading, waiting for its artifact, or failed)."""

    reason = "not_ready"


class BadInput(ModelError):
    """A request's tensor does not fit the model: `tensor` names it."""

    reason = "bad_input"

    def __init__(self, tensor: str, message: str) -> None:
        super().__init__(message)
        self.tensor = tensor


class RunFailed(ModelError):
    """onnxruntime raised while running a request that fit the signature."""

    reason = "run_failed"


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Thread settings for a small device (docs/models.md, "Threads")."""

    intra_op_threads: int = INTRA_OP_THREADS_DEFAULT  # (how many runs at once is ModelLanes' threads)

    def __post_init__(self) -> None:
        if not 1 <= self.intra_op_threads <= THREADS_MAX:
            raise ValueError(f"intra_op_threads: must be 1 to {THREADS_MAX}, got {self.intra_op_threads}")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A warmed-up session and what it serves."""

    deployment: Deployment
    session: Any  # onnxruntime.InferenceSession (untyped)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    providers: tuple[str, ...]
    load_s: float
    warmup_s: float


@dataclass(slots=True)
class _Replica:
    serving: LoadedModel | None = None
    wanted: Deployment | None = None  # a version other than serving's, loading or failed
    error: str | None = None  # why `wanted` failed
    load_id: int = 0  # a finished load counts only if this still matches (not dropped, not superseded)
    loading: bool = False


def version_of(deployment: Deployment) -> tuple[str, str, str, str | None]:
    """What makes two deployments the same loaded model: name, version, bytes, accelerator."""
    return (
        deployment.model_name,
        deployment.model_version,
        deployment.artifact_sha256,
        deployment.requirements.accelerator,
    )


def _available_providers() -> list[str]:
    import onnxruntime  # lazily: an agent with no model never pays for it

    return [str(p) for p in onnxruntime.get_available_providers()]


_DTYPE_NAMES_MAX = 64
_DTYPE_NAMES: dict[Any, str] = {}  # numpy computes a dtype's name in Python each time


def _dtype_name(dtype: Any) -> str:
    """`dtype.name`, remembered (a request's inputs have one of a few dtypes)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = dtype.name
        if len(_DTYPE_NAMES) < _DTYPE_NAMES_MAX:
            _DTYPE_NAMES[dtype] = name
    return name


class ModelHost:
    """This node's loaded models (see the module docstring)."""

    def __init__(
        self,
        artifact_path: Callable[[str], Path | None],
        settings: HostSettings | None = None,
        *,
        available_providers: Callable[[], list[str]] = _available_providers,
        on_failed: Callable[[str, Deployment, str], None] | None = None,
    ) -> None:
        """artifact_path(sha256) -> the held, verified artifact's file, or None if not held."""
        self.settings = settings or HostSettings()
        self._artifact_path = artifact_path
        self._available_providers = available_providers
        self._on_failed = on_failed
        # fetching(sha256) -> True while a transfer from peers brings that artifact (set by
        # launch.py once the fetcher exists): the replica is `loading` meanwhile, not `assigned`.
        self.fetching: Callable[[str], bool] = lambda _sha256: False
        self._replicas: dict[str, _Replica] = {}
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="murmur-load")
        self.counters: dict[str, int] = {}
        self._counting = threading.Lock()
        self._closed = False

    # --- ReplicaRuntime ---------------------------------------------------------------------

    def replica_state(self, deployment: Deployment, now: float) -> ReplicaState | None:
        """The replica's state; starts loading a version asked about for the first time."""
        if self._closed:
            return None
        name = deployment.name
        replica = self._replicas.get(name)
        if replica is None:
            replica = self._replicas[name] = _Replica()
        wanted = version_of(deployment)
        if replica.serving is not None and version_of(replica.serving.deployment) == wanted:
            if replica.wanted is not None:  # switched back before the other version finished
                replica.wanted, replica.error, replica.loading = None, None, False
                replica.load_id += 1
            return ReplicaState.READY
        if replica.wanted is None or version_of(replica.wanted) != wanted:
            path = self._artifact_path(deployment.artifact_sha256)
            if path is None:  # waiting for the artifact (fetched from peers)
                if replica.serving is not None:
                    return ReplicaState.READY  # the version before serves meanwhile
                return ReplicaState.LOADING if self.fetching(deployment.artifact_sha256) else None
            replica.wanted, replica.error, replica.loading = deployment, None, True
            replica.load_id += 1
            self._start_load(name, replica.load_id, deployment, path)
        if replica.error is not None:
            return ReplicaState.FAILED
        return ReplicaState.READY if replica.serving is not None else ReplicaState.LOADING

    # --- the placement core's events --------------------------------------------------------

    def drop(self, name: str) -> None:
        """The replica left this node: unload its session (a load under way is discarded)."""
        replica = self._replicas.pop(name, None)
        if replica is not None and replica.serving is not None:
            self._count("unloads")
            log.info("replica %s: model %s unloaded", name, _label(replica.serving.deployment))

    # --- reads ------------------------------------------------------------------------------

    def error(self, name: str) -> str | None:
        """Why the replica of deployment `name` failed, or None."""
        replica = self._replicas.get(name)
        return replica.error if replica is not None else None

    def replica_error(self, deployment: str) -> str | None:
        """ReplicaRuntime's: the error the placement core reports in the node's `replicas` record."""
        return self.error(deployment)

    def loaded(self, name: str) -> LoadedModel | None:
        """The session serving deployment `name` now, or None."""
        replica = self._replicas.get(name)
        return replica.serving if replica is not None else None

    def status(self) -> list[dict[str, Any]]:
        """Every replica the host knows, by deployment (GET /v1/placements' `models`)."""
        rows: list[dict[str, Any]] = []
        for name, replica in sorted(self._replicas.items()):
            serving = replica.serving
            row: dict[str, Any] = {"deployment": name, "state": str(self._state_of(replica))}
            if serving is not None:
                row |= {
                    "model": serving.deployment.model_name,
                    "version": serving.deployment.model_version,
                    "sha256": serving.deployment.artifact_sha256,
                    "providers": list(serving.providers),
                    "load_ms": round(serving.load_s * 1000, 1),
                    "warmup_ms": round(serving.warmup_s * 1000, 1),
                    "inputs": [{"name": s.name, "type": s.describe()} for s in serving.inputs],
                    "outputs": [{"name": s.name, "type": s.describe()} for s in serving.outputs],
                }
            if replica.wanted is not None:
                row["next_version"] = replica.wanted.model_version
            if replica.error is not None:
                row["error"] = replica.error
            rows.append(row)
        return rows

    @staticmethod
    def _state_of(replica: _Replica) -> ReplicaState | None:
        if replica.error is not None:
            return ReplicaState.FAILED
        if replica.serving is not None:
            return ReplicaState.READY
        return ReplicaState.LOADING if replica.loading else ReplicaState.ASSIGNED

    # --- inference --------------------------------------------------------------------------

    def run(self, name: str, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one request on deployment `name`'s ready session, on the calling thread: the
        model lanes' inference threads (mesh/service/modellanes.py), never the event loop."""
        replica = self._replicas.get(name)
        if replica is None:
            raise UnknownModel(f"model {name[:64]!r}: no replica of it on this node")
        model = replica.serving
        if model is None:
            state = self._state_of(replica)
            why = f": {replica.error}" if replica.error else ""
            raise ModelNotReady(f"model {name!r} is {state} on this node, not ready{why}")
        given: dict[str, tuple[str, tuple[int, ...]]] = {}
        for tensor, array in inputs.items():
            dtype, shape = getattr(array, "dtype", None), getattr(array, "shape", None)
            if dtype is None or not isinstance(shape, tuple):
                raise BadInput(tensor, f"input {tensor[:64]!r}: must be a numpy array")
            given[tensor] = (_dtype_name(dtype), shape)
        problem = input_problem(model.inputs, given)
        if problem is not None:
            raise BadInput(*problem)
        self._count("inferences")
        try:
            results = model.session.run(None, dict(inputs))
        except Exception as exc:  # onnxruntime's own errors (a shape the graph refuses inside)
            self._count("inference_errors")
            raise RunFailed(f"model {name!r}: {_clip(exc)}") from None
        return {spec.name: result for spec, result in zip(model.outputs, results, strict=True)}

    # --- loading ----------------------------------------------------------------------------

    def _start_load(self, name: str, load_id: int, deployment: Deployment, path: Path) -> None:
        log.info("replica %s: loading model %s from %s", name, _label(deployment), path.name[:16])
        self._count("loads")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._loader, self._load, deployment, path)
        future.add_done_callback(lambda f: self._loaded(name, load_id, deployment, f))

    def _load(self, deployment: Deployment, path: Path) -> LoadedModel:
        """In the loader thread: the session, then the warm-up; raises with the phase named."""
        import numpy as np
        import onnxruntime

        started = time.perf_counter()
        try:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.settings.intra_op_threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            # No busy-waiting threads: on a small device a spinning pool steals the cores gossip needs.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            options.log_severity_level = 3  # errors only: warnings land in the agent's stderr otherwise
            providers = session_providers(self._available_providers(), deployment.requirements.accelerator)
            session = onnxruntime.InferenceSession(str(path), options, providers=providers)
            inputs = tuple(tensor_spec(i.name, i.type, i.shape) for i in session.get_inputs())
            outputs = tuple(tensor_spec(o.name, o.type, o.shape) for o in session.get_outputs())
        except Exception as exc:
            raise _LoadError(f"load failed: {_clip(exc)}") from None
        loaded_s = time.perf_counter()
        try:
            feed = {w.name: np.zeros(w.shape, dtype=w.dtype) for w in warmup_inputs(inputs)}
            session.run(None, feed)
        except SignatureError as exc:
            raise _LoadError(f"warm-up failed: {exc}") from None
        except Exception as exc:
            raise _LoadError(f"warm-up failed: {_clip(exc)}") from None
        return LoadedModel(
            deployment,
            session,
            inputs,
            outputs,
            tuple(str(p) for p in session.get_providers()),
            loaded_s - started,
            time.perf_counter() - loaded_s,
        )

    def _loaded(
        self, name: str, load_id: int, deployment: Deployment, future: asyncio.Future[LoadedModel]
    ) -> None:
        """On the loop: keep the result if the replica still wants this very load."""
        replica = self._replicas.get(name)
        if replica is None or replica.load_id != load_id or future.cancelled() or self._closed:
            self._count("loads_discarded")
            return
        replica.loading = False
        exc = future.exception()
        if exc is not None:
            replica.error = str(exc) if isinstance(exc, _LoadError) else f"load failed: {_clip(exc)}"
            if replica.serving is not None:
                log.warning(
                    "replica %s: dropping the old version %s too", name, _label(replica.serving.deployment)
                )
            replica.serving = None
            self._count("load_failures")
            log.warning("replica %s: model %s failed: %s", name, _label(deployment), replica.error)
            if self._on_failed is not None:
                self._on_failed(name, deployment, replica.error)
            return
        model = future.result()
        old, replica.serving, replica.wanted = replica.serving, model, None
        log.info(
            "replica %s: model %s ready (%s; load %.1f ms, warm-up %.1f ms)%s",
            name,
            _label(deployment),
            ", ".join(model.providers),
            model.load_s * 1000,
            model.warmup_s * 1000,
            f", replacing {_label(old.deployment)}" if old is not None else "",
        )

    async def close(self) -> None:
        """Unload everything and stop the loader (a run under way on a lane's thread ends on its
        own: it holds its session)."""
        self._closed = True
        self._replicas.clear()
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _count(self, key: str) -> None:
        with self._counting:  # inference threads count too
            self.counters[key] = self.counters.get(key, 0) + 1


class _LoadError(Exception):
    """A load or warm-up that failed; the message is what the replica's error shows."""


def _label(deployment: Deployment) -> str:
    return f"{deployment.model_name} {deployment.model_version} ({deployment.artifact_sha256[:12]})"


def _clip(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 3] + "..."


def zeros_like_signature(model: LoadedModel) -> dict[str, np.ndarray[Any, Any]]:
    """A request of zeros that fits `model` (dynamic dims 1): tests and benchmarks use it."""
    import numpy as np

    return {w.name: np.zeros(w.shape, dtype=w.dtype) for w in warmup_inputs(model.inputs)}
