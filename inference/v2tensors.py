"""Tensors of the Open Inference Protocol (KServe v2) to and from numpy arrays (sans-IO).

A tensor arrives as JSON (`data`, flat or nested, row-major) or as raw bytes after the
JSON header (the binary tensor data extension: little-endian, row-major, no padding; a
BOOL is one byte; a BYTES element is a 4-byte little-endian length then its bytes). Both
come from untrusted clients, so every count is checked before memory is spent on it: the
shape's rank and dimensions, the element count against `CodecLimits.elements_max`, each
JSON element's type against the datatype (numpy would otherwise turn "1" into 1 and 1.5
into 1 without a word), and each integer against its datatype's range.

Errors are `TensorError`, whose message names the tensor; the HTTP layer answers them
with 400 and the protocol's `{"error": "..."}`.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.v2types import DATATYPE_OF_DTYPE_NAME, DEFAULT_LIMITS, CodecLimits

Array = npt.NDArray[Any]

# The protocol's datatypes, as little-endian numpy dtypes (BYTES: an object array of bytes).
DATATYPES: dict[str, np.dtype[Any]] = {
    v2: np.dtype(name).newbyteorder("<") for name, v2 in DATATYPE_OF_DTYPE_NAME.items()
} | {"BYTES": np.dtype(object)}
_LENGTH = struct.Struct("<I")


class TensorError(ValueError):
    """A tensor that is not what the protocol or the limits allow; the message names it."""


def element_count(shape: tuple[int, ...]) -> int:
    """The number of elements a tensor of `shape` holds."""
    return math.prod(shape)


def parse_shape(name: str, value: Any, limits: CodecLimits = DEFAULT_LIMITS) -> tuple[int, ...]:
    """A request's `shape` (a list of non-negative integers) within the limits."""
    if not isinstance(value, list) or len(value) > limits.rank_max:
        raise TensorError(f"tensor {name!r}: shape must be a list of at most {limits.rank_max} dimensions")
    if any(type(d) is not int or d < 0 for d in value):
        raise TensorError(f"tensor {name!r}: shape must hold non-negative integers, got {_short(value)}")
    # Each dimension is checked first, so the product of a hostile shape stays small.
    if any(d > limits.elements_max for d in value) or element_count(tuple(value)) > limits.elements_max:
        raise TensorError(
            f"tensor {name!r}: shape {_short(value)} holds more than {limits.elements_max} elements"
        )
    return tuple(value)


def datatype_dtype(name: str, datatype: Any) -> np.dtype[Any]:
    """The numpy dtype of a protocol datatype; TensorError names the known ones."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise TensorError(
            f"tensor {name!r}: datatype {_short(datatype)} is not one of {', '.join(DATATYPES)}"
        )
    return DATATYPES[datatype]


def datatype_of(name: str, array: Array) -> str:
    """The protocol datatype of a numpy array (a model's output)."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return "BOOL"
    if kind in "uif" and size in ((2, 4, 8) if kind == "f" else (1, 2, 4, 8)):
        return {"u": "UINT", "i": "INT", "f": "FP"}[kind] + str(8 * size)
    if kind in "OSU":
        return "BYTES"
    raise TensorError(f"tensor {name!r}: numpy dtype {array.dtype} has no protocol datatype")


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Array:
    """A tensor from its JSON `data` (flat or nested as the shape), checked element by element."""
    dtype = datatype_dtype(name, datatype)
    count = element_count(shape)
    flat = _flatten(name, data, count)
    types = set(map(type, flat))  # one pass in C: the per-element checks below test this set
    if len(flat) != count:
        raise TensorError(
            f"tensor {name!r}: shape {list(shape)} needs {count} elements, data has {len(flat)}"
        )
    if datatype == "BYTES":
        if not types <= {str}:
            raise TensorError(f"tensor {name!r}: BYTES data must be strings")
        array = np.empty(count, dtype=object)
        array[:] = [x.encode("utf-8", errors="surrogatepass") for x in flat]
        return array.reshape(shape)
    if datatype == "BOOL":
        ok = types <= {bool}
    elif dtype.kind == "f":
        ok = types <= {int, float}
    else:
        ok = types <= {int}
    if not ok:
        wanted = {"b": "true or false", "f": "numbers"}.get(dtype.kind, "integers")
        raise TensorError(f"tensor {name!r}: {datatype} data must be {wanted}")
    try:
        with np.errstate(over="ignore"):  # a float too large for FP16/FP32 becomes inf: refused below
            array = np.array(flat, dtype=dtype).reshape(shape)
    except OverflowError:
        raise TensorError(f"tensor {name!r}: a value is out of the range of {datatype}") from None
    if dtype.kind == "f" and not bool(np.isfinite(array).all()):
        raise TensorError(f"tensor {name!r}: a value is out of the range of {datatype}")
    return array


def from_binary(name: str, datatype: str, shape: tuple[int, ...], raw: bytes, limits: CodecLimits) -> Array:
    """A tensor from its raw little-endian bytes (the binary tensor data extension)."""
    dtype = datatype_dtype(name, datatype)
    count = element_count(shape)
    if datatype != "BYTES":
        if len(raw) != count * dtype.itemsize:
            raise TensorError(
                f"tensor {name!r}: binary_data_size is {len(raw)} bytes, but shape {list(shape)} of "
                f"{datatype} needs {count * dtype.itemsize}"
            )
        if datatype == "BOOL" and raw.translate(None, b"\x00\x01"):
            raise TensorError(f"tensor {name!r}: BOOL binary data must be bytes 0 or 1")
        # A copy: the request's buffer is not kept alive by the array, and the array is writable.
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(elements) == count or offset + _LENGTH.size > len(raw):
            raise TensorError(
                f"tensor {name!r}: BYTES data holds more than the {count} elements of its shape"
            )
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if size > limits.bytes_element_max_bytes or offset + size > len(raw):
            raise TensorError(
                f"tensor {name!r}: BYTES element {len(elements)} claims {size} bytes; "
                f"{len(raw) - offset} remain (limit {limits.bytes_element_max_bytes})"
            )
        elements.append(bytes(raw[offset : offset + size]))
        offset += size
    if len(elements) != count:
        raise TensorError(
            f"tensor {name!r}: shape {list(shape)} needs {count} elements, data has {len(elements)}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def to_json(name: str, array: Array) -> list[Any]:
    """A tensor's flat row-major JSON `data`. NaN, infinity and BYTES that are not UTF-8 cannot
    be JSON: TensorError says to ask for the output as binary data."""
    datatype = datatype_of(name, array)
    flat = array.ravel()
    if datatype == "BYTES":
        try:
            return [_as_bytes(x).decode("utf-8") for x in flat]
        except UnicodeDecodeError:
            raise TensorError(
                f"tensor {name!r}: BYTES that are not UTF-8 cannot be JSON; ask for it with binary_data"
            ) from None
    if array.dtype.kind == "f" and not bool(np.isfinite(flat).all()):
        raise TensorError(f"tensor {name!r}: NaN or infinity cannot be JSON; ask for it with binary_data")
    data: list[Any] = flat.tolist()
    return data


def to_binary(name: str, array: Array) -> bytes:
    """A tensor's raw little-endian row-major bytes."""
    datatype = datatype_of(name, array)
    if datatype == "BYTES":
        parts: list[bytes] = []
        for x in array.ravel():
            element = _as_bytes(x)
            parts += (_LENGTH.pack(len(element)), element)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", errors="surrogatepass")


def _flatten(name: str, data: Any, count_max: int) -> list[Any]:
    """Nested lists to one flat list, iteratively (the JSON loader has bounded the depth)."""
    if not isinstance(data, list):
        raise TensorError(f"tensor {name!r}: data must be a list")
    if list not in set(map(type, data)):  # flat already (the usual form): checked in one C pass
        if len(data) > count_max:
            raise TensorError(f"tensor {name!r}: data holds more than the {count_max} elements of its shape")
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
            if len(flat) > count_max:
                raise TensorError(
                    f"tensor {name!r}: data holds more than the {count_max} elements of its shape"
                )
        else:
            stack.pop()
    return flat


def _short(value: Any, max_chars: int = 40) -> str:
    """A few characters of an untrusted value, for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long for str() (Python's int_max_str_digits)
        return "(a value too long to show)"
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
