"""The example models (mesh/examples/models/): rebuilt byte for byte from their seeds, each runs
in onnxruntime with a dynamic batch, and each manifest is one murmur deploy accepts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from mesh.cli.manifest import read_manifest
from mesh.examples.build_models import EXAMPLES, MODELS_DIR, ExampleModel, build

SHAPES = {
    "vibration-anomaly": ((3, 128), (1,)),
    "image-classifier": ((3, 32, 32), (10,)),
    "tabular-mlp": ((16,), (2,)),
}


def test_the_shipped_files_are_what_the_builder_writes(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="onnx (the dev extra) rebuilds the models; pip install -e '.[dev]'")
    written = build(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in MODELS_DIR.iterdir() if p.is_file())
    for path in written:
        assert path.read_bytes() == (MODELS_DIR / path.name).read_bytes(), f"{path.name} differs"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_each_model_runs_with_any_batch(example: ExampleModel) -> None:
    name = example.name
    path = MODELS_DIR / f"{name}.onnx"
    assert path.stat().st_size < 1_000_000
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (signature,) = session.get_inputs()
    assert signature.shape[0] == "batch" and signature.type == "tensor(float)"
    item_shape, output_shape = SHAPES[name]
    rng = np.random.default_rng(5)
    for batch in (1, 4):
        x = rng.standard_normal((batch, *item_shape)).astype(np.float32)
        (out,) = session.run(None, {signature.name: x})
        assert out.shape == (batch, *output_shape) and out.dtype == np.float32
        assert np.isfinite(out).all()
        if name != "vibration-anomaly":  # probabilities
            assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
        else:  # a mean squared error
            assert (out >= 0).all()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_each_manifest_names_its_file_with_the_real_sha256(example: ExampleModel) -> None:
    name = example.name
    deployment = read_manifest(MODELS_DIR / f"{name}.yaml")
    data = (MODELS_DIR / f"{name}.onnx").read_bytes()
    assert deployment.name == name and deployment.model_name == name
    assert deployment.artifact_sha256 == hashlib.sha256(data).hexdigest()
    assert deployment.artifact_size_bytes == len(data)
