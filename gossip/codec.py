"""Wire codec for the gossip layer: msgpack, a version byte, strict validation.

A datagram is `VERSION` followed by one msgpack array `[pool, region, [msg, ...]]`
(compound packing: several messages share one packet). A message is an array
`[type_code, field, ...]`. A stream frame is `VERSION` followed by one message.

Decoding never raises anything but `DecodeError`; the caller drops the packet
and counts the reason. Unknown message types inside a compound packet are
skipped and counted so newer peers can add messages without breaking older ones.

codec.py is long because it is the wire format in one place: every message, its
type code, its encoding and the check of each of its fields read together; the
bounded msgpack primitives it shares with the record codecs live in gossip/wire.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import msgpack

from gossip.wire import ADDR_MAX_CHARS as ADDR_MAX_CHARS
from gossip.wire import ID_MAX_CHARS as ID_MAX_CHARS
from gossip.wire import U64_MAX as U64_MAX
from gossip.wire import DecodeError as DecodeError

# The shared field checks, under short names: they run for every field decoded.
from gossip.wire import addr as _addr
from gossip.wire import arity as _arity
from gossip.wire import array as _list
from gossip.wire import blob as _bytes
from gossip.wire import boolean as _bool
from gossip.wire import ident as _id
from gossip.wire import text as _str
from gossip.wire import u64 as _int
from gossip.wire import unpack_versioned as unpack_versioned

WIRE_VERSION = 1
_VERSION_BYTE = bytes([WIRE_VERSION])

POOL_REGION = 0
POOL_FLEET = 1
POOL_NAMES = {POOL_REGION: "region", POOL_FLEET: "fleet"}

REGION_MAX_CHARS = 64
MESSAGES_PER_PACKET_MAX = 64
STATES_PER_STREAM_MAX = 20_000
SUMMARIES_PER_STREAM_MAX = 10_000
GATEWAYS_PER_SUMMARY_MAX = 8
API_ADDRS_PER_SUMMARY_MAX = 8
# Witnesses of a refused connection one Suspect names (two confirm a death; a few spare).
REFUSERS_PER_SUSPECT_MAX = 4


# --- messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target_id: str
    src_id: str


@dataclass(frozen=True, slots=True)
class IndirectPing:
    seq: int
    target_id: str
    target_addr: str
    src_id: str
    nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Alive:
    """A member's claim that it is alive at an incarnation, address and metadata.

    In admission mode the claim carries the member's signature (node key) over
    `alive_signing_bytes`, so no one else can make it (docs/design.md).
    """

    incarnation: int
    node_id: str
    addr: str
    meta: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Suspect:
    """from_id suspects node_id at incarnation; with the connection evidence known to it.

    refused_by: members that saw node_id's gossip port refuse a connection (at most
    REFUSERS_PER_SUSPECT_MAX); stalled: someone saw its host complete a handshake.
    Both are trailing fields, sent only when set, that older peers skip.
    """

    incarnation: int
    node_id: str
    from_id: str
    refused_by: tuple[str, ...] = ()
    stalled: bool = False


@dataclass(frozen=True, slots=True)
class Dead:
    incarnation: int
    node_id: str
    from_id: str


@dataclass(frozen=True, slots=True)
class UserBroadcast:
    """A fleet-wide broadcast, identified by (origin_id, seq)."""

    origin_id: str
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Summary:
    """One region's summary as its gateways see it; newer version wins."""

    region: str
    version: int
    author_id: str
    alive: int
    gateways: tuple[tuple[str, str], ...]
    api_addrs: tuple[str, ...]


class MemberEntry(NamedTuple):
    """One member's entry in a push-pull exchange (its state is a STATE_* code).

    A tuple, not a frozen dataclass like the messages: a push-pull carries a whole
    region, and a frozen dataclass sets each field through object.__setattr__ (about
    a thousand machine instructions a field on CPython 3.11). As a dataclass, these
    entries were a tenth of a 1,000-node simulation's instructions (docs/benchmarks.md).
    """

    node_id: str
    addr: str
    meta: bytes
    incarnation: int
    state: int  # STATE_* below
    signature: bytes = b""  # the member's own signature of its alive claim at this incarnation


STATE_ALIVE = 0
STATE_SUSPECT = 1
STATE_DEAD = 2
STATE_LEFT = 3


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full-state exchange over a stream (join, periodic anti-entropy, reconnect)."""

    pool: int
    region: str
    join: bool
    states: tuple[MemberEntry, ...]
    summaries: tuple[Summary, ...]
    # True when the answering node cannot serve this pool for the asker (another
    # region, or not a gateway): no states, only what it knows of the fleet.
    redirect: bool = False
    # State-store anti-entropy (gossip/state.py): the sender's digest, and in a
    # reply the encoded records the asker lacks.
    digest: bytes = b""
    records: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordGossip:
    """One encoded signed record (gossip/records.py), piggybacked like any broadcast."""

    blob: bytes


@dataclass(frozen=True, slots=True)
class AppMessage:
    """An application message from one member to another (election, placement, rollout cores).

    `channel` names the hosted core it is for (node/channels.py); the payload is
    that core's own encoding, opaque here. Like memberlist's user messages, it
    rides the sealed datagram transport, with gossip piggybacked.
    """

    channel: int
    from_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RecordPush:
    """Stream frame: records the peer lacks, sent after a push-pull (empty: the acknowledgement)."""

    pool: int
    records: tuple[bytes, ...]


Message = (
    Ping
    | IndirectPing
    | Ack
    | Nack
    | Alive
    | Suspect
    | Dead
    | UserBroadcast
    | Summary
    | PushPull
    | RecordGossip
    | RecordPush
    | AppMessage
)


class MsgType:
    """The one table of message type codes (the first field of every message on the wire).

    Plain ints, not an IntEnum: they are read for every message encoded or decoded,
    and an enum member costs a slower lookup and a slower pack.
    """

    PING: Final = 1
    INDIRECT_PING: Final = 2
    ACK: Final = 3
    NACK: Final = 4
    ALIVE: Final = 5
    SUSPECT: Final = 6
    DEAD: Final = 7
    USER_BROADCAST: Final = 8
    SUMMARY: Final = 9
    PUSH_PULL: Final = 10
    RECORD_GOSSIP: Final = 11
    RECORD_PUSH: Final = 12
    APP: Final = 13


# The codes under module-level names for the hot paths (a global reads faster than a
# class attribute, and every message encoded or decoded reads one).
_PING: Final = MsgType.PING
_INDIRECT: Final = MsgType.INDIRECT_PING
_ACK: Final = MsgType.ACK
_NACK: Final = MsgType.NACK
_ALIVE: Final = MsgType.ALIVE
_SUSPECT: Final = MsgType.SUSPECT
_DEAD: Final = MsgType.DEAD
_USER: Final = MsgType.USER_BROADCAST
_SUMMARY: Final = MsgType.SUMMARY
_PUSHPULL: Final = MsgType.PUSH_PULL
_RECORD: Final = MsgType.RECORD_GOSSIP
_RECORD_PUSH: Final = MsgType.RECORD_PUSH
_APP: Final = MsgType.APP

# The highest incarnation a member may claim or be accused at. Far above any real
# count (a refutation adds one), and low enough that one more always encodes: a
# node never holds, persists or sends a value its peers would refuse.
INCARNATION_MAX = 2**62
# An Ed25519 signature.
SIGNATURE_BYTES = 64

# Application channels a message may name (a small number; a hosted core owns one).
APP_CHANNEL_MAX = 255
RECORDS_PER_STREAM_MAX = 20_000


# --- encoding ---------------------------------------------------------------


def _summary_fields(m: Summary) -> list[Any]:
    return [m.region, m.version, m.author_id, m.alive, [list(g) for g in m.gateways], list(m.api_addrs)]


def _fields(m: Message) -> list[Any]:
    match m:
        case Ping():
            return [_PING, m.seq, m.target_id, m.src_id]
        case IndirectPing():
            return [_INDIRECT, m.seq, m.target_id, m.target_addr, m.src_id, m.nack]
        case Ack():
            return [_ACK, m.seq]
        case Nack():
            return [_NACK, m.seq]
        case Alive():
            alive = [_ALIVE, m.incarnation, m.node_id, m.addr, m.meta]
            return [*alive, m.signature] if m.signature else alive
        case Suspect():
            suspect = [_SUSPECT, m.incarnation, m.node_id, m.from_id]
            if m.refused_by or m.stalled:
                return [*suspect, list(m.refused_by), m.stalled]
            return suspect
        case Dead():
            return [_DEAD, m.incarnation, m.node_id, m.from_id]
        case UserBroadcast():
            return [_USER, m.origin_id, m.seq, m.payload]
        case Summary():
            return [_SUMMARY, *_summary_fields(m)]
        case PushPull():
            states = [
                [node_id, addr, meta, inc, state, sig] if sig else [node_id, addr, meta, inc, state]
                for node_id, addr, meta, inc, state, sig in m.states
            ]
            summaries = [_summary_fields(s) for s in m.summaries]
            return [
                _PUSHPULL,
                m.pool,
                m.region,
                m.join,
                states,
                summaries,
                m.redirect,
                m.digest,
                list(m.records),
            ]
        case RecordGossip():
            return [_RECORD, m.blob]
        case RecordPush():
            return [_RECORD_PUSH, m.pool, list(m.records)]
        case AppMessage():
            return [_APP, m.channel, m.from_id, m.payload]


def encode_message(m: Message) -> bytes:
    """One message as a msgpack array (an element of a compound packet)."""
    packed: bytes = msgpack.packb(_fields(m), use_bin_type=True)
    return packed


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big")


_HEADS: dict[tuple[int, str], bytes] = {}


def _packet_head(pool: int, region: str) -> bytes:
    head = _HEADS.get((pool, region))
    if head is None:
        head = _VERSION_BYTE + b"\x93" + msgpack.packb(pool) + msgpack.packb(region, use_bin_type=True)
        if len(_HEADS) < 4096:  # a cache of a few constants; bounded all the same
            _HEADS[(pool, region)] = head
    return head


def encode_packet(pool: int, region: str, encoded_messages: list[bytes]) -> bytes:
    """A datagram from messages already encoded with `encode_message`."""
    return b"".join((_packet_head(pool, region), _array_header(len(encoded_messages)), *encoded_messages))


def packet_overhead_bytes(region: str, message_count: int) -> int:
    """Bytes a packet adds around its messages (for budgeting piggybacked gossip)."""
    return len(encode_packet(POOL_FLEET, region, [])) + (2 if message_count >= 15 else 0)


def encode_frame(m: Message) -> bytes:
    """A stream frame carrying one message."""
    return _VERSION_BYTE + encode_message(m)


# --- alive claims -------------------------------------------------------------

_ALIVE_DOMAIN = b"murmur-alive-v1\x00"


def alive_signing_bytes(pool: int, node_id: str, incarnation: int, addr: str, meta: bytes) -> bytes:
    """What a member signs to claim it is alive (domain-separated, per pool)."""
    packed: bytes = msgpack.packb([pool, node_id, incarnation, addr, meta], use_bin_type=True)
    return _ALIVE_DOMAIN + packed


# --- member metadata ----------------------------------------------------------
# Carried in Alive messages and push-pull entries: [region, api_addr, admission].
# Readers tolerate anything: metadata is only advice until the member is admitted.


def encode_meta(region: str, api_addr: str, admission: bytes = b"") -> bytes:
    """Member metadata: region, API address, and in the fleet pool the encoded admission
    record (gateways of other regions cannot look it up)."""
    packed: bytes = msgpack.packb([region, api_addr, admission], use_bin_type=True)
    return packed


def decode_meta(meta: bytes) -> tuple[str, str]:
    """(region, api_addr) from member metadata; empty strings if unreadable."""
    try:
        v = msgpack.unpackb(meta, raw=False)
    except Exception:
        return "", ""
    if type(v) is list and len(v) >= 2 and type(v[0]) is str and type(v[1]) is str:
        return v[0], v[1]
    return "", ""


def decode_meta_admission(meta: bytes) -> bytes:
    """The encoded admission record a member carries in its metadata (b"" if none or unreadable)."""
    try:
        v = msgpack.unpackb(meta, raw=False)
    except Exception:
        return b""
    if type(v) is list and len(v) >= 3 and type(v[2]) is bytes:
        return v[2]
    return b""


# --- decoding ---------------------------------------------------------------


def _unpack(data: bytes, max_len: int) -> Any:
    return unpack_versioned(
        data, WIRE_VERSION, max_len, max_array_len=max(STATES_PER_STREAM_MAX, 64), max_map_len=64
    )


def _summary(f: list[Any]) -> Summary:
    _arity(f, 6)
    gateways = []
    for g in _list(f[4], GATEWAYS_PER_SUMMARY_MAX):
        pair = _list(g, 2)
        _arity(pair, 2)
        gateways.append((_id(pair[0]), _addr(pair[1])))
    apis = tuple(_addr(a) for a in _list(f[5], API_ADDRS_PER_SUMMARY_MAX))
    return Summary(
        region=_str(f[0], REGION_MAX_CHARS),
        version=_int(f[1]),
        author_id=_id(f[2]),
        alive=_int(f[3]),
        gateways=tuple(gateways),
        api_addrs=apis,
    )


def _member_entry(v: Any, meta_max_bytes: int) -> MemberEntry:
    # Inlined checks: a push-pull carries a whole region, so this runs per member.
    if type(v) is not list or not 5 <= len(v) <= 16:
        raise DecodeError("bad_field")
    node_id, addr, meta, inc, state = v[0], v[1], v[2], v[3], v[4]
    if (
        type(node_id) is not str
        or not 0 < len(node_id) <= ID_MAX_CHARS
        or type(addr) is not str
        or len(addr) > ADDR_MAX_CHARS
        or type(meta) is not bytes
        or len(meta) > meta_max_bytes
        or type(inc) is not int
        or not 0 <= inc <= INCARNATION_MAX
        or type(state) is not int
        or not STATE_ALIVE <= state <= STATE_LEFT
    ):
        raise DecodeError("bad_field")
    if len(v) == 5:
        return MemberEntry(node_id, addr, meta, inc, state)
    sig = v[5]
    if type(sig) is not bytes or len(sig) > SIGNATURE_BYTES:
        raise DecodeError("bad_field")
    return MemberEntry(node_id, addr, meta, inc, state, sig)


def _incarnation(v: Any) -> int:
    # One check, not two calls: every alive, suspect and dead message has one.
    if type(v) is not int or not 0 <= v <= INCARNATION_MAX:
        raise DecodeError("bad_incarnation" if type(v) is int and v > INCARNATION_MAX else "bad_field")
    return v


def _blobs(v: Any, max_bytes: int) -> tuple[bytes, ...]:
    return tuple(_bytes(b, max_bytes) for b in _list(v, RECORDS_PER_STREAM_MAX))


class UnknownMessage(DecodeError):
    """A well-formed message of a type this version does not know."""


def _message(v: Any, meta_max_bytes: int, payload_max_bytes: int) -> Message:
    f = _list(v, 64)
    if not f:
        raise DecodeError("bad_arity")
    code = f[0]
    if type(code) is not int:
        raise DecodeError("bad_field")
    if code == _PING:
        _arity(f, 4)
        return Ping(_int(f[1]), _id(f[2]), _id(f[3]))
    elif code == _INDIRECT:
        _arity(f, 6)
        return IndirectPing(_int(f[1]), _id(f[2]), _addr(f[3]), _id(f[4]), _bool(f[5]))
    elif code == _ACK:
        _arity(f, 2)
        return Ack(_int(f[1]))
    elif code == _NACK:
        _arity(f, 2)
        return Nack(_int(f[1]))
    elif code == _ALIVE:
        _arity(f, 5)
        return Alive(
            _incarnation(f[1]),
            _id(f[2]),
            _addr(f[3]),
            _bytes(f[4], meta_max_bytes),
            _bytes(f[5], SIGNATURE_BYTES) if len(f) > 5 else b"",
        )
    elif code == _SUSPECT:
        _arity(f, 4)
        # A newer peer may name more witnesses (up to 16 read); we keep the first few.
        witnesses = _list(f[4], 16)[:REFUSERS_PER_SUSPECT_MAX] if len(f) > 4 else ()
        refused_by = tuple(_id(x) for x in witnesses)
        stalled = _bool(f[5]) if len(f) > 5 else False
        return Suspect(_incarnation(f[1]), _id(f[2]), _id(f[3]), refused_by, stalled)
    elif code == _DEAD:
        _arity(f, 4)
        return Dead(_incarnation(f[1]), _id(f[2]), _id(f[3]))
    elif code == _USER:
        _arity(f, 4)
        return UserBroadcast(_id(f[1]), _int(f[2]), _bytes(f[3], payload_max_bytes))
    elif code == _SUMMARY:
        return _summary(f[1:])
    elif code == _PUSHPULL:
        _arity(f, 6)
        pool = _int(f[1])
        if pool not in POOL_NAMES:
            raise DecodeError("bad_field")
        states = tuple(_member_entry(s, meta_max_bytes) for s in _list(f[4], STATES_PER_STREAM_MAX))
        sums = tuple(_summary(_list(s, 16)) for s in _list(f[5], SUMMARIES_PER_STREAM_MAX))
        redirect = _bool(f[6]) if len(f) > 6 else False
        digest = _bytes(f[7], payload_max_bytes) if len(f) > 7 else b""
        records = _blobs(f[8], payload_max_bytes) if len(f) > 8 else ()
        return PushPull(
            pool,
            _str(f[2], REGION_MAX_CHARS),
            _bool(f[3]),
            states,
            sums,
            redirect,
            digest,
            records,
        )
    elif code == _RECORD:
        _arity(f, 2)
        return RecordGossip(_bytes(f[1], payload_max_bytes))
    elif code == _RECORD_PUSH:
        _arity(f, 3)
        pool = _int(f[1])
        if pool not in POOL_NAMES:
            raise DecodeError("bad_field")
        return RecordPush(pool, _blobs(f[2], payload_max_bytes))
    elif code == _APP:
        _arity(f, 4)
        channel = _int(f[1])
        if channel > APP_CHANNEL_MAX:
            raise DecodeError("bad_field")
        return AppMessage(channel, _id(f[2]), _bytes(f[3], payload_max_bytes))
    else:
        raise UnknownMessage("unknown_type")


@dataclass(frozen=True, slots=True)
class Packet:
    pool: int
    region: str
    messages: tuple[Message, ...]
    unknown: int  # messages of unknown type that were skipped
    invalid: int  # messages that failed validation and were skipped


def decode_packet(
    data: bytes, *, max_bytes: int = 1400, meta_max_bytes: int = 256, payload_max_bytes: int = 1024
) -> Packet:
    """Decode a datagram; raises DecodeError (with a counter reason) if the packet is unusable.

    A bad message inside an otherwise valid compound packet is skipped and counted
    in the returned Packet, so one bad message cannot hide the good ones.
    """
    if len(data) > max_bytes:
        raise DecodeError("oversized")
    top = _unpack(data, max_bytes)
    if type(top) is not list or len(top) < 3:
        raise DecodeError("bad_packet")
    pool = top[0]
    if type(pool) is not int or pool not in POOL_NAMES:
        raise DecodeError("bad_pool")
    region = _str(top[1], REGION_MAX_CHARS)
    items = top[2]
    if type(items) is not list or len(items) > MESSAGES_PER_PACKET_MAX:
        raise DecodeError("bad_packet")
    out: list[Message] = []
    unknown = invalid = 0
    for item in items:
        try:
            msg = _message(item, meta_max_bytes, payload_max_bytes)
        except UnknownMessage:
            unknown += 1
            continue
        except DecodeError:
            invalid += 1
            continue
        if isinstance(msg, (PushPull, RecordPush)):  # stream-only messages in a datagram
            invalid += 1
            continue
        out.append(msg)
    return Packet(pool, region, tuple(out), unknown, invalid)


def decode_frame(data: bytes, *, max_bytes: int, meta_max_bytes: int = 256) -> Message:
    """Decode a stream frame into its one message; raises DecodeError."""
    if len(data) > max_bytes:
        raise DecodeError("oversized")
    return _message(_unpack(data, max_bytes), meta_max_bytes, max_bytes)
