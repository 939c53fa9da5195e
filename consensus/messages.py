"""The election's messages and their compact, strictly bounded msgpack encoding (pure).

Every message is one version byte then one msgpack array `[type, era
generation, era founder, term, ...]`. Decoding untrusted bytes raises only
`DecodeError`, whose reason the core counts as a drop (`drop_<reason>`):
oversized payloads, unknown types, wrong shapes, integers over 64 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from consensus.certificate import (
    CERT_MAX_BYTES,
    SIGNATURE_BYTES,
    VOTERS_MAX,
    certificate_head,
    decode_config,
    encode_config,
)
from consensus.config import Era, VoterConfig
from gossip.wire import ID_MAX_CHARS, DecodeError, blob, ident, text, u64, unpack_versioned

VERSION = 0xE1
MESSAGE_MAX_BYTES = 1024  # node/hosted.py: an application payload is at most this


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you vote for me (the sender) in `term`, were I to stand? Nothing is raised or stored."""

    era: Era
    term: int
    config: VoterConfig


@dataclass(frozen=True, slots=True)
class Vote:
    """Vote for me (the sender) in `term` of `era`; `founding`: the config is my founding proposal."""

    era: Era
    term: int
    config: VoterConfig
    founding: bool


@dataclass(frozen=True, slots=True)
class VoteReply:
    """The answer to a PreVote or Vote; a granted real vote carries the voter's signature."""

    era: Era
    term: int
    pre: bool
    granted: bool
    signature: bytes  # b"" unless a real vote was granted


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The leader of `term` to a voter: its config (to store) and, until acknowledged, its certificate."""

    era: Era
    term: int
    sent_s: float  # the leader's clock when it sent this: the ack names it back (the lease)
    config: VoterConfig
    certificate: bytes  # b"" once this voter has acknowledged the term


@dataclass(frozen=True, slots=True)
class Ack:
    """A voter stored what the heartbeat carried: it names the heartbeat and its config."""

    era: Era
    term: int
    sent_s: float
    config_rank: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Announce:
    """Who leads (with proof) and the voter config: to non-voters, and to nodes that lag."""

    era: Era
    term: int
    leader: str  # "" when the sender knows of no leader (a hint that only carries the term)
    config: VoterConfig
    certificate: bytes  # b"" when the sender holds no proof


Message = PreVote | Vote | VoteReply | Heartbeat | Ack | Announce

_PRE_VOTE, _VOTE, _VOTE_REPLY, _HEARTBEAT, _ACK, _ANNOUNCE = 1, 2, 3, 4, 5, 6
_HEARTBEAT_PROVEN, _ANNOUNCE_PROVEN = 7, 8  # the same, with a certificate that names era, term, leader
_MS = 1000.0  # times travel as integer milliseconds


def encode(m: Message) -> bytes:
    """The payload of one message."""
    head = [m.era.generation, m.era.founder, m.term]
    body: list[Any]
    match m:
        case PreVote():
            body = [_PRE_VOTE, *head, encode_config(m.config)]
        case Vote():
            body = [_VOTE, *head, encode_config(m.config), m.founding]
        case VoteReply():
            body = [_VOTE_REPLY, *head, m.pre, m.granted, m.signature]
        case Heartbeat() if m.certificate:
            # Era, term and leader are the certificate's: not repeated (1024 bytes per message).
            body = [_HEARTBEAT_PROVEN, int(m.sent_s * _MS), encode_config(m.config), m.certificate]
        case Heartbeat():
            body = [_HEARTBEAT, *head, int(m.sent_s * _MS), encode_config(m.config)]
        case Ack():
            body = [_ACK, *head, int(m.sent_s * _MS), m.config_rank[0], m.config_rank[1]]
        case Announce() if m.certificate:
            same = certificate_head(m.certificate)[3] == m.config
            body = [_ANNOUNCE_PROVEN, None if same else encode_config(m.config), m.certificate]
        case Announce():
            body = [_ANNOUNCE, *head, m.leader, encode_config(m.config)]
    packed: bytes = msgpack.packb(body)
    return bytes([VERSION]) + packed


def _flag(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError("bad_field")
    return v


def decode(data: bytes) -> Message:
    """One message from untrusted bytes; raises only DecodeError (reason: a counter key)."""
    if len(data) > MESSAGE_MAX_BYTES:
        raise DecodeError("oversized")
    m = unpack_versioned(data, VERSION, MESSAGE_MAX_BYTES, max_array_len=VOTERS_MAX)
    if type(m) is not list or len(m) < 3 or type(m[0]) is not int:
        raise DecodeError("malformed")
    kind, n = m[0], len(m)
    if kind == _HEARTBEAT_PROVEN and n == 4:
        cert = blob(m[3], CERT_MAX_BYTES)
        era, term, _leader, _config = certificate_head(cert)
        return Heartbeat(era, term, u64(m[1]) / _MS, decode_config(m[2]), cert)
    if kind == _ANNOUNCE_PROVEN and n == 3:
        cert = blob(m[2], CERT_MAX_BYTES)
        era, term, leader, carried = certificate_head(cert)
        return Announce(era, term, leader, carried if m[1] is None else decode_config(m[1]), cert)
    if n < 4:
        raise DecodeError("malformed")
    era, term = Era(u64(m[1]), ident(m[2])), u64(m[3])
    if kind == _PRE_VOTE and n == 5:
        return PreVote(era, term, decode_config(m[4]))
    if kind == _VOTE and n == 6:
        return Vote(era, term, decode_config(m[4]), _flag(m[5]))
    if kind == _VOTE_REPLY and n == 7:
        signature = blob(m[6], SIGNATURE_BYTES)
        if signature and len(signature) != SIGNATURE_BYTES:
            raise DecodeError("bad_field")
        return VoteReply(era, term, _flag(m[4]), _flag(m[5]), signature)
    if kind == _HEARTBEAT and n == 6:
        return Heartbeat(era, term, u64(m[4]) / _MS, decode_config(m[5]), b"")
    if kind == _ACK and n == 7:
        return Ack(era, term, u64(m[4]) / _MS, (u64(m[5]), u64(m[6])))
    if kind == _ANNOUNCE and n == 6:
        return Announce(era, term, text(m[4], ID_MAX_CHARS), decode_config(m[5]), b"")
    raise DecodeError("unknown_type" if kind not in range(1, 9) else "malformed")
