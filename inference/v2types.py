"""What a node needs of the Open Inference Protocol (KServe v2) before it decodes a tensor, sans-IO
and without numpy: model metadata, the limits on a message, the datatypes by numpy's names, the
error body and the binary extension's header.

The /v2 routes, the model lanes and the model host's adapter import only this at start; the
tensor codec (inference/v2codec.py, inference/v2tensors.py), and numpy with it, is imported by the
first request a node serves from its own replica. An agent that serves no model never loads numpy
(issue 11's footprint, docs/benchmarks.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
DYNAMIC = -1  # a dimension of a model's input that any size fits

# The protocol's fixed-size datatypes by numpy's dtype name (as inference/signatures.py names
# them), in the protocol's order; inference/v2tensors.py makes the little-endian dtypes of them.
# BYTES, an array of Python bytes objects, has no fixed-size dtype: a model's strings are not served.
DATATYPE_OF_DTYPE_NAME = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """What one inference request or response may hold. The defaults fit an edge device: a
    32x32 RGB image batch of 64 is 196,608 elements, far below `elements_max`."""

    body_max_bytes: int = 64 * 1024 * 1024
    elements_max: int = 16 * 1024 * 1024  # per tensor
    rank_max: int = 8
    tensors_max: int = 64  # inputs (or outputs) in one message
    bytes_element_max_bytes: int = 16 * 1024 * 1024  # one BYTES element
    name_max_chars: int = 256  # tensor names, request ids, parameter keys


DEFAULT_LIMITS = CodecLimits()


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model: its name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What `GET /v2/models/{name}` answers; a model host derives it from the model's signature."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }


def error_body(message: str) -> bytes:
    """The protocol's error JSON."""
    return json.dumps({"error": message}).encode()
