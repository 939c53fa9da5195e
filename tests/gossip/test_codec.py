"""Wire codec: round trips, limits, and hostile input never raising."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import codec

ids = st.text(min_size=1, max_size=codec.ID_MAX_CHARS)
addrs = st.text(max_size=codec.ADDR_MAX_CHARS)
u64 = st.integers(min_value=0, max_value=codec.U64_MAX)
small_bytes = st.binary(max_size=64)
incarnations = st.integers(min_value=0, max_value=codec.INCARNATION_MAX)
signatures = st.one_of(
    st.just(b""), st.binary(min_size=codec.SIGNATURE_BYTES, max_size=codec.SIGNATURE_BYTES)
)

summaries = st.builds(
    codec.Summary,
    region=st.text(max_size=codec.REGION_MAX_CHARS),
    version=u64,
    author_id=ids,
    alive=u64,
    gateways=st.lists(st.tuples(ids, addrs), max_size=3).map(tuple),
    api_addrs=st.lists(addrs, max_size=3).map(tuple),
)

datagram_messages = st.one_of(
    st.builds(codec.Ping, u64, ids, ids),
    st.builds(codec.IndirectPing, u64, ids, addrs, ids, st.booleans()),
    st.builds(codec.Ack, u64),
    st.builds(codec.Nack, u64),
    st.builds(codec.Alive, incarnations, ids, addrs, small_bytes, signatures),
    st.builds(codec.Suspect, incarnations, ids, ids),
    st.builds(
        codec.Suspect,
        incarnations,
        ids,
        ids,
        st.lists(ids, max_size=codec.REFUSERS_PER_SUSPECT_MAX).map(tuple),
        st.booleans(),
    ),
    st.builds(codec.Dead, incarnations, ids, ids),
    st.builds(codec.UserBroadcast, ids, u64, small_bytes),
    st.builds(codec.AppMessage, st.integers(0, codec.APP_CHANNEL_MAX), ids, small_bytes),
    summaries,
)

push_pulls = st.builds(
    codec.PushPull,
    pool=st.sampled_from([codec.POOL_REGION, codec.POOL_FLEET]),
    region=st.text(max_size=codec.REGION_MAX_CHARS),
    join=st.booleans(),
    states=st.lists(
        st.builds(codec.MemberEntry, ids, addrs, small_bytes, incarnations, st.integers(0, 3), signatures),
        max_size=5,
    ).map(tuple),
    summaries=st.lists(summaries, max_size=3).map(tuple),
)


@given(st.lists(datagram_messages, max_size=3), st.text(max_size=16))
def test_packet_round_trip(messages: list[codec.Message], region: str) -> None:
    data = codec.encode_packet(codec.POOL_FLEET, region, [codec.encode_message(m) for m in messages])
    packet = codec.decode_packet(data, max_bytes=1 << 20)
    assert packet.pool == codec.POOL_FLEET
    assert packet.region == region
    assert list(packet.messages) == messages
    assert packet.unknown == packet.invalid == 0


@given(push_pulls)
def test_frame_round_trip(m: codec.PushPull) -> None:
    assert codec.decode_frame(codec.encode_frame(m), max_bytes=1 << 20) == m


@settings(max_examples=500)
@given(st.binary(max_size=1500))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    for attempt in (data, bytes([codec.WIRE_VERSION]) + data):
        with contextlib.suppress(codec.DecodeError):
            codec.decode_packet(attempt)
        with contextlib.suppress(codec.DecodeError):
            codec.decode_frame(attempt, max_bytes=1 << 20)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
        lambda kids: st.lists(kids, max_size=6),
        max_leaves=30,
    )
)
def test_well_formed_msgpack_of_any_shape_never_raises(obj: object) -> None:
    data = bytes([codec.WIRE_VERSION]) + msgpack.packb(obj, use_bin_type=True)
    with contextlib.suppress(codec.DecodeError):
        codec.decode_packet(data)
    with contextlib.suppress(codec.DecodeError):
        codec.decode_frame(data, max_bytes=1 << 20)


def _reason(data: bytes) -> str:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode_packet(data)
    return info.value.reason


def test_rejections_name_their_reason() -> None:
    ping = codec.encode_message(codec.Ping(1, "a", "b"))
    good = codec.encode_packet(codec.POOL_REGION, "r", [ping])
    assert _reason(b"") == "empty"
    assert _reason(b"\x09" + good[1:]) == "bad_version"
    assert _reason(good[:-2]) == "malformed"
    assert _reason(good + b"\x00" * 1400) == "oversized"
    bad_pool = b"\x01" + msgpack.packb([7, "r", []])
    assert _reason(bad_pool) == "bad_pool"


def test_one_bad_message_does_not_hide_the_good_ones() -> None:
    good = codec.encode_message(codec.Ack(5))
    wrong_type = msgpack.packb([3, "not-an-int"])
    unknown = msgpack.packb([99, 1, 2])
    bool_for_int = msgpack.packb([3, True])
    packet = codec.decode_packet(codec.encode_packet(0, "r", [good, wrong_type, unknown, bool_for_int, good]))
    assert packet.messages == (codec.Ack(5), codec.Ack(5))
    assert packet.unknown == 1
    assert packet.invalid == 2


def test_push_pull_is_not_accepted_in_a_datagram() -> None:
    pp = codec.encode_message(codec.PushPull(0, "r", False, (), ()))
    packet = codec.decode_packet(codec.encode_packet(0, "r", [pp]))
    assert packet.messages == () and packet.invalid == 1


def test_unknown_trailing_fields_are_tolerated() -> None:
    newer = msgpack.packb([3, 7, "a field from the future"])
    packet = codec.decode_packet(codec.encode_packet(0, "r", [newer]))
    assert packet.messages == (codec.Ack(7),)


def test_limits_on_strings_and_payloads() -> None:
    long_id = msgpack.packb([1, 1, "x" * (codec.ID_MAX_CHARS + 1), "b"])
    big_meta = msgpack.packb([5, 1, "a", "h:1", b"m" * 300], use_bin_type=True)
    packet = codec.decode_packet(codec.encode_packet(0, "r", [long_id, big_meta]), meta_max_bytes=256)
    assert packet.messages == () and packet.invalid == 2


@given(st.integers(min_value=codec.INCARNATION_MAX + 1, max_value=codec.U64_MAX), st.sampled_from([5, 6, 7]))
def test_incarnations_above_the_bound_are_refused(incarnation: int, code: int) -> None:
    """Dead(2**64-1) once killed a node for good: no such value gets past the decoder."""
    fields = [code, incarnation, "victim", "a:1", b""] if code == 5 else [code, incarnation, "victim", "x"]
    packet = codec.decode_packet(codec.encode_packet(codec.POOL_REGION, "r", [msgpack.packb(fields)]))
    assert packet.messages == () and packet.invalid == 1


def test_a_suspect_without_evidence_is_encoded_as_before() -> None:
    # Peers that predate connection checks read it, and packets keep their size.
    assert codec.encode_message(codec.Suspect(3, "b", "a")) == msgpack.packb(
        [codec.MsgType.SUSPECT, 3, "b", "a"]
    )


def test_suspect_evidence_is_bounded_and_newer_fields_are_skipped() -> None:
    code = codec.MsgType.SUSPECT
    newer = msgpack.packb([code, 3, "b", "a", ["c", "d"], True, "a field from the future"])
    packet = codec.decode_packet(codec.encode_packet(0, "r", [newer]))
    assert packet.messages == (codec.Suspect(3, "b", "a", ("c", "d"), True),)
    # A newer peer may name more witnesses; we keep the first few.
    many = msgpack.packb([code, 3, "b", "a", [f"w{i}" for i in range(16)], False])
    packet = codec.decode_packet(codec.encode_packet(0, "r", [many]))
    assert packet.messages[0].refused_by == tuple(f"w{i}" for i in range(codec.REFUSERS_PER_SUSPECT_MAX))
    too_many = msgpack.packb([code, 3, "b", "a", [f"w{i}" for i in range(17)], False])
    packet = codec.decode_packet(codec.encode_packet(0, "r", [too_many]))
    assert packet.messages == () and packet.invalid == 1
