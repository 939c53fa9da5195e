"""The network key's rotation, spread member to member: a hosted core (sans-IO).

(This file is long because following the operator's record and spreading its
keys share one keyring's state; the types it trades with drivers are in
node/netkey_ports.py.)

An operator rotates the network key (`murmur keys rotate`, and `murmur revoke`,
which rotates as part of the revocation) at any one node. That node gets the new
key sealed to its own public key and publishes a `netkey` record
(gossip/netkey.py): operator-signed, fleet-wide, naming the key's epoch and id,
never the key. From there the key spreads member to member, each copy sealed to
its receiver (one record with a sealed copy per member would not fit at 10,000
nodes):

- push: a node that obtains the key offers it to `push_fanout` random live
  members of its region pool, and of the fleet pool while it is a gateway (so it
  crosses regions), each copy sealed with a `nacl.public.Box` of our X25519 key
  (from our Ed25519 node key) and the receiver's (from the key its admission
  carries);
- pull: a node that holds a `netkey` record whose key it lacks asks one random
  live member for it, on a timer with backoff (one request outstanding at a
  time), until it has it; a holder answers with the key sealed to the asker.

Every key offered is checked against the id in the operator-signed record held
here before it is installed, so a member cannot plant a key; a wrong one is
dropped and counted. No key is ever sealed to a member without a known key (not
admitted), to a revoked member, or to an id the rotation itself names as
revoked (its revocation record may not have arrived yet).

A staged change (`murmur keys install|use|remove`, gossip/netkey.py format 2)
lists the whole keyring the fleet should hold and its primary; the same push
and pull fetch every listed key a node lacks (a request names the key's id), a
node seals with the primary as soon as it holds it (the operator checked that
every member holds it before `use`), and drops a key the list leaves out at
once. A key a node retired is never installed again, whatever a record or a
member offers (a replayed install record of a removed key included).

Each node says which keys it holds in its own `keyring` record
(gossip/keyholding.py), signed by its node key and republished when that
changes: `murmur keys list` counts them.

What the driver does with the events: `NetworkKeyInstalled` (install in the
keyring, so frames sealed with it open at once; persist it),
`NetworkKeyInUse` (seal with it from now on; persist that), and
`NetworkKeysRetired` (the grace period is over: remove these keys, and never
take them back from an old token). docs/design.md ("Rotating the network key")
says why sealing starts `use_after_s` after a node obtains the key.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence

import msgpack
import nacl.exceptions
import nacl.public
import nacl.signing

from gossip.events import Event, HostedEvent, RecordsAccepted
from gossip.keyholding import KeyHolding, decode_holding, encode_holding
from gossip.kinds import KEYRING_KIND, NETKEY_KIND
from gossip.netkey import NETKEY_SLOT, NETWORK_KEY_BYTES, NetKeyNotice, decode_notice, network_key_id
from gossip.records import Record, sign_record
from gossip.wire import DecodeError
from node.channels import Channel
from node.hosted import AppSend
from node.netkey_ports import (
    GossipPeers,
    KeyPeers,
    NetKeyConfig,
    NetworkKeyInstalled,
    NetworkKeyInUse,
    NetworkKeysRetired,
)

__all__ = [
    "GossipPeers",
    "KeyPeers",
    "NetKeyConfig",
    "NetKeyCore",
    "NetworkKeyInUse",
    "NetworkKeyInstalled",
    "NetworkKeysRetired",
]

REQUEST = 0  # [REQUEST, epoch]: "send me the key of this epoch"; [REQUEST, epoch, key id]: "that key"
OFFER = 1  # [OFFER, epoch, nonce + Box ciphertext of the key]
BOX_NONCE_BYTES = nacl.public.Box.NONCE_SIZE
SEALED_KEY_BYTES = BOX_NONCE_BYTES + 16 + NETWORK_KEY_BYTES  # nonce, Poly1305 tag, key
MESSAGE_MAX_BYTES = 128  # an offer is 77 bytes; anything larger is not ours
KEYS_MAX = 8  # as gossip.envelope.KEYS_MAX: the keyring holds no more
PENDING_OFFERS_MAX = 4  # offers ahead of their record, kept until it arrives
BOXES_KEPT = 256  # precomputed X25519 shared keys, by member public key
ANSWERED_KEPT = 1024  # last answer time per asker (the rate limit)
SHUT_OUT_KEPT = 4096  # ids rotations named revoked
RETIRED_KEPT = 64  # ids of keys retired here, never installed again (as mesh/service/netkeys.py keeps)
KEY_ID_BYTES = 16  # a key id (32 hex characters) as it travels in a request


def _notice_of(record: Record) -> NetKeyNotice | None:
    if record.kind != NETKEY_KIND or record.key != NETKEY_SLOT or record.deleted:
        return None
    try:
        return decode_notice(record.payload)
    except DecodeError:
        return None


class NetKeyCore:
    """One node's network keys and the spread of a new one (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        rng: random.Random,
        *,
        node_key: nacl.signing.SigningKey,
        peers: KeyPeers,
        keys: Sequence[bytes],
        now: float,
        config: NetKeyConfig | None = None,
        retired: Sequence[str] = (),
    ) -> None:
        """`keys`: the keyring's keys at start, primary first (the driver's: token and disk);
        `retired`: ids of keys this node dropped before (never installed again)."""
        self.node_id = node_id
        self.config = config or NetKeyConfig()
        self._rng = rng
        self._peers = peers
        self._node_key = node_key
        self._private = node_key.to_curve25519_private_key()
        self._keys: dict[str, bytes] = {}  # key id -> key, oldest first
        for key in keys:
            self._keys[network_key_id(key)] = bytes(key)
        self._primary = network_key_id(keys[0]) if keys else ""
        self._retired: OrderedDict[str, None] = OrderedDict((r, None) for r in list(retired)[-RETIRED_KEPT:])
        self.notice: NetKeyNotice | None = None
        self.obtained_at_s: float | None = None  # when we obtained a rotation's key
        # The restored record is read at the first timer: drivers restore the store after
        # building the node.
        self._start_at_s: float | None = now
        self._use_at_s: float | None = None
        self._retire_at_s: float | None = None
        self._ask_at_s: float | None = None
        self._ask_interval_s = self.config.ask_interval_s
        self._asked = ""
        self._pending: list[tuple[int, bytes, str]] = []  # (epoch, key, from) ahead of the record
        self._answered: OrderedDict[str, float] = OrderedDict()
        self._boxes: OrderedDict[bytes, nacl.public.Box] = OrderedDict()
        self._shut_out: OrderedDict[str, None] = OrderedDict()
        self._published: KeyHolding | None = None
        self._report_at_s: float | None = None
        self._version = 0
        self.counters: dict[str, int] = {}
        self._out: list[AppSend] = []
        self._events: list[HostedEvent] = []
        self._records: list[tuple[Record, bool]] = []

    # --- reads ----------------------------------------------------------------------------

    @property
    def channel(self) -> int:
        return int(Channel.KEYS)

    @property
    def has_current(self) -> bool:
        """True if we hold every key the newest `netkey` record names (or there is none)."""
        return self.notice is None or all(k in self._keys for k in self.notice.wanted_ids)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of the keys installed, oldest first."""
        return tuple(self._keys)

    @property
    def primary_id(self) -> str:
        """Id of the key that seals."""
        return self._primary

    @property
    def retired_ids(self) -> tuple[str, ...]:
        """Ids of the keys retired here (the last RETIRED_KEPT), oldest first."""
        return tuple(self._retired)

    # --- commands ---------------------------------------------------------------------------

    def rotate(self, now: float, key: bytes, record: Record) -> str | None:
        """The operator's new key with its (verified) `netkey` record, given at this node."""
        return self.apply(now, record, key)

    def apply(self, now: float, record: Record, key: bytes | None = None) -> str | None:
        """An operator's (verified) `netkey` record given at this node, with the key it adds if any.

        Returns why it is refused (not a notice, an epoch not above the one held, a key
        missing, of another id, or retired here, a listed key this node does not hold), or
        None: the record is followed and the key offered to members. The driver publishes
        the record next (Node.publish_record).
        """
        notice = _notice_of(record)
        if notice is None:
            return "the record is not a netkey notice"
        if self.notice is not None and notice.epoch <= self.notice.epoch:
            return f"epoch {notice.epoch} is not newer than the epoch held here ({self.notice.epoch})"
        given = ""
        if key is not None:
            if len(key) != NETWORK_KEY_BYTES or network_key_id(key) not in notice.wanted_ids:
                return "the key is not the one the record names (its id differs)"
            given = network_key_id(key)
            if given in self._retired:
                return f"key {given} was removed from this mesh and never comes back; make a new key"
        elif notice.stage in ("rotate", "install"):
            return f"a {notice.stage} record comes with its new key"
        lacking = [k for k in notice.wanted_ids if k not in self._keys and k != given]
        if notice.staged and lacking:
            return f"this node does not hold key {lacking[0]} that the record lists; ask a node that does"
        self._adopt(now, notice, None if key is None else bytes(key), "")
        self._report(now)
        return None

    # --- HostedCore -------------------------------------------------------------------------

    def observe(self, now: float, event: Event) -> None:
        if type(event) is not RecordsAccepted:
            return
        for record in event.records:
            if record.kind == NETKEY_KIND:
                notice = _notice_of(record)
                if notice is not None:
                    self._adopt(now, notice, None, "")
            elif (
                record.kind == KEYRING_KIND and record.key == self.node_id and self._version < record.version
            ):
                # Our own record from an earlier life (a peer kept it; our disk did not): say
                # again what we hold now, above it.
                self._published = None
        self._report(now)

    def handle_message(self, now: float, pool: str, from_id: str, payload: bytes) -> None:
        if len(payload) > MESSAGE_MAX_BYTES:
            self._count("drop_oversized")
            return
        try:
            msg = msgpack.unpackb(payload, max_bin_len=MESSAGE_MAX_BYTES, max_str_len=0, max_array_len=4)
        except Exception:  # msgpack raises several types for malformed input
            msg = None
        if type(msg) is not list or len(msg) < 2 or type(msg[0]) is not int or type(msg[1]) is not int:
            self._count("drop_malformed")
            return
        if msg[0] == REQUEST and len(msg) == 2:
            self._answer(pool, from_id, msg[1], None, now)
        elif msg[0] == REQUEST and len(msg) == 3 and type(msg[2]) is bytes and len(msg[2]) == KEY_ID_BYTES:
            self._answer(pool, from_id, msg[1], msg[2].hex(), now)
        elif msg[0] == OFFER and len(msg) == 3 and type(msg[2]) is bytes and len(msg[2]) == SEALED_KEY_BYTES:
            self._offered(now, from_id, msg[1], msg[2])
        else:
            self._count("drop_malformed")
        self._report(now)

    def handle_timer(self, now: float) -> None:
        if self._start_at_s is not None and now >= self._start_at_s:
            self._start_at_s = None
            self._published = self._held_holding()
            record = self._peers.notice_record()
            notice = _notice_of(record) if record is not None else None
            if notice is not None:
                self._adopt(now, notice, None, "")
        notice = self.notice
        if self._use_at_s is not None and now >= self._use_at_s and notice is not None:
            self._use_at_s = None
            self._use(notice.key_id)
        if self._retire_at_s is not None and now >= self._retire_at_s and notice is not None:
            self._retire_at_s = None
            self._retire([k for k in self._keys if k != notice.key_id and k != self._primary])
        if self._ask_at_s is not None and now >= self._ask_at_s:
            self._ask(now)
        if self._report_at_s is not None and now >= self._report_at_s:
            self._report_at_s = None
            self._publish_holding()
        self._report(now)

    def next_deadline(self) -> float | None:
        times = [
            t
            for t in (self._start_at_s, self._use_at_s, self._retire_at_s, self._ask_at_s, self._report_at_s)
            if t is not None
        ]
        return min(times) if times else None

    def poll_messages(self) -> list[AppSend]:
        out, self._out = self._out, []
        return out

    def drain_events(self) -> list[HostedEvent]:
        out, self._events = self._events, []
        return out

    def poll_records(self) -> list[tuple[Record, bool]]:
        out, self._records = self._records, []
        return out

    # --- following the operator's record ------------------------------------------------------

    def _adopt(self, now: float, notice: NetKeyNotice, key: bytes | None, source: str) -> None:
        """A newer notice: take the keys it names if held (or given), else wait for a push, then ask."""
        held = self.notice
        if held is not None and (notice.epoch < held.epoch or notice == held):
            if notice != held:
                self._count("notice_stale")
            return
        # Two records of one epoch (operators racing): the store keeps one of them, the same
        # one everywhere (its order is total), and it reports it only if it won, so follow it.
        self.notice = notice
        for node_id in notice.revoked:
            self._shut_out[node_id] = None
            if len(self._shut_out) > SHUT_OUT_KEPT:
                self._shut_out.popitem(last=False)
        self.obtained_at_s = None
        self._use_at_s = self._retire_at_s = self._ask_at_s = None
        self._ask_interval_s = self.config.ask_interval_s
        if key is not None:
            self._install(key, newly=True, source=source)
        ahead, self._pending = self._pending, []
        for epoch, offered, sender in ahead:
            if epoch > notice.epoch:
                self._pending.append((epoch, offered, sender))
            elif network_key_id(offered) in self._missing():
                self._install(offered, newly=True, source=sender)
            elif network_key_id(offered) not in self._keys:
                self._count("drop_offer_wrong_key")
        self._settle(now)

    def _settle(self, now: float) -> None:
        """Act on what the notice asks given the keys held: seal, drop, and fetch what is missing."""
        notice = self.notice
        if notice is None:
            return
        if notice.staged:
            # The operator checked that every member holds the primary before `use`: seal at once.
            if notice.key_id in self._keys and self._primary != notice.key_id:
                self._use(notice.key_id)
            # Never the key that still seals: a node that lacks the new primary keeps it till then.
            self._retire([k for k in self._keys if k not in notice.wanted_ids and k != self._primary])
        elif notice.key_id in self._keys and self.obtained_at_s is None:
            self.obtained_at_s = now
            use_at_s = now
            if self._primary != notice.key_id:
                use_at_s = now + self.config.use_after_s
                self._use_at_s = use_at_s
            # Older keys go only once the new one seals, whatever the grace.
            self._retire_at_s = max(now + notice.grace_s, use_at_s)
        if not self._missing():
            self._ask_at_s = None
            self._asked = ""
        elif self._ask_at_s is None:
            self._ask_at_s = now + self.config.pull_delay_s * (1.0 + self._rng.random())

    def _missing(self) -> list[str]:
        """Ids of the keys the notice names that we lack (never one retired here), in its order."""
        notice = self.notice
        if notice is None:
            return []
        return [k for k in notice.wanted_ids if k not in self._keys and k not in self._retired]

    def _install(self, key: bytes, *, newly: bool, source: str) -> None:
        notice = self.notice
        assert notice is not None
        key_id = network_key_id(key)
        if key_id in self._keys:
            return
        if len(self._keys) >= KEYS_MAX:
            # Rotations faster than their grace: the oldest key that does not seal goes first.
            spare = [k for k in self._keys if k != self._primary]
            unlisted = [k for k in spare if k not in notice.wanted_ids]
            self._retire([(unlisted or spare)[0]])
        self._keys[key_id] = key
        self._events.append(NetworkKeyInstalled(notice.epoch, key_id, key))
        self._count("keys_installed")
        if newly:
            self._push(notice.epoch, key, source)

    def _use(self, key_id: str) -> None:
        notice = self.notice
        assert notice is not None
        self._primary = key_id
        self._events.append(NetworkKeyInUse(notice.epoch, key_id, self._keys[key_id]))

    def _retire(self, key_ids: list[str]) -> None:
        epoch = self.notice.epoch if self.notice is not None else 0
        keys = tuple(self._keys.pop(k) for k in key_ids if k in self._keys)
        for key in keys:
            self._retired[network_key_id(key)] = None
            if len(self._retired) > RETIRED_KEPT:
                self._retired.popitem(last=False)
        if keys:
            self._events.append(NetworkKeysRetired(epoch, keys))
            self._count("keys_retired", len(keys))

    # --- saying what we hold --------------------------------------------------------------------

    def _held_holding(self) -> KeyHolding | None:
        record = self._peers.own_holding()
        if record is None or record.deleted:
            return None
        self._version = max(self._version, record.version)
        try:
            return decode_holding(record.payload)
        except DecodeError:
            return None

    def _holding(self) -> KeyHolding:
        return KeyHolding(self.notice.epoch if self.notice else 0, self._primary, tuple(self._keys))

    def _report(self, now: float) -> None:
        """Say what we hold (our `keyring` record) if it changed since we last said: after a random
        delay (NetKeyConfig.report_delay_min_s/max_s), and only once started (the store restored)."""
        if self._start_at_s is not None or not self._primary or self._report_at_s is not None:
            return
        if self._holding() == self._published:
            return
        low, high = self.config.report_delay_min_s, self.config.report_delay_max_s
        if high <= 0:
            self._publish_holding()
        else:
            self._report_at_s = now + self._rng.uniform(low, high)

    def _publish_holding(self) -> None:
        holding = self._holding()
        if holding == self._published or not self._primary:
            return
        self._published = holding
        self._version = max(self._version, self._peers.latest_version()) + 1
        record = sign_record(
            self._node_key,
            KEYRING_KIND,
            self.node_id,
            self._version,
            self._peers.region_scope(),
            encode_holding(holding),
        )
        self._records.append((record, False))
        self._count("holdings_published")

    # --- the spread -----------------------------------------------------------------------------

    def _targets(self) -> list[tuple[str, str]]:
        """(pool, id) of every live member a key may be sealed to, each once, region first."""
        seen: dict[str, str] = {}
        for pool in ("region", "fleet"):
            for node_id in self._peers.live_members(pool):
                if node_id not in seen and self._may_receive(node_id):
                    seen[node_id] = pool
        return [(pool, node_id) for node_id, pool in seen.items()]

    def _may_receive(self, node_id: str) -> bool:
        return (
            node_id not in self._shut_out
            and not self._peers.is_revoked(node_id)
            and self._peers.member_key(node_id) is not None
        )

    def _push(self, epoch: int, key: bytes, source: str) -> None:
        fanout = self.config.push_fanout
        for pool in ("region", "fleet"):
            members = [m for m in self._peers.live_members(pool) if m != source and self._may_receive(m)]
            for node_id in self._rng.sample(members, min(fanout, len(members))):
                self._send_offer(pool, node_id, epoch, key)

    def _ask(self, now: float) -> None:
        notice = self.notice
        missing = self._missing()
        if notice is None or not missing:
            self._ask_at_s = None
            return
        targets = self._targets()
        fresh = [t for t in targets if t[1] != self._asked] or targets
        if fresh:
            pool, node_id = self._rng.choice(fresh)
            # A rotation's key is asked for by epoch (as nodes before staged changes do); a
            # staged change's keys by id, one at a time in the record's order.
            wanted = missing[0]
            fields: list[object] = [REQUEST, notice.epoch]
            if notice.staged:
                fields.append(bytes.fromhex(wanted))
            payload = msgpack.packb(fields)
            self._out.append(AppSend(node_id, payload, pool))
            self._asked = node_id
            self._count("requests_sent")
            self._count("sent_bytes", len(payload))
        self._ask_at_s = now + self._ask_interval_s
        self._ask_interval_s = min(2 * self._ask_interval_s, self.config.ask_interval_max_s)

    def _answer(self, pool: str, from_id: str, epoch: int, wanted: str | None, now: float) -> None:
        notice = self.notice
        if wanted is None:  # by epoch: the rotation's key
            held = notice is not None and epoch == notice.epoch and notice.key_id in self._keys
            wanted = notice.key_id if notice is not None else ""
        else:  # by id: only a key the operator's newest record names, whatever the asker's epoch
            held = notice is not None and wanted in notice.wanted_ids and wanted in self._keys
        if notice is None or not held:
            self._count("request_not_held")  # the asker retries elsewhere
            return
        if not self._may_receive(from_id):
            self._count("drop_request_refused")
            return
        last = self._answered.get(from_id)
        if last is not None and now - last < self.config.answer_interval_s:
            self._count("drop_request_rate")
            return
        self._answered[from_id] = now
        self._answered.move_to_end(from_id)
        if len(self._answered) > ANSWERED_KEPT:
            self._answered.popitem(last=False)
        self._send_offer(pool, from_id, notice.epoch, self._keys[wanted])

    def _send_offer(self, pool: str, node_id: str, epoch: int, key: bytes) -> None:
        public_key = self._peers.member_key(node_id)
        if public_key is None:
            return
        sealed = self._box(public_key).encrypt(key, self._rng.randbytes(BOX_NONCE_BYTES))
        payload = msgpack.packb([OFFER, epoch, bytes(sealed)])
        self._out.append(AppSend(node_id, payload, pool))
        self._count("offers_sent")
        self._count("sent_bytes", len(payload))

    def _offered(self, now: float, from_id: str, epoch: int, sealed: bytes) -> None:
        public_key = self._peers.member_key(from_id)
        if public_key is None:
            self._count("drop_offer_unknown_sender")
            return
        try:
            key = bytes(self._box(public_key).decrypt(sealed))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            self._count("drop_offer_unopened")
            return
        if len(key) != NETWORK_KEY_BYTES:
            self._count("drop_offer_wrong_key")
            return
        key_id = network_key_id(key)
        notice = self.notice
        if key_id in self._retired:
            self._count("drop_offer_retired")  # a key dropped here never comes back
        elif notice is not None and key_id in self._missing():
            self._install(key, newly=True, source=from_id)
            self._settle(now)
        elif notice is not None and epoch < notice.epoch:
            self._count("offer_stale")
        elif notice is not None and epoch == notice.epoch:
            # Held already, or not a key the operator named: never installed.
            self._count("offer_duplicate" if key_id in self._keys else "drop_offer_wrong_key")
        elif len(self._pending) >= PENDING_OFFERS_MAX:
            self._count("drop_offer_pending_full")
        else:
            self._pending.append((epoch, key, from_id))  # checked when its record arrives

    def _box(self, public_key: bytes) -> nacl.public.Box:
        box = self._boxes.get(public_key)
        if box is None:
            peer = nacl.signing.VerifyKey(public_key).to_curve25519_public_key()
            box = self._boxes[public_key] = nacl.public.Box(self._private, peer)
            if len(self._boxes) > BOXES_KEPT:
                self._boxes.popitem(last=False)
        return box

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n
