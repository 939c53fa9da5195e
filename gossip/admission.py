"""Invites and admission records: who may be a member at all (sans-IO).

An operator lets a device in with an **invite**: the cluster id, an expiry, an
optional region, a nonce and how many devices may use it, signed with the
operator's Ed25519 key. A device holding an invite proves it with an
**admission record**: a record of kind `admission`, keyed by the device's node
id and signed by the device's own key, whose payload carries that public key,
the invite, and the time the device joined.

The record is self-certifying: its key is the id derived from the public key it
carries, so anyone can check that the device holds that key and that an
operator invited it, with no third party and without any clock of its own:

- the invite's signature is a root operator's (`is_root_operator`), over this
  cluster's id (`cluster_id`);
- the invite's region, if it names one, is the record's region;
- the device joined (`admitted_at_s`) no later than the invite expired.

Validity is a pure function of the record and the operator keys, never of the
reader's clock: that keeps every store's decision the same, so stores converge.
The joining device stamps `admitted_at_s` with its own clock; an agent refuses
to start with an invite already expired, and honest peers only ever see
admissions made before the expiry. (A holder of the network key who edits the
agent to lie about its clock could back-date a join: expiry protects against
stale and leaked tokens used by the real agent; revocation and rotating the
network key are the answers to a hostile insider.)

Once admitted, a node stays a member until it is revoked: expiry bounds when an
invite can be used, not how long the devices it let in may stay.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

import msgpack
import nacl.exceptions
import nacl.signing

from gossip.kinds import ADMISSION_KIND
from gossip.records import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Record,
    key_id,
    sign_record,
)
from gossip.wire import U64_MAX, DecodeError, unpack_versioned

INVITE_FORMAT = 1
ADMISSION_FORMAT = 1
INVITE_SIGNING_DOMAIN = b"murmur-invite-v1\x00"
CLUSTER_ID_MAX_CHARS = 64
REGION_MAX_CHARS = 64
NONCE_BYTES = 16
INVITE_MAX_BYTES = 320
ADMISSION_PAYLOAD_MAX_BYTES = 512
VERIFIED_INVITES_KEPT = 64
_INVITE_FIELDS = 7
_ADMISSION_FIELDS = 3

# Why an admission is refused, and what that means: each is a store counter
# "drop_<reason>" and, in words, a logged reason.
REFUSALS: dict[str, str] = {
    "admission_malformed": "the admission record is not readable",
    "admission_key_mismatch": "the admission carries a key or a slot that is not the node's",
    "invite_malformed": "the invite is not readable, or it limits uses without naming a region",
    "invite_unknown_operator": "the invite is signed by a key that is not a root operator key here",
    "invite_forged": "the invite's signature does not verify with the operator's key",
    "invite_other_cluster": "the invite is for another cluster",
    "invite_wrong_region": "the invite is for another region",
    "invite_expired": "the node joined after the invite expired",
    "invite_used_up": "as many devices as the invite allows joined with it earlier",
    "invite_reused": "this device already joined once with this invite of limited uses",
}


class OperatorKeys(Protocol):
    """What checking an invite needs of the trust: the cluster and its root operator keys."""

    @property
    def cluster_id(self) -> str:
        """The id of the cluster this node belongs to."""
        ...

    def is_root_operator(self, author: str) -> bool:
        """True if author is a root operator key: only those sign invites."""
        ...

    def public_key(self, author: str) -> bytes | None:
        """The author's Ed25519 public key, or None."""
        ...


@dataclass(frozen=True, slots=True)
class Invite:
    """An operator's permission for devices to join: `uses` 0 means any number of devices."""

    cluster_id: str
    region: str  # "" = any region
    expires_at_s: int  # Unix time, seconds
    nonce: bytes
    uses: int
    operator: str  # the signing operator's key id
    signature: bytes


def _prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def invite_signing_bytes(invite: Invite) -> bytes:
    """The canonical bytes an invite's signature covers: every field but the signature."""
    return b"".join(
        (
            INVITE_SIGNING_DOMAIN,
            _prefixed(invite.cluster_id.encode()),
            _prefixed(invite.region.encode()),
            struct.pack(">QQ", invite.expires_at_s, invite.uses),
            _prefixed(invite.nonce),
            _prefixed(invite.operator.encode()),
        )
    )


def _invite_field_problem(invite: Invite) -> bool:
    return (
        type(invite.cluster_id) is not str
        or not 0 < len(invite.cluster_id) <= CLUSTER_ID_MAX_CHARS
        or type(invite.region) is not str
        or len(invite.region) > REGION_MAX_CHARS
        or type(invite.expires_at_s) is not int
        or not 0 <= invite.expires_at_s <= U64_MAX
        or type(invite.nonce) is not bytes
        or len(invite.nonce) != NONCE_BYTES
        or type(invite.uses) is not int
        or not 0 <= invite.uses <= U64_MAX
        or type(invite.operator) is not str
        or not 0 < len(invite.operator) <= 64
        or type(invite.signature) is not bytes
        or len(invite.signature) != SIGNATURE_BYTES
    )


def sign_invite(
    operator_key: nacl.signing.SigningKey,
    cluster_id: str,
    *,
    expires_at_s: int,
    nonce: bytes,
    region: str = "",
    uses: int = 0,
) -> Invite:
    """An invite signed by operator_key; raises ValueError on invalid fields."""
    operator = key_id(bytes(operator_key.verify_key))
    unsigned = Invite(cluster_id, region, expires_at_s, nonce, uses, operator, b"\x00" * SIGNATURE_BYTES)
    if uses and not region:
        raise ValueError("an invite of limited uses must name its region (seats are counted per region)")
    if _invite_field_problem(unsigned):
        raise ValueError(
            f"cannot sign invite: cluster id 1-{CLUSTER_ID_MAX_CHARS} chars, region up to "
            f"{REGION_MAX_CHARS}, expiry and uses 0..2^64-1, nonce {NONCE_BYTES} bytes"
        )
    signature = bytes(operator_key.sign(invite_signing_bytes(unsigned)).signature)
    return Invite(cluster_id, region, expires_at_s, nonce, uses, operator, signature)


def encode_invite(invite: Invite) -> bytes:
    """The wire form: INVITE_FORMAT, then a msgpack array of the seven fields."""
    fields = [
        invite.cluster_id,
        invite.region,
        invite.expires_at_s,
        invite.nonce,
        invite.uses,
        invite.operator,
        invite.signature,
    ]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes([INVITE_FORMAT]) + packed


def decode_invite(data: bytes) -> Invite:
    """Decode an invite; raises DecodeError, never anything else. The signature is not checked."""
    if type(data) is not bytes or len(data) > INVITE_MAX_BYTES:
        raise DecodeError("oversized")
    fields = unpack_versioned(data, INVITE_FORMAT, INVITE_MAX_BYTES, max_array_len=2 * _INVITE_FIELDS)
    if type(fields) is not list or len(fields) != _INVITE_FIELDS:
        raise DecodeError("bad_arity")
    invite = Invite(*fields)
    if _invite_field_problem(invite):
        raise DecodeError("bad_field")
    return invite


def invite_problem(
    invite: Invite,
    trust: OperatorKeys,
    *,
    region: str,
    at_s: int,
    verified: dict[bytes, None] | None = None,
) -> str | None:
    """Why a device of `region` joining at `at_s` may not use this invite (a REFUSALS entry), or None.

    `verified`, if given, remembers the signing bytes + signature of invites already
    verified, so a fleet's shared invite costs one signature check, not one per device.
    """
    if not trust.is_root_operator(invite.operator):
        return "invite_unknown_operator"
    if invite.uses and not invite.region:
        # Seats are counted where the admissions live, in one region: an invite of
        # limited uses valid in every region would give `uses` seats in each.
        return "invite_malformed"
    operator_key = trust.public_key(invite.operator)
    if operator_key is None or key_id(operator_key) != invite.operator:
        return "invite_unknown_operator"
    signed = invite_signing_bytes(invite) + invite.signature
    if verified is None or signed not in verified:
        try:
            nacl.signing.VerifyKey(operator_key).verify(invite_signing_bytes(invite), invite.signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return "invite_forged"
        if verified is not None:
            if len(verified) >= VERIFIED_INVITES_KEPT:
                verified.pop(next(iter(verified)))
            verified[signed] = None
    if invite.cluster_id != trust.cluster_id:
        return "invite_other_cluster"
    if invite.region and invite.region != region:
        return "invite_wrong_region"
    if at_s > invite.expires_at_s:
        return "invite_expired"
    return None


# --- admission records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """An admission record's payload: the device's key, its invite, when it joined (Unix s)."""

    public_key: bytes
    invite: Invite
    admitted_at_s: int


def encode_admission(public_key: bytes, invite: Invite, admitted_at_s: int) -> bytes:
    """The payload of an admission record."""
    packed: bytes = msgpack.packb([public_key, encode_invite(invite), admitted_at_s], use_bin_type=True)
    return bytes([ADMISSION_FORMAT]) + packed


def decode_admission(payload: bytes) -> Admission:
    """Decode an admission payload; raises DecodeError, never anything else."""
    if type(payload) is not bytes or len(payload) > ADMISSION_PAYLOAD_MAX_BYTES:
        raise DecodeError("oversized")
    fields = unpack_versioned(payload, ADMISSION_FORMAT, ADMISSION_PAYLOAD_MAX_BYTES, max_array_len=8)
    if type(fields) is not list or len(fields) != _ADMISSION_FIELDS:
        raise DecodeError("bad_arity")
    public_key, invite_blob, admitted_at_s = fields
    if (
        type(public_key) is not bytes
        or len(public_key) != PUBLIC_KEY_BYTES
        or type(invite_blob) is not bytes
        or type(admitted_at_s) is not int
        or not 0 <= admitted_at_s <= U64_MAX
    ):
        raise DecodeError("bad_field")
    return Admission(public_key, decode_invite(invite_blob), admitted_at_s)


def admission_scope(region: str) -> str:
    """The scope of a node's admission record: its region (gossip/state.py's scope names)."""
    return "region:" + region


def make_admission(
    node_key: nacl.signing.SigningKey, invite: Invite, *, region: str, admitted_at_s: int
) -> Record:
    """The admission record of the device holding node_key, signed by it (version 1)."""
    public_key = bytes(node_key.verify_key)
    node_id = key_id(public_key)
    payload = encode_admission(public_key, invite, admitted_at_s)
    return sign_record(node_key, ADMISSION_KIND, node_id, 1, admission_scope(region), payload)


def check_admission(
    r: Record, trust: OperatorKeys, *, verified: dict[bytes, None] | None = None
) -> Admission | str:
    """The admission r proves (its signature still to be checked with admission.public_key),
    or why it is refused (a REFUSALS entry). `verified`: see invite_problem."""
    try:
        admission = decode_admission(r.payload)
    except DecodeError:
        return "invite_malformed" if _invite_part_bad(r.payload) else "admission_malformed"
    if key_id(admission.public_key) != r.author or r.key != r.author:
        return "admission_key_mismatch"
    region = r.scope.removeprefix("region:")
    problem = invite_problem(
        admission.invite, trust, region=region, at_s=admission.admitted_at_s, verified=verified
    )
    return problem if problem is not None else admission


def admission_regions(r: Record) -> tuple[str, str] | None:
    """(the region a node claims, the region its invite names) of an admission record, or None
    if it does not decode: what an `invite_wrong_region` refusal tells the operator."""
    try:
        admission = decode_admission(r.payload)
    except DecodeError:
        return None
    return r.scope.removeprefix("region:"), admission.invite.region


def _invite_part_bad(payload: bytes) -> bool:
    """True if the payload is an admission whose only fault is its invite."""
    try:
        fields = unpack_versioned(payload, ADMISSION_FORMAT, ADMISSION_PAYLOAD_MAX_BYTES, max_array_len=8)
    except DecodeError:
        return False
    return type(fields) is list and len(fields) == _ADMISSION_FIELDS and type(fields[1]) is bytes
