"""A model's input signature, as the model host reads it from onnxruntime, and what follows from it.

Pure helpers for mesh/service/modelhost.py (the driver that holds the onnxruntime sessions):

- `tensor_spec`: one input or output of a model (name, element type, shape with
  dynamic dimensions as None) from what onnxruntime reports (`NodeArg.type`,
  `NodeArg.shape`: ints, or names and None for dynamic dimensions);
- `warmup_inputs`: the input a replica's warm-up inference uses, generated from the
  signature alone (every dynamic dimension 1), so any model the host loads is run once
  before it is called ready;
- `input_problem`: why a request's tensors do not fit the signature (the message names
  the tensor), so a wrong name, dtype or shape is refused before onnxruntime sees it;
- `session_providers`: which execution providers a session asks for, given the node's
  and the manifest's accelerator.

Element types are numpy's names (`float32`), so the driver makes arrays with
`numpy.dtype(name)` and compares `array.dtype.name`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from inference.resources import provides_accelerator

CPU_PROVIDER = "CPUExecutionProvider"
# ONNX tensor element types (onnxruntime's `tensor(...)` names) -> numpy dtype names. Strings
# and the float8 family are left out: a warm-up cannot generate them, so such a model fails
# its warm-up with a message naming the input.
ELEMENT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}
DIM_MAX = 1 << 31  # a fixed dimension above this is not a real model's (and no warm-up could fit it)
WARMUP_ELEMENTS_MAX = 64 * 1024 * 1024  # a warm-up input larger than this (256 MiB of float32) is refused


class SignatureError(ValueError):
    """A model whose signature the host cannot serve; the message names the tensor."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output: `dtype` is numpy's name (None: not a tensor type we serve);
    `shape` has None for each dynamic dimension (None altogether: rank unknown)."""

    name: str
    onnx_type: str
    dtype: str | None
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        """`float32[batch?, 3, 128]`-style text for error messages and metadata."""
        dims = "?" if self.shape is None else ", ".join("-1" if d is None else str(d) for d in self.shape)
        return f"{self.dtype or self.onnx_type}[{dims}]"


@dataclass(frozen=True, slots=True)
class WarmupInput:
    """One tensor of a warm-up inference: fill it with zeros of this dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def tensor_spec(name: str, onnx_type: str, shape: Sequence[object] | None) -> TensorSpec:
    """A spec from onnxruntime's NodeArg fields: int dims stay, anything else (a symbolic
    name, None, a negative int) is dynamic."""
    dims: tuple[int | None, ...] | None = None
    if shape is not None:
        dims = tuple(d if type(d) is int and 0 <= d <= DIM_MAX else None for d in shape)
    return TensorSpec(name, onnx_type, ELEMENT_TYPES.get(onnx_type), dims)


def warmup_inputs(inputs: Iterable[TensorSpec]) -> list[WarmupInput]:
    """The warm-up request: every input, dynamic dims as 1; SignatureError names an input
    that cannot be generated (not a numeric tensor, unknown rank, too large)."""
    out: list[WarmupInput] = []
    for spec in inputs:
        if spec.dtype is None:
            raise SignatureError(
                f"input {spec.name!r}: type {spec.onnx_type} cannot be generated for the warm-up; "
                f"serve models whose inputs are numeric tensors ({', '.join(sorted(ELEMENT_TYPES))})"
            )
        if spec.shape is None:
            raise SignatureError(f"input {spec.name!r}: its rank is unknown; export the model with a shape")
        shape = tuple(1 if d is None else d for d in spec.shape)
        elements = 1
        for d in shape:
            elements *= d
        if elements > WARMUP_ELEMENTS_MAX:
            raise SignatureError(
                f"input {spec.name!r}: {spec.describe()} is {elements} elements, over the "
                f"{WARMUP_ELEMENTS_MAX} a warm-up may use"
            )
        out.append(WarmupInput(spec.name, spec.dtype, shape))
    return out


def input_problem(
    inputs: Sequence[TensorSpec], given: Mapping[str, tuple[str, tuple[int, ...]]]
) -> tuple[str, str] | None:
    """Why `given` (tensor name -> (dtype name, shape)) does not fit the model's inputs, as
    (tensor name, message); None if it fits. Every input is required, no other is allowed."""
    wanted = {spec.name: spec for spec in inputs}
    for name in sorted(given):
        if name not in wanted:
            expected = ", ".join(repr(s.name) for s in inputs)
            return name, f"input {name[:64]!r}: the model has no such input (its inputs: {expected})"
    for spec in inputs:
        if spec.name not in given:
            return spec.name, f"input {spec.name!r}: missing (expected {spec.describe()})"
        dtype, shape = given[spec.name]
        if spec.dtype is not None and dtype != spec.dtype:
            return spec.name, f"input {spec.name!r}: datatype {dtype}, expected {spec.describe()}"
        if spec.shape is None:
            continue
        if len(shape) != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(shape, spec.shape, strict=True)
        ):
            got_text = ", ".join(str(d) for d in shape)
            return spec.name, f"input {spec.name!r}: shape [{got_text}], expected {spec.describe()}"
    return None


def session_providers(available: Sequence[str], accelerator: str | None) -> list[str]:
    """The providers a session asks for, best first: the node's providers that are the
    manifest's accelerator (placement put the replica on a node that has one), then the CPU
    (always present, and onnxruntime's fallback for operators an accelerator lacks)."""
    chosen: list[str] = []
    if accelerator is not None:
        chosen = [p for p in available if p != CPU_PROVIDER and provides_accelerator([p], accelerator)]
    return [*chosen, CPU_PROVIDER]
