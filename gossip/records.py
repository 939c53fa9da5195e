"""Signed records, the unit of shared state, and their codec (sans-IO).

A record is one versioned value in one slot `(kind, key)`, signed by its author's
Ed25519 key. The signature covers a canonical, length-prefixed encoding of every
other field behind a domain-separation prefix, so it never depends on how msgpack
chooses to encode a value, and a signature made for a record can never be
replayed as a signature over anything else Murmuration signs.

On the wire a record is `RECORD_FORMAT` followed by one msgpack array of exactly
eight fields. Decoding validates every field's type and size and never raises
anything but `gossip.codec.DecodeError`. Unknown kinds decode fine, so newer
peers can add kinds; the state store decides what it accepts. Trailing fields
are refused, unlike in gossip messages: they would be unsigned data.

The module also carries the store's digest (`author -> (version, fingerprint)`,
see gossip/state.py) on the wire, with the same validation rules.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing

from gossip.kinds import DEFAULT_KINDS, REVOCATION_KIND
from gossip.wire import U64_MAX, DecodeError, unpack_versioned

RECORD_FORMAT = 1
DIGEST_FORMAT = 1
SIGNING_DOMAIN = b"murmur-record-v1\x00"

# The kinds this version's store accepts (gossip/kinds.py has their rules); others decode.
KINDS = tuple(DEFAULT_KINDS)

KEY_ID_HEX_CHARS = 16  # same derivation as node ids (mesh/trust/identity.py)
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KIND_MAX_CHARS = 32
KEY_MAX_CHARS = 128
AUTHOR_MAX_CHARS = 64
SCOPE_MAX_CHARS = 72  # "region:" + a 64-character region name, with room to spare
# The codec's absolute ceiling; a store is configured with its own, lower limit.
PAYLOAD_MAX_BYTES = 256 * 1024
# Encoded size of everything but the payload and the strings, at most (header,
# array, string and bin headers, u64, bool, 64-byte signature): generous on purpose.
_FIXED_OVERHEAD_BYTES = 128
_RECORD_FIELDS = 8


@dataclass(frozen=True, slots=True)
class Record:
    """One signed, versioned value in the slot `(kind, key)`; `deleted` makes it a tombstone."""

    kind: str
    key: str
    version: int
    author: str
    scope: str
    payload: bytes
    deleted: bool
    signature: bytes

    @property
    def slot(self) -> tuple[str, str]:
        """The (kind, key) this record is a value of."""
        return (self.kind, self.key)


def key_id(public_key: bytes) -> str:
    """An author's id: the first 16 hex characters of sha256(public key), like a node id."""
    return hashlib.sha256(public_key).hexdigest()[:KEY_ID_HEX_CHARS]


def field_problem(r: Record) -> str | None:
    """Why a record's fields are unusable ("bad_field" or "oversized"), or None if they are fine."""
    if type(r.payload) is not bytes:
        return "bad_field"
    if len(r.payload) > PAYLOAD_MAX_BYTES:
        return "oversized"
    if (
        type(r.kind) is not str
        or not 0 < len(r.kind) <= KIND_MAX_CHARS
        or type(r.key) is not str
        or not 0 < len(r.key) <= KEY_MAX_CHARS
        or type(r.version) is not int
        or not 0 <= r.version <= U64_MAX
        or type(r.author) is not str
        or not 0 < len(r.author) <= AUTHOR_MAX_CHARS
        or type(r.scope) is not str
        or len(r.scope) > SCOPE_MAX_CHARS
        or type(r.deleted) is not bool
        or (r.deleted and r.payload)  # tombstones stay small: they are kept forever
        or type(r.signature) is not bytes
        or len(r.signature) != SIGNATURE_BYTES
    ):
        return "bad_field"
    return None


def _prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def signing_bytes(r: Record) -> bytes:
    """The canonical bytes a record's signature covers: every field but the signature."""
    return b"".join(
        (
            SIGNING_DOMAIN,
            _prefixed(r.kind.encode()),
            _prefixed(r.key.encode()),
            struct.pack(">Q", r.version),
            _prefixed(r.author.encode()),
            _prefixed(r.scope.encode()),
            _prefixed(r.payload),
            b"\x01" if r.deleted else b"\x00",
        )
    )


def content_hash(r: Record) -> bytes:
    """sha256 of the signing bytes: the record's id, and the tie-break between equal versions."""
    return hashlib.sha256(signing_bytes(r)).digest()


def fingerprint(r: Record) -> int:
    """A 64-bit hash of the whole record, signature included; a digest XORs these per author."""
    digest = hashlib.sha256(signing_bytes(r) + r.signature).digest()
    return int.from_bytes(digest[:8], "big")


def sign_record(
    signing_key: nacl.signing.SigningKey,
    kind: str,
    key: str,
    version: int,
    scope: str,
    payload: bytes,
    deleted: bool = False,
) -> Record:
    """A record authored and signed by signing_key; raises ValueError on invalid fields."""
    author = key_id(bytes(signing_key.verify_key))
    unsigned = Record(kind, key, version, author, scope, payload, deleted, b"\x00" * SIGNATURE_BYTES)
    problem = field_problem(unsigned)
    if problem is not None:
        raise ValueError(
            f"cannot sign record {kind!r}/{key!r}: {problem} (kind and key 1-{KIND_MAX_CHARS}/"
            f"{KEY_MAX_CHARS} chars, version 0..2^64-1, payload bytes up to {PAYLOAD_MAX_BYTES}, "
            "deleted a bool, and a tombstone has an empty payload)"
        )
    signature = signing_key.sign(signing_bytes(unsigned)).signature
    return Record(kind, key, version, author, scope, payload, deleted, bytes(signature))


def verify_record(r: Record, public_key: bytes) -> bool:
    """True if public_key is the record's author and its signature is valid; never raises."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    if field_problem(r) is not None or key_id(public_key) != r.author:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(signing_bytes(r), r.signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


# --- codec ---------------------------------------------------------------------


def encode_record(r: Record) -> bytes:
    """The wire form: RECORD_FORMAT, then one msgpack array of the eight fields."""
    fields = [r.kind, r.key, r.version, r.author, r.scope, r.payload, r.deleted, r.signature]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes([RECORD_FORMAT]) + packed


def encoded_size(r: Record) -> int:
    """len(encode_record(r))."""
    return len(encode_record(r))


def max_encoded_bytes(payload_max_bytes: int) -> int:
    """An upper bound on the encoded size of any record whose payload fits payload_max_bytes."""
    # Strings are bounded in characters; UTF-8 takes at most 4 bytes per character.
    strings_bytes = 4 * (KIND_MAX_CHARS + KEY_MAX_CHARS + AUTHOR_MAX_CHARS + SCOPE_MAX_CHARS)
    return _FIXED_OVERHEAD_BYTES + strings_bytes + payload_max_bytes


_RECORD_MAX_BYTES = max_encoded_bytes(PAYLOAD_MAX_BYTES)


def _unpack(data: bytes, format_byte: int, max_bytes: int, max_array_len: int) -> Any:
    if len(data) > max_bytes:
        raise DecodeError("oversized")
    return unpack_versioned(data, format_byte, max_bytes, max_array_len=max_array_len)


def decode_record(data: bytes) -> Record:
    """Decode one record; raises DecodeError (reason: a counter key), never anything else.

    The signature is not checked here: the store verifies it once, on receipt.
    """
    fields = _unpack(data, RECORD_FORMAT, _RECORD_MAX_BYTES, 2 * _RECORD_FIELDS)
    if type(fields) is not list or len(fields) != _RECORD_FIELDS:
        raise DecodeError("bad_arity")
    r = Record(*fields)
    problem = field_problem(r)
    if problem is not None:
        raise DecodeError(problem)
    return r


def revokes(blob: bytes, node_id: str) -> bool:
    """Whether blob decodes to a revocation of node_id (unverified: the store checks its signature)."""
    try:
        r = decode_record(blob)
    except DecodeError:
        return False
    return r.kind == REVOCATION_KIND and r.key == node_id and not r.deleted


# --- digests on the wire -----------------------------------------------------------


def encode_digest(digest: Mapping[str, tuple[int, int]]) -> bytes:
    """DIGEST_FORMAT, then a msgpack array of [author, version, fingerprint], sorted by author."""
    entries = [[author, digest[author][0], digest[author][1]] for author in sorted(digest)]
    packed: bytes = msgpack.packb(entries, use_bin_type=True)
    return bytes([DIGEST_FORMAT]) + packed


def decode_digest(data: bytes, *, authors_max: int) -> dict[str, tuple[int, int]]:
    """Decode a digest of at most authors_max authors; raises DecodeError, never anything else."""
    max_bytes = 1 + 5 + authors_max * (AUTHOR_MAX_CHARS * 4 + 24)
    entries = _unpack(data, DIGEST_FORMAT, max_bytes, max(authors_max, 3))
    if type(entries) is not list:
        raise DecodeError("bad_field")
    out: dict[str, tuple[int, int]] = {}
    for entry in entries:
        if type(entry) is not list or len(entry) != 3:
            raise DecodeError("bad_arity")
        author, version, fp = entry
        if (
            type(author) is not str
            or not 0 < len(author) <= AUTHOR_MAX_CHARS
            or author in out
            or type(version) is not int
            or not 0 <= version <= U64_MAX
            or type(fp) is not int
            or not 0 <= fp <= U64_MAX
        ):
            raise DecodeError("bad_field")
        out[author] = (version, fp)
    return dict(sorted(out.items()))
