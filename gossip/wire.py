"""Bounded msgpack primitives shared by every decoder of the gossip layer (sans-IO).

The message codec (gossip/codec.py), the record codec (gossip/records.py) and
the trust codecs decode untrusted bytes with these: one bounded unpack, and
field checks that raise only `DecodeError`, whose `reason` is a counter key.
"""

from __future__ import annotations

from typing import Any

import msgpack

# Every integer on the wire fits an unsigned 64-bit field.
U64_MAX = 2**64 - 1
ID_MAX_CHARS = 64
ADDR_MAX_CHARS = 64


class DecodeError(ValueError):
    """A packet or frame that is not a valid message; `reason` is a short counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unpack_versioned(
    data: bytes, version_byte: int, max_len: int, *, max_array_len: int, max_map_len: int = 0
) -> Any:
    """A version byte then one msgpack object, with every length bounded; raises only DecodeError."""
    if not data:
        raise DecodeError("empty")
    if data[0] != version_byte:
        raise DecodeError("bad_version")
    try:
        return msgpack.unpackb(
            data[1:],
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_len,
            max_bin_len=max_len,
            max_array_len=max_array_len,
            max_map_len=max_map_len,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several types for malformed input
        raise DecodeError("malformed") from exc


def u64(v: Any) -> int:
    if type(v) is not int or v < 0 or v > U64_MAX:
        raise DecodeError("bad_field")
    return v


def text(v: Any, max_chars: int) -> str:
    if type(v) is not str or len(v) > max_chars:
        raise DecodeError("bad_field")
    return v


def ident(v: Any) -> str:
    s = text(v, ID_MAX_CHARS)
    if not s:
        raise DecodeError("bad_field")
    return s


def addr(v: Any) -> str:
    return text(v, ADDR_MAX_CHARS)


def blob(v: Any, max_len: int) -> bytes:
    if type(v) is not bytes or len(v) > max_len:
        raise DecodeError("bad_field")
    return v


def boolean(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError("bad_field")
    return v


def array(v: Any, max_items: int) -> list[Any]:
    if type(v) is not list or len(v) > max_items:
        raise DecodeError("bad_field")
    return v


def arity(f: list[Any], n: int) -> None:
    # Extra trailing fields are allowed (a newer peer may append some); missing ones are not.
    if len(f) < n:
        raise DecodeError("bad_arity")


__all__ = ["ADDR_MAX_CHARS", "ID_MAX_CHARS", "U64_MAX", "DecodeError", "unpack_versioned"]
