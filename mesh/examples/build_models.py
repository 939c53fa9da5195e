"""Build the example models (mesh/examples/models/) from fixed seeds, byte for byte.

    python -m mesh.examples.build_models --out DIR

writes three small ONNX models (opset 17, IR version 8, weights from
`numpy.random.default_rng(seed)`) and their manifests into DIR. The files in the
package are this command's output: tests/mesh/test_example_models.py rebuilds them and
compares the bytes. Needs the `onnx` package (the dev extra: pip install -e '.[dev]').

- vibration-anomaly: a 1-D conv autoencoder over 3-axis windows, input `window`
  float32 [batch, 3, 128], output `score` [batch, 1] (mean squared reconstruction error);
- image-classifier: a small CNN, input `image` float32 [batch, 3, 32, 32], output
  `probabilities` [batch, 10];
- tabular-mlp: an MLP, input `features` float32 [batch, 16], output `probabilities` [batch, 2].
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17  # onnxruntime 1.17 (the oldest this project supports) runs opset 17 fully
IR_VERSION = 8  # what onnx writes for opset 17; pinned so a newer onnx writes the same bytes
PRODUCER = "murmuration-examples"
MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True, slots=True)
class ExampleModel:
    """One example: its deployment name, model version, seed and what it is."""

    name: str
    version: str
    seed: int
    summary: str


EXAMPLES = (
    ExampleModel("vibration-anomaly", "1.0.0", 11, "1-D conv autoencoder, 3-axis windows -> anomaly score"),
    ExampleModel("image-classifier", "1.0.0", 12, "small CNN, 3x32x32 image -> 10 class probabilities"),
    ExampleModel("tabular-mlp", "1.0.0", 13, "MLP, 16 features -> 2 class probabilities"),
)


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray[Any, Any]:
    # He initialisation: activations keep their scale through the ReLUs, so scores are not all 0.
    weights: np.ndarray[Any, Any] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return weights


def _bias(rng: np.random.Generator, size: int) -> np.ndarray[Any, Any]:
    bias: np.ndarray[Any, Any] = (rng.standard_normal(size) * 0.01).astype(np.float32)
    return bias


def vibration_anomaly(onnx: Any, rng: np.random.Generator) -> Any:
    """Conv1d 3->8->4 (stride 2) down, ConvTranspose 4->8->3 up, score = mean((x - x')^2)."""
    h = onnx.helper
    arr = onnx.numpy_helper.from_array
    inits = [
        arr(_weights(rng, (8, 3, 5), 3 * 5), "enc1.w"),
        arr(_bias(rng, 8), "enc1.b"),
        arr(_weights(rng, (4, 8, 5), 8 * 5), "enc2.w"),
        arr(_bias(rng, 4), "enc2.b"),
        arr(_weights(rng, (4, 8, 4), 4 * 4), "dec1.w"),
        arr(_bias(rng, 8), "dec1.b"),
        arr(_weights(rng, (8, 3, 4), 8 * 4), "dec2.w"),
        arr(_bias(rng, 3), "dec2.b"),
    ]
    down = {"kernel_shape": [5], "strides": [2], "pads": [2, 2]}
    up = {"kernel_shape": [4], "strides": [2], "pads": [1, 1]}
    nodes = [
        h.make_node("Conv", ["window", "enc1.w", "enc1.b"], ["e1"], name="enc1", **down),
        h.make_node("Relu", ["e1"], ["e1r"]),
        h.make_node("Conv", ["e1r", "enc2.w", "enc2.b"], ["e2"], name="enc2", **down),
        h.make_node("Relu", ["e2"], ["code"]),
        h.make_node("ConvTranspose", ["code", "dec1.w", "dec1.b"], ["d1"], name="dec1", **up),
        h.make_node("Relu", ["d1"], ["d1r"]),
        h.make_node("ConvTranspose", ["d1r", "dec2.w", "dec2.b"], ["reconstruction"], name="dec2", **up),
        h.make_node("Sub", ["window", "reconstruction"], ["diff"]),
        h.make_node("Mul", ["diff", "diff"], ["squared"]),
        h.make_node("ReduceMean", ["squared"], ["error"], axes=[1, 2], keepdims=1),
        h.make_node("Flatten", ["error"], ["score"], axis=1),  # [batch, 1, 1] -> [batch, 1]
    ]
    return _graph(
        onnx,
        nodes,
        "vibration_anomaly",
        [("window", ["batch", 3, 128])],
        [("score", ["batch", 1])],
        inits,
    )


def image_classifier(onnx: Any, rng: np.random.Generator) -> Any:
    """Three 3x3 conv blocks (32, 64, 128 channels; max pool after the first two), global
    average pool, a dense layer to 10 logits, softmax."""
    h = onnx.helper
    arr = onnx.numpy_helper.from_array
    inits = [
        arr(_weights(rng, (32, 3, 3, 3), 3 * 9), "conv1.w"),
        arr(_bias(rng, 32), "conv1.b"),
        arr(_weights(rng, (64, 32, 3, 3), 32 * 9), "conv2.w"),
        arr(_bias(rng, 64), "conv2.b"),
        arr(_weights(rng, (128, 64, 3, 3), 64 * 9), "conv3.w"),
        arr(_bias(rng, 128), "conv3.b"),
        arr(_weights(rng, (128, 10), 128), "fc.w"),
        arr(_bias(rng, 10), "fc.b"),
    ]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        h.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], name="conv1", **conv),
        h.make_node("Relu", ["c1"], ["c1r"]),
        h.make_node("MaxPool", ["c1r"], ["p1"], **pool),
        h.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", **conv),
        h.make_node("Relu", ["c2"], ["c2r"]),
        h.make_node("MaxPool", ["c2r"], ["p2"], **pool),
        h.make_node("Conv", ["p2", "conv3.w", "conv3.b"], ["c3"], name="conv3", **conv),
        h.make_node("Relu", ["c3"], ["c3r"]),
        h.make_node("GlobalAveragePool", ["c3r"], ["gap"]),
        h.make_node("Flatten", ["gap"], ["flat"], axis=1),
        h.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc"),
        h.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    return _graph(
        onnx,
        nodes,
        "image_classifier",
        [("image", ["batch", 3, 32, 32])],
        [("probabilities", ["batch", 10])],
        inits,
    )


def tabular_mlp(onnx: Any, rng: np.random.Generator) -> Any:
    """Dense 16 -> 32 -> 16 -> 2 with ReLUs, softmax."""
    h = onnx.helper
    arr = onnx.numpy_helper.from_array
    inits = [
        arr(_weights(rng, (16, 32), 16), "fc1.w"),
        arr(_bias(rng, 32), "fc1.b"),
        arr(_weights(rng, (32, 16), 32), "fc2.w"),
        arr(_bias(rng, 16), "fc2.b"),
        arr(_weights(rng, (16, 2), 16), "fc3.w"),
        arr(_bias(rng, 2), "fc3.b"),
    ]
    nodes = [
        h.make_node("Gemm", ["features", "fc1.w", "fc1.b"], ["h1"], name="fc1"),
        h.make_node("Relu", ["h1"], ["h1r"]),
        h.make_node("Gemm", ["h1r", "fc2.w", "fc2.b"], ["h2"], name="fc2"),
        h.make_node("Relu", ["h2"], ["h2r"]),
        h.make_node("Gemm", ["h2r", "fc3.w", "fc3.b"], ["logits"], name="fc3"),
        h.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    return _graph(
        onnx, nodes, "tabular_mlp", [("features", ["batch", 16])], [("probabilities", ["batch", 2])], inits
    )


def _graph(
    onnx: Any,
    nodes: list[Any],
    name: str,
    inputs: list[tuple[str, list[int | str]]],
    outputs: list[tuple[str, list[int | str]]],
    initializers: list[Any],
) -> Any:
    h = onnx.helper
    float32 = onnx.TensorProto.FLOAT
    graph = h.make_graph(
        nodes,
        name,
        [h.make_tensor_value_info(n, float32, shape) for n, shape in inputs],
        [h.make_tensor_value_info(n, float32, shape) for n, shape in outputs],
        initializers,
    )
    model = h.make_model(
        graph,
        opset_imports=[h.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


BUILDERS: dict[str, Callable[[Any, np.random.Generator], Any]] = {
    "vibration-anomaly": vibration_anomaly,
    "image-classifier": image_classifier,
    "tabular-mlp": tabular_mlp,
}


def model_bytes(example: ExampleModel) -> bytes:
    """The example's .onnx file, built from its seed (ImportError if onnx is missing)."""
    import onnx  # the dev extra: a device never builds models

    model = BUILDERS[example.name](onnx, np.random.default_rng(example.seed))
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def manifest_text(example: ExampleModel, data: bytes) -> str:
    """A manifest murmur deploy accepts: it uploads the file next to it, pinned to its sha256."""
    return (
        f"# {example.summary}. Built by python -m mesh.examples.build_models (docs/models.md).\n"
        f"# murmur deploy uploads the file to the node it asks; sha256 and size_bytes pin it.\n"
        f"name: {example.name}\n"
        f'model: {{name: {example.name}, version: "{example.version}"}}\n'
        f"artifact:\n"
        f"  file: {example.name}.onnx\n"
        f'  sha256: "{hashlib.sha256(data).hexdigest()}"\n'  # quoted: all-digit hex is a YAML int
        f"  size_bytes: {len(data)}\n"
        f"replicas: 1\n"
    )


def build(out: Path) -> list[Path]:
    """Write every example's .onnx and .yaml into `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for example in EXAMPLES:
        data = model_bytes(example)
        model_path = out / f"{example.name}.onnx"
        model_path.write_bytes(data)
        manifest_path = out / f"{example.name}.yaml"
        manifest_path.write_text(manifest_text(example, data), encoding="utf-8")
        written += [model_path, manifest_path]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.examples.build_models",
        description="Rebuild the example ONNX models and their manifests, byte for byte.",
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help=f"directory (default {MODELS_DIR})")
    args = parser.parse_args(argv)
    try:
        written = build(args.out)
    except ImportError as exc:
        print(f"build_models: {exc}; install the dev extra: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
