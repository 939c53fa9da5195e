"""Inference requests and responses of the Open Inference Protocol (KServe v2 REST), sans-IO.

A request body is JSON:

    {"id": "42", "parameters": {"priority": "critical"},
     "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}],
     "outputs": [{"name": "score", "parameters": {"binary_data": true}}]}

or, with the binary tensor data extension, that JSON header (its length in the HTTP
header `Inference-Header-Content-Length`) followed by the raw bytes of every input whose
`parameters.binary_data_size` says how many, in the order of `inputs`. Responses take
the same two forms. `parse_request` and `parse_response` read them into numpy arrays,
`encode_request` and `encode_response` write them; `check_request` holds a request to a
model's metadata. Every error is a `V2Error` whose message names the tensor or field; the
HTTP layer answers it with 400 and `error_body` (`{"error": "..."}`). The metadata, the
limits and `error_body` live in inference/v2types.py, which needs no numpy: a node imports
this codec only when it serves its first request itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference.documents import DocumentError, DocumentLimits, load_json
from inference.v2tensors import (
    Array,
    TensorError,
    datatype_dtype,
    datatype_of,
    from_binary,
    from_json,
    parse_shape,
    to_binary,
    to_json,
)
from inference.v2types import (
    DEFAULT_LIMITS,
    DYNAMIC,
    HEADER_LENGTH_HEADER,
    CodecLimits,
    ModelMetadata,
    TensorSpec,
)

BINARY_SIZE = "binary_data_size"
_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
_RESPONSE_FIELDS = ("model_name", "model_version", "id", "parameters", "outputs")
_TENSOR_FIELDS = ("name", "shape", "datatype", "parameters", "data")
Scalar = str | int | float | bool


class V2Error(ValueError):
    """A message the protocol or the limits refuse; the message says what and where."""


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asks for; `binary` None follows the request's `binary_data_output`."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    """A parsed request: its inputs by name (in the request's order) and what it asks back."""

    inputs: Mapping[str, Array]
    request_id: str | None = None
    parameters: Mapping[str, Scalar] = field(default_factory=dict)
    outputs: tuple[RequestedOutput, ...] = ()  # empty: every output of the model

    @property
    def binary_output(self) -> bool:
        """Whether outputs not named in `outputs` come back as binary data."""
        return self.parameters.get("binary_data_output") is True


@dataclass(frozen=True, slots=True, eq=False)
class InferResponse:
    """A parsed response (what `murmur infer` and the forwarding tests read)."""

    model_name: str
    model_version: str | None
    request_id: str | None
    outputs: Mapping[str, Array]
    parameters: Mapping[str, Scalar] = field(default_factory=dict)


def header_length(value: str | None, body_bytes: int) -> int | None:
    """The `Inference-Header-Content-Length` header as a length within the body (None if absent)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 20 or int(text) > body_bytes:
        raise V2Error(
            f"{HEADER_LENGTH_HEADER} must be the byte length of the JSON header, at most the body's "
            f"{body_bytes} bytes; got {text[:24]!r}"
        )
    return int(text)


def parse_request(
    body: bytes, json_bytes: int | None = None, limits: CodecLimits = DEFAULT_LIMITS
) -> InferRequest:
    """A request body (`json_bytes`: the Inference-Header-Content-Length, None for all-JSON)."""
    doc, tail = _split(body, json_bytes, limits, _REQUEST_FIELDS)
    inputs = _tensors(doc.get("inputs"), "inputs", tail, limits)
    if not inputs:
        raise V2Error("inputs: a request needs at least one input tensor")
    request_id = _id(doc.get("id"), limits)
    outputs: list[RequestedOutput] = []
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list) or len(raw_outputs) > limits.tensors_max:
        raise V2Error(f"outputs: must be a list of at most {limits.tensors_max} requested outputs")
    for i, entry in enumerate(raw_outputs):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise V2Error(f"outputs[{i}]: must be an object with a name")
        params = _parameters(entry.get("parameters"), f"output {entry['name']!r}", limits)
        binary = params.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise V2Error(f"output {entry['name']!r}: parameters.binary_data must be true or false")
        outputs.append(RequestedOutput(entry["name"], binary))
    return InferRequest(
        inputs, request_id, _parameters(doc.get("parameters"), "request", limits), tuple(outputs)
    )


def parse_response(
    body: bytes, json_bytes: int | None = None, limits: CodecLimits = DEFAULT_LIMITS
) -> InferResponse:
    """A response body, as `parse_request` reads a request."""
    doc, tail = _split(body, json_bytes, limits, _RESPONSE_FIELDS)
    name, version = doc.get("model_name"), doc.get("model_version")
    if not isinstance(name, str) or not (version is None or isinstance(version, str)):
        raise V2Error("model_name must be a string, model_version a string if present")
    outputs = _tensors(doc.get("outputs"), "outputs", tail, limits)
    params = _parameters(doc.get("parameters"), "response", limits)
    return InferResponse(name, version, _id(doc.get("id"), limits), outputs, params)


def check_request(request: InferRequest, model: ModelMetadata) -> None:
    """V2Error, naming the tensor, if the request does not fit the model's inputs and outputs."""
    wanted = {t.name: t for t in model.inputs}
    for name, array in request.inputs.items():
        spec = wanted.get(name)
        if spec is None:
            raise V2Error(
                f"input {name!r}: model {model.name!r} has no such input; it takes {_names(model.inputs)}"
            )
        datatype = datatype_of(name, array)
        if datatype != spec.datatype:
            raise V2Error(
                f"input {name!r}: datatype {datatype}, but model {model.name!r} takes {spec.datatype}"
            )
        if len(array.shape) != len(spec.shape) or any(
            d != DYNAMIC and d != got for d, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise V2Error(
                f"input {name!r}: shape {list(array.shape)} does not fit the model's {list(spec.shape)} "
                "(-1: any size)"
            )
    missing = [t.name for t in model.inputs if t.name not in request.inputs]
    if missing:
        raise V2Error(f"input {missing[0]!r} is missing; model {model.name!r} takes {_names(model.inputs)}")
    known = {t.name for t in model.outputs}
    for out in request.outputs:
        if out.name not in known:
            raise V2Error(
                f"output {out.name!r}: model {model.name!r} has no such output; "
                f"it has {_names(model.outputs)}"
            )


def encode_request(
    inputs: Mapping[str, Array],
    *,
    request_id: str | None = None,
    parameters: Mapping[str, Scalar] | None = None,
    outputs: Sequence[RequestedOutput] = (),
    binary: bool = False,
) -> tuple[bytes, int | None]:
    """A request body and its JSON header's length (None when all JSON): `binary` sends the
    inputs as raw bytes after the header."""
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    tensors, tail = _encode_tensors(inputs, [binary] * len(inputs))
    doc["inputs"] = tensors
    if outputs:
        doc["outputs"] = [
            {"name": o.name, **({"parameters": {"binary_data": o.binary}} if o.binary is not None else {})}
            for o in outputs
        ]
    return _join(doc, tail)


def encode_response(
    model_name: str,
    model_version: str | None,
    outputs: Mapping[str, Array],
    request: InferRequest,
) -> tuple[bytes, int | None]:
    """A response to `request`: the outputs it asked for (all when it named none), each as JSON
    or binary data as it asked, with its id echoed; TensorError if an output cannot be JSON."""
    asked = request.outputs or tuple(RequestedOutput(name) for name in outputs)
    chosen = {o.name: outputs[o.name] for o in asked if o.name in outputs}
    binary = [request.binary_output if o.binary is None else o.binary for o in asked if o.name in outputs]
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request.request_id is not None:
        doc["id"] = request.request_id
    tensors, tail = _encode_tensors(chosen, binary)
    doc["outputs"] = tensors
    return _join(doc, tail)


def _encode_tensors(
    tensors: Mapping[str, Array], binary: Sequence[bool]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    entries: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for (name, array), as_binary in zip(tensors.items(), binary, strict=True):
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype_of(name, array),
        }
        if as_binary:
            raw = to_binary(name, array)
            entry["parameters"] = {BINARY_SIZE: len(raw)}
            tail.append(raw)
        else:
            entry["data"] = to_json(name, array)
        entries.append(entry)
    return entries, tail


def _join(doc: dict[str, Any], tail: list[bytes]) -> tuple[bytes, int | None]:
    header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if not tail:
        return header, None
    return header + b"".join(tail), len(header)


def _split(
    body: bytes, json_bytes: int | None, limits: CodecLimits, fields: tuple[str, ...]
) -> tuple[dict[str, Any], memoryview]:
    """The JSON object at the head of `body` and the binary data after it."""
    if len(body) > limits.body_max_bytes:
        raise V2Error(f"the body is {len(body)} bytes, over the limit of {limits.body_max_bytes}")
    end = len(body) if json_bytes is None else json_bytes
    doc_limits = _document_limits(limits)
    try:
        doc = load_json(body[:end], doc_limits)
    except DocumentError as exc:
        raise V2Error(
            f"the JSON {'header' if json_bytes is not None else 'body'} is refused: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise V2Error("the JSON must be an object")
    unknown = sorted(k for k in doc if k not in fields)
    if unknown:
        raise V2Error(f"unknown field {unknown[0][:40]!r}; the known fields are {', '.join(fields)}")
    return doc, memoryview(body)[end:]


@functools.lru_cache(maxsize=8)
def _document_limits(limits: CodecLimits) -> DocumentLimits:
    """What the JSON of a message under `limits` may hold."""
    return DocumentLimits(
        text_max_bytes=limits.body_max_bytes,
        depth_max=limits.rank_max + 4,  # the object, inputs, one tensor, its data nested by rank
        nodes_max=limits.elements_max + 64 * limits.tensors_max,
        scalar_max_chars=max(limits.bytes_element_max_bytes, limits.name_max_chars),
        int_max_chars=24,  # a UINT64 is 20 digits
    )


def _tensors(entries: Any, where: str, tail: memoryview, limits: CodecLimits) -> dict[str, Array]:
    """The tensors of `inputs` or `outputs`, each from JSON data or its share of `tail`."""
    if not isinstance(entries, list) or len(entries) > limits.tensors_max:
        raise V2Error(f"{where}: must be a list of at most {limits.tensors_max} tensors")
    out: dict[str, Array] = {}
    offset = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise V2Error(f"{where}[{i}]: must be an object with a name")
        name: str = entry["name"]
        if not name or len(name) > limits.name_max_chars or name in out:
            raise V2Error(
                f"{where}[{i}]: names must be 1..{limits.name_max_chars} characters, each used once"
            )
        unknown = sorted(k for k in entry if k not in _TENSOR_FIELDS)
        if unknown:
            raise V2Error(f"tensor {name!r}: unknown field {unknown[0][:40]!r}")
        params = _parameters(entry.get("parameters"), f"tensor {name!r}", limits)
        try:
            shape = parse_shape(name, entry.get("shape"), limits)
            datatype_dtype(name, entry.get("datatype"))
            size = params.get(BINARY_SIZE)
            if size is None:
                if "data" not in entry:
                    raise V2Error(f"tensor {name!r}: needs data or parameters.{BINARY_SIZE}")
                out[name] = from_json(name, entry["datatype"], shape, entry["data"])
                continue
            if "data" in entry:
                raise V2Error(f"tensor {name!r}: has both data and parameters.{BINARY_SIZE}; send one")
            if type(size) is not int or size < 0 or offset + size > len(tail):
                raise V2Error(
                    f"tensor {name!r}: parameters.{BINARY_SIZE} must be a byte count within the "
                    f"{len(tail) - offset} binary bytes left after the JSON header"
                )
            out[name] = from_binary(
                name, entry["datatype"], shape, bytes(tail[offset : offset + size]), limits
            )
            offset += size
        except TensorError as exc:
            raise V2Error(str(exc)) from None
    if offset != len(tail):
        raise V2Error(
            f"{len(tail) - offset} bytes after the JSON header belong to no tensor; "
            f"each binary tensor says its size in parameters.{BINARY_SIZE}"
        )
    return out


def _parameters(value: Any, where: str, limits: CodecLimits) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > limits.tensors_max:
        raise V2Error(f"{where}: parameters must be an object of at most {limits.tensors_max} entries")
    for key, item in value.items():
        if len(key) > limits.name_max_chars or not isinstance(item, str | int | float | bool):
            raise V2Error(f"{where}: parameter {key[:40]!r} must be a string, number or boolean")
    return value


def _id(value: Any, limits: CodecLimits) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > limits.name_max_chars):
        raise V2Error(f"id must be a string of at most {limits.name_max_chars} characters")
    return value


def _names(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(repr(t.name) for t in specs) or "nothing"
