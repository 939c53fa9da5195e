"""The benchmark's own models: convolution nets sized to take ~0.2 ms and ~2 ms a run.

Issue 11's throughput targets are for a ~0.2 ms and a ~2 ms model; the example models
(mesh/examples/models/) are much faster than either. These two are built at bench time
with the `onnx` package (the dev extra) from fixed seeds, never downloaded, into a
directory the bench deletes afterwards, each with a manifest `murmur deploy` accepts.
Both take `image` float32 [batch, 3, 32, 32] (the image-classifier's input) and give
`probabilities` [batch, 10]; only their depth and width differ, so one request's bytes
are the same and only the run time changes. The sizes were chosen on the 2-core VM
(onnxruntime, 1 intra-op thread); the bench measures and reports each one's run time.

- conv-small: 3x3 convs 3->64 at 32x32, max pool, 64->128 at 16x16; ~0.2 ms, 0.3 MB.
- conv-large: seven 3x3 convs of 64 channels at 32x32; ~2 ms, 0.9 MB.

Each is also written as `<name>-batched`, the same file deployed with dynamic batching
(`BATCHING_LINE`), so the bench measures the node with and without it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mesh.examples.build_models import ExampleModel, _bias, _graph, _weights, manifest_text  # noqa: E402

INPUT_NAME = "image"
INPUT_SHAPE = (3, 32, 32)


@dataclass(frozen=True, slots=True)
class SizedModel:
    """A conv net: `channels` of each 3x3 conv in turn, `pool_after` the convs followed by a
    2x2 max pool; then global average pool, a dense layer to 10 classes and softmax."""

    example: ExampleModel
    channels: tuple[int, ...]
    pool_after: frozenset[int] = frozenset()


SIZED_MODELS = (
    SizedModel(
        ExampleModel("conv-small", "1.0.0", 21, "bench model, ~0.2 ms a run"), (64, 128), frozenset([0])
    ),
    SizedModel(ExampleModel("conv-large", "1.0.0", 22, "bench model, ~2 ms a run"), (64,) * 7),
)


# Each sized model again, deployed with dynamic batching (the manifest's `batching`): the same
# file under another name, so the bench serves both and compares them with one direct baseline.
BATCHING_LINE = "batching: {max_batch: 8, max_delay_ms: 2}"
BATCHED = {f"{m.example.name}-batched": m.example.name for m in SIZED_MODELS}


def conv_net(onnx: Any, rng: np.random.Generator, model: SizedModel) -> Any:
    """The ONNX model of `model`, weights drawn from `rng`."""
    h = onnx.helper
    arr = onnx.numpy_helper.from_array
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    inits: list[Any] = []
    nodes: list[Any] = []
    previous, x = INPUT_SHAPE[0], INPUT_NAME
    for i, channels in enumerate(model.channels):
        inits += [
            arr(_weights(rng, (channels, previous, 3, 3), previous * 9), f"conv{i}.w"),
            arr(_bias(rng, channels), f"conv{i}.b"),
        ]
        nodes += [
            h.make_node("Conv", [x, f"conv{i}.w", f"conv{i}.b"], [f"c{i}"], name=f"conv{i}", **conv),
            h.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
        if i in model.pool_after:
            nodes.append(h.make_node("MaxPool", [x], [f"p{i}"], **pool))
            x = f"p{i}"
        previous = channels
    inits += [arr(_weights(rng, (previous, 10), previous), "fc.w"), arr(_bias(rng, 10), "fc.b")]
    nodes += [
        h.make_node("GlobalAveragePool", [x], ["gap"]),
        h.make_node("Flatten", ["gap"], ["flat"], axis=1),
        h.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc"),
        h.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    name = model.example.name.replace("-", "_")
    return _graph(
        onnx, nodes, name, [(INPUT_NAME, ["batch", *INPUT_SHAPE])], [("probabilities", ["batch", 10])], inits
    )


def build(out: Path) -> dict[str, Path]:
    """Write each sized model's .onnx and .yaml into `out`; name -> the .onnx path."""
    import onnx  # the dev extra

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for model in SIZED_MODELS:
        example = model.example
        data: bytes = conv_net(onnx, np.random.default_rng(example.seed), model).SerializeToString(
            deterministic=True
        )
        path = out / f"{example.name}.onnx"
        path.write_bytes(data)
        manifest = manifest_text(example, data).replace(
            "python -m mesh.examples.build_models", "bench/sized_models.py"
        )
        (out / f"{example.name}.yaml").write_text(manifest, encoding="utf-8")
        written[example.name] = path
    for batched, name in BATCHED.items():
        data = written[name].read_bytes()
        example = next(m.example for m in SIZED_MODELS if m.example.name == name)
        path = out / f"{batched}.onnx"
        path.write_bytes(data)
        as_batched = ExampleModel(batched, example.version, example.seed, example.summary + ", batched")
        manifest = manifest_text(as_batched, data).replace(
            "python -m mesh.examples.build_models", "bench/sized_models.py"
        )
        (out / f"{batched}.yaml").write_text(manifest + BATCHING_LINE + "\n", encoding="utf-8")
        written[batched] = path
    return written
