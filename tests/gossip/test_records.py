"""Signed records: canonical signing bytes, signatures, and a codec that only ever raises DecodeError."""

from __future__ import annotations

import contextlib
import dataclasses

import msgpack
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import records
from gossip.codec import U64_MAX, DecodeError
from gossip.records import Record

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))


def signer(seed: bytes = SEED) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed)


def public(sk: nacl.signing.SigningKey) -> bytes:
    return bytes(sk.verify_key)


def sample(**changes: object) -> Record:
    fields: dict[str, object] = {
        "kind": "desired",
        "key": "vibration",
        "version": 7,
        "scope": "fleet",
        "payload": b"replicas: 3",
        "deleted": False,
    }
    fields.update(changes)
    return records.sign_record(signer(), **fields)  # type: ignore[arg-type]


# --- identity and signatures -------------------------------------------------


def test_key_id_is_first_16_hex_of_sha256() -> None:
    import hashlib

    pk = public(signer())
    assert records.key_id(pk) == hashlib.sha256(pk).hexdigest()[:16]
    assert len(records.key_id(pk)) == records.KEY_ID_HEX_CHARS


def test_sign_sets_author_and_verifies() -> None:
    r = sample()
    assert r.author == records.key_id(public(signer()))
    assert len(r.signature) == records.SIGNATURE_BYTES
    assert records.verify_record(r, public(signer()))
    assert r.slot == ("desired", "vibration")


def test_verify_refuses_another_key_even_if_it_signed_the_same_bytes() -> None:
    r = sample()
    assert not records.verify_record(r, public(signer(OTHER_SEED)))
    # The other key's own signature over the same bytes: the author field still names the first key.
    forged = dataclasses.replace(r, signature=signer(OTHER_SEED).sign(records.signing_bytes(r)).signature)
    assert not records.verify_record(forged, public(signer(OTHER_SEED)))


@pytest.mark.parametrize("bad_key", [b"", b"\x00" * 31, b"\x00" * 33, b"\xff" * 32])
def test_verify_never_raises_on_bad_public_keys(bad_key: bytes) -> None:
    assert not records.verify_record(sample(), bad_key)


def test_signing_bytes_are_domain_separated_and_injective() -> None:
    a = records.signing_bytes(sample(key="ab", scope="fleet"))
    b = records.signing_bytes(sample(key="a", scope="bfleet"))
    assert a.startswith(records.SIGNING_DOMAIN)
    assert a != b  # length prefixes: moving a byte between fields changes the bytes
    assert records.signing_bytes(sample(deleted=True, payload=b"")) != records.signing_bytes(
        sample(payload=b"")
    )


def test_ed25519_signature_over_signing_bytes() -> None:
    r = sample()
    signer().verify_key.verify(records.signing_bytes(r), r.signature)  # raises if not


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": ""},
        {"kind": "x" * (records.KIND_MAX_CHARS + 1)},
        {"key": ""},
        {"key": "k" * (records.KEY_MAX_CHARS + 1)},
        {"version": -1},
        {"version": U64_MAX + 1},
        {"version": True},
        {"scope": "s" * (records.SCOPE_MAX_CHARS + 1)},
        {"payload": b"x" * (records.PAYLOAD_MAX_BYTES + 1)},
        {"payload": "text"},
        {"deleted": 1},
        {"deleted": True, "payload": b"not empty"},
    ],
)
def test_sign_refuses_invalid_fields(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sample(**changes)


def test_fingerprint_and_content_hash_change_with_any_field() -> None:
    r = sample()
    other = sample(payload=b"replicas: 4")
    assert records.content_hash(r) != records.content_hash(other)
    assert records.fingerprint(r) != records.fingerprint(other)
    assert 0 <= records.fingerprint(r) <= U64_MAX


# --- codec ---------------------------------------------------------------------

kinds = st.sampled_from(["inventory", "desired", "revocation", "trust", "placement", "future-kind"])
texts = st.text(min_size=1, max_size=20)


@st.composite
def signed_records(draw: st.DrawFn) -> Record:
    deleted = draw(st.booleans())
    return records.sign_record(
        nacl.signing.SigningKey(draw(st.binary(min_size=32, max_size=32))),
        kind=draw(kinds),
        key=draw(texts),
        version=draw(st.integers(0, U64_MAX)),
        scope=draw(st.sampled_from(["fleet", "region:a", "region:b"])),
        payload=b"" if deleted else draw(st.binary(max_size=64)),
        deleted=deleted,
    )


@settings(max_examples=100)
@given(signed_records())
def test_encode_decode_round_trip(r: Record) -> None:
    data = records.encode_record(r)
    assert records.decode_record(data) == r
    assert records.encoded_size(r) == len(data)


def test_unknown_kinds_decode_so_newer_peers_can_add_kinds() -> None:
    r = sample(kind="event")
    assert records.decode_record(records.encode_record(r)).kind == "event"


def test_encoded_size_bound_holds_for_the_largest_record() -> None:
    big = records.sign_record(
        signer(),
        kind="k" * records.KIND_MAX_CHARS,
        key="é" * records.KEY_MAX_CHARS,  # 2 bytes each in UTF-8
        version=U64_MAX,
        scope="s" * records.SCOPE_MAX_CHARS,
        payload=b"p" * 1000,
    )
    assert records.encoded_size(big) <= records.max_encoded_bytes(1000)


def _raw(fields: object, version_byte: int = records.RECORD_FORMAT) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes([version_byte]) + packed


def _fields(r: Record) -> list[object]:
    return [r.kind, r.key, r.version, r.author, r.scope, r.payload, r.deleted, r.signature]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x02\x90", "bad_version"),
        (b"\x01\xc1", "malformed"),
        (b"\x01\x90\x90", "malformed"),  # trailing bytes
        (_raw([1, 2, 3]), "bad_arity"),
        (_raw({"kind": "x"}), "malformed"),  # maps are not allowed at all
    ],
)
def test_decode_rejects_bad_framing(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        records.decode_record(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 1),  # kind not a str
        (0, ""),
        (1, b"key"),
        (2, -1),
        (2, 1.5),
        (2, True),
        (3, ""),
        (3, "a" * (records.AUTHOR_MAX_CHARS + 1)),
        (4, None),
        (5, "payload as text"),
        (6, 0),
        (7, b"\x00" * 63),
        (7, b"\x00" * 65),
    ],
)
def test_decode_rejects_each_bad_field(index: int, value: object) -> None:
    fields = _fields(sample())
    fields[index] = value
    with pytest.raises(DecodeError) as info:
        records.decode_record(_raw(fields))
    assert info.value.reason == "bad_field"


def test_decode_rejects_extra_fields_because_they_would_be_unsigned() -> None:
    with pytest.raises(DecodeError) as info:
        records.decode_record(_raw([*_fields(sample()), "extra"]))
    assert info.value.reason == "bad_arity"


def test_decode_rejects_oversized_payload_and_data() -> None:
    fields = _fields(sample())
    fields[5] = b"x" * (records.PAYLOAD_MAX_BYTES + 1)
    with pytest.raises(DecodeError) as info:
        records.decode_record(_raw(fields))
    assert info.value.reason == "oversized"


def test_decode_rejects_a_tombstone_with_payload() -> None:
    fields = _fields(sample())
    fields[6] = True
    with pytest.raises(DecodeError) as info:
        records.decode_record(_raw(fields))
    assert info.value.reason == "bad_field"


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        records.decode_record(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300)
@given(msgpack_values, st.integers(0, 3))
def test_structured_garbage_only_ever_raises_decode_error(value: object, version_byte: int) -> None:
    with contextlib.suppress(DecodeError):
        records.decode_record(bytes([version_byte]) + msgpack.packb(value, use_bin_type=True))


@settings(max_examples=200)
@given(signed_records(), st.data())
def test_mutated_encodings_only_ever_raise_decode_error(r: Record, data: st.DataObject) -> None:
    blob = bytearray(records.encode_record(r))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        records.decode_record(bytes(blob))


# --- digests on the wire ---------------------------------------------------------


def test_digest_round_trip_and_order() -> None:
    digest = {"b" * 16: (3, 99), "a" * 16: (U64_MAX, 0)}
    data = records.encode_digest(digest)
    out = records.decode_digest(data, authors_max=10)
    assert out == digest
    assert list(out) == sorted(digest)


@pytest.mark.parametrize(
    "entries",
    [
        [["a", 1]],  # arity
        [["", 1, 2]],
        [["a", -1, 2]],
        [["a", 1, 2.5]],
        [["a", True, 2]],
        [["a", 1, 2], ["a", 3, 4]],  # duplicate author
        [[f"a{i}", 1, 2] for i in range(11)],  # over authors_max
    ],
)
def test_decode_digest_rejects_bad_entries(entries: list[list[object]]) -> None:
    with pytest.raises(DecodeError):
        records.decode_digest(_raw(entries, records.DIGEST_FORMAT), authors_max=10)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_digest_random_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        records.decode_digest(data, authors_max=100)
