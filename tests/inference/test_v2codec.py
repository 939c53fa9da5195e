"""The Open Inference Protocol codec: round trips (JSON and binary tensor data) and bad input."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inference.v2codec import (
    InferRequest,
    RequestedOutput,
    V2Error,
    check_request,
    encode_request,
    encode_response,
    header_length,
    parse_request,
    parse_response,
)
from inference.v2types import CodecLimits, ModelMetadata, TensorSpec, error_body

_NUMERIC = {
    "BOOL": (np.dtype(np.bool_), st.booleans()),
    "UINT8": (np.dtype("<u1"), None),
    "UINT16": (np.dtype("<u2"), None),
    "UINT32": (np.dtype("<u4"), None),
    "UINT64": (np.dtype("<u8"), None),
    "INT8": (np.dtype("<i1"), None),
    "INT16": (np.dtype("<i2"), None),
    "INT32": (np.dtype("<i4"), None),
    "INT64": (np.dtype("<i8"), None),
    "FP16": (np.dtype("<f2"), st.floats(width=16, allow_nan=False, allow_infinity=False)),
    "FP32": (np.dtype("<f4"), st.floats(width=32, allow_nan=False, allow_infinity=False)),
    "FP64": (np.dtype("<f8"), st.floats(allow_nan=False, allow_infinity=False)),
}
_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def _tensor(draw: st.DrawFn, utf8_only: bool) -> np.ndarray[Any, Any]:
    datatype = draw(st.sampled_from([*_NUMERIC, "BYTES"]))
    shape = draw(_SHAPES)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        raw = st.text(max_size=8).map(str.encode) if utf8_only else st.binary(max_size=8)
        array = np.empty(count, dtype=object)
        array[:] = draw(st.lists(raw, min_size=count, max_size=count))
        return array.reshape(shape)
    dtype, elements = _NUMERIC[datatype]
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _tensors(utf8_only: bool) -> st.SearchStrategy[dict[str, np.ndarray[Any, Any]]]:
    return st.dictionaries(st.text(min_size=1, max_size=6), _tensor(utf8_only), min_size=1, max_size=4)


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].shape == b[name].shape
        assert a[name].dtype == b[name].dtype or a[name].dtype.kind == b[name].dtype.kind == "O"
        assert a[name].tolist() == b[name].tolist()


@settings(max_examples=150, deadline=None)
@given(inputs=_tensors(utf8_only=True), request_id=st.none() | st.text(max_size=10))
def test_a_json_request_round_trips(inputs: dict[str, Any], request_id: str | None) -> None:
    body, length = encode_request(inputs, request_id=request_id)
    assert length is None
    request = parse_request(body)
    _same(dict(request.inputs), inputs)
    assert request.request_id == request_id


@settings(max_examples=150, deadline=None)
@given(inputs=_tensors(utf8_only=False))
def test_a_binary_request_round_trips(inputs: dict[str, Any]) -> None:
    body, length = encode_request(inputs, binary=True)
    assert length is not None
    _same(dict(parse_request(body, header_length(str(length), len(body))).inputs), inputs)


@settings(max_examples=100, deadline=None)
@given(outputs=_tensors(utf8_only=True), binary=st.booleans())
def test_a_response_round_trips_and_echoes_the_id(outputs: dict[str, Any], binary: bool) -> None:
    request = InferRequest({}, "req-7", {"binary_data_output": binary})
    body, length = encode_response("m", "3", outputs, request)
    assert (length is not None) == binary
    response = parse_response(body, length)
    assert (response.model_name, response.model_version, response.request_id) == ("m", "3", "req-7")
    _same(dict(response.outputs), outputs)


def test_flat_and_mixed_data_are_read_alike() -> None:
    # A flat list is taken as it is; a list that nests anywhere is flattened.
    for data in ([1, 2, 3, 4], [[1, 2], 3, 4], [[1], [2, [3]], 4]):
        body = json.dumps({"inputs": [{"name": "x", "shape": [4], "datatype": "INT32", "data": data}]})
        assert parse_request(body.encode()).inputs["x"].tolist() == [1, 2, 3, 4]


def test_nested_data_is_read_row_major() -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]}
    ).encode()
    assert parse_request(body).inputs["x"].tolist() == [[1, 2], [3, 4]]


def test_a_response_carries_only_the_requested_outputs_each_as_asked() -> None:
    outputs: dict[str, Any] = {"a": np.arange(3, dtype=np.float32), "b": np.ones(2, dtype=np.int64)}
    request = InferRequest({}, None, {}, (RequestedOutput("b", binary=True),))
    body, length = encode_response("m", None, outputs, request)
    assert length is not None
    header = json.loads(body[:length])
    assert [o["name"] for o in header["outputs"]] == ["b"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert "id" not in header
    assert parse_response(body, length).outputs["b"].tolist() == [1, 1]


def _one(**tensor: Any) -> bytes:
    base: dict[str, Any] = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    base.update(tensor)
    return json.dumps({"inputs": [{k: v for k, v in base.items() if v is not None}]}).encode()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "not valid JSON"),
        (b"[]", "must be an object"),
        (b'{"inputs": []}', "at least one input"),
        (b'{"inputs": [], "bogus": 1}', "unknown field 'bogus'"),
        (b'{"inputs": [{"name": "x"}]}', "tensor 'x': shape"),
        (_one(datatype="FP128"), "'x': datatype 'FP128' is not one of"),
        (_one(shape=[3]), "'x': shape [3] needs 3 elements, data has 2"),
        (_one(shape=[-1]), "'x': shape must hold non-negative"),
        (_one(shape=[2**40, 2**40]), "'x': shape [1099511627776, 1099511627776] holds more than"),
        (_one(shape=[1] * 9), "at most 8 dimensions"),
        (_one(data=["1", "2"]), "'x': FP32 data must be numbers"),
        (_one(datatype="INT8", data=[1, 1000]), "'x': a value is out of the range of INT8"),
        (_one(datatype="INT8", data=[1, 1.5]), "'x': INT8 data must be integers"),
        (_one(datatype="FP16", data=[1, 1e10]), "'x': a value is out of the range of FP16"),
        (_one(datatype="UINT64", data=[0, 2**64]), "'x': a value is out of the range of UINT64"),
        (_one(datatype="BOOL", data=[1, 0]), "'x': BOOL data must be true or false"),
        (_one(datatype="BYTES", data=[1, 2]), "'x': BYTES data must be strings"),
        (_one(datatype="INT8", data=[1, True]), "'x': INT8 data must be integers"),
        (_one(datatype="FP32", data=[1.0, "2"]), "'x': FP32 data must be numbers"),
        (_one(data=[1.0, 2.0, 3.0]), "'x': data holds more than the 2 elements of its shape"),
        (_one(data=[[1.0], 2.0, 3.0]), "'x': data holds more than the 2 elements of its shape"),
        (_one(data=[1.0]), "'x': shape [2] needs 2 elements, data has 1"),
        (_one(shape=[2, 1], data=[[1.0], "2"]), "'x': FP32 data must be numbers"),
        (_one(data=None), "'x': needs data or parameters.binary_data_size"),
        (_one(data=3), "'x': data must be a list"),
        (_one(extra=1), "'x': unknown field 'extra'"),
        (_one(parameters={"k": [1]}), "parameter 'k' must be a string"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [' + b"9" * 5000 + b"]}]}",
            "integer of 5000",
        ),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "NaN"),
        (b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested"),
        (_one(data=[[[[[[[[[[[[1.0]]]]]]]]]]]]), "nested"),
        (
            b'{"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}]}',
            "id must be",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}, '
            b'{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}]}',
            "each used once",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}], "outputs": [7]}',
            "outputs[0]",
        ),
    ],
)
def test_bad_requests_get_an_error_naming_the_problem(body: bytes, needle: str) -> None:
    with pytest.raises(V2Error) as caught:
        parse_request(body)
    assert needle in str(caught.value)


def _binary(
    size: int | str, raw: bytes, datatype: str = "FP32", shape: list[int] | None = None
) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape or [2],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + raw, len(header)


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        (_binary(4, b"\0" * 4), "'x': binary_data_size is 4 bytes, but shape [2] of FP32 needs 8"),
        (_binary(8, b"\0" * 4), "'x': parameters.binary_data_size must be a byte count within the 4"),
        (_binary(8, b"\0" * 12), "4 bytes after the JSON header belong to no tensor"),
        (_binary("8", b"\0" * 8), "parameters.binary_data_size must be a byte count"),
        (_binary(2, b"\x02\x00", "BOOL"), "BOOL binary data must be bytes 0 or 1"),
        (_binary(8, struct.pack("<I", 2**31) + b"abcd", "BYTES", [1]), "claims 2147483648 bytes"),
        (_binary(4, struct.pack("<I", 0), "BYTES", [2]), "needs 2 elements, data has 1"),
        (_binary(8, struct.pack("<I", 0) * 2, "BYTES", [1]), "more than the 1 elements"),
        (_binary(3, b"\0\0\0", "BYTES", [1]), "more than the 1 elements"),
    ],
)
def test_bad_binary_data_gets_an_error_naming_the_tensor(message: tuple[bytes, int], needle: str) -> None:
    body, length = message
    with pytest.raises(V2Error) as caught:
        parse_request(body, length)
    assert needle in str(caught.value)


def test_the_header_length_header_is_checked() -> None:
    assert header_length(None, 10) is None
    assert header_length(" 4 ", 10) == 4
    for bad in ("11", "-1", "x", "9" * 5000):
        with pytest.raises(V2Error, match="Inference-Header-Content-Length"):
            header_length(bad, 10)


def test_the_body_limit_is_enforced_before_parsing() -> None:
    with pytest.raises(V2Error, match="over the limit of 16"):
        parse_request(_one(), limits=CodecLimits(body_max_bytes=16))


def test_more_tensors_than_the_limit_are_refused() -> None:
    inputs = {f"t{i}": np.zeros(1, np.int8) for i in range(3)}
    body, _ = encode_request(inputs)
    with pytest.raises(V2Error, match="at most 2 tensors"):
        parse_request(body, limits=CodecLimits(tensors_max=2))


MODEL = ModelMetadata(
    "vib",
    ("1",),
    "onnxruntime_onnx",
    (TensorSpec("window", "FP32", (-1, 3, 64)),),
    (TensorSpec("score", "FP32", (-1,)),),
)


def _request(
    array: np.ndarray[Any, Any], name: str = "window", outputs: tuple[RequestedOutput, ...] = ()
) -> InferRequest:
    return InferRequest({name: array}, None, {}, outputs)


def test_a_request_that_fits_the_model_passes() -> None:
    check_request(_request(np.zeros((5, 3, 64), np.float32)), MODEL)
    check_request(_request(np.zeros((1, 3, 64), np.float32), outputs=(RequestedOutput("score"),)), MODEL)


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (
            _request(np.zeros((1, 3, 64), np.float64)),
            "input 'window': datatype FP64, but model 'vib' takes FP32",
        ),
        (_request(np.zeros((1, 4, 64), np.float32)), "input 'window': shape [1, 4, 64] does not fit"),
        (_request(np.zeros((3, 64), np.float32)), "input 'window': shape [3, 64] does not fit"),
        (_request(np.zeros(1, np.float32), name="other"), "input 'other': model 'vib' has no such input"),
        (InferRequest({}, None), "input 'window' is missing"),
        (_request(np.zeros((1, 3, 64), np.float32), outputs=(RequestedOutput("nope"),)), "output 'nope'"),
    ],
)
def test_a_request_that_does_not_fit_the_model_names_the_tensor(request_: InferRequest, needle: str) -> None:
    with pytest.raises(V2Error) as caught:
        check_request(request_, MODEL)
    assert needle in str(caught.value)


def test_outputs_json_cannot_hold_are_refused_with_a_fix() -> None:
    request = InferRequest({}, None)
    with pytest.raises(ValueError, match="binary_data"):
        encode_response("m", None, {"y": np.array([np.nan], np.float32)}, request)
    with pytest.raises(ValueError, match="binary_data"):
        encode_response("m", None, {"y": np.array([b"\xff"], dtype=object)}, request)


def test_the_error_body_is_the_protocols_shape() -> None:
    assert json.loads(error_body("input 'x': bad")) == {"error": "input 'x': bad"}


def test_metadata_json_has_the_protocols_fields() -> None:
    assert MODEL.to_json() == {
        "name": "vib",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "window", "datatype": "FP32", "shape": [-1, 3, 64]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }
