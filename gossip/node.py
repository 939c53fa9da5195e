"""A node's gossip layer: its region pool, and the fleet pool while it is a gateway (sans-IO).

Every node runs SWIM with its region (the `lan` profile). Up to
`GATEWAYS_PER_REGION` members of each region, chosen by the same deterministic
rule at every node, also run SWIM with the gateways of all other regions (the
`wan` profile). Gateways carry fleet-wide broadcasts and one small summary per
region between the pools, so a node's memory and traffic grow with its region,
not with the fleet. See docs/design.md and docs/core-api.md.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from gossip import codec
from gossip.admission import admission_scope, check_admission
from gossip.config import LAN, WAN, MembershipConfig
from gossip.events import (
    AdmissionRefused,
    BroadcastDelivered,
    Event,
    GatewayChanged,
    IncarnationChanged,
    MemberChanged,
    MemberState,
    RecordsAccepted,
    Revoked,
)
from gossip.io import Outbound
from gossip.kinds import ADMISSION_KIND, REVOCATION_KIND
from gossip.membership import Member, Membership
from gossip.records import Record, decode_digest, decode_record, encode_digest, encode_record, verify_record
from gossip.state import StateStore, StoreLimits
from gossip.trust import StaticTrust, Trust

GATEWAYS_PER_REGION = 3
# A member alive this long in our view is preferred as a gateway over newer ones.
GATEWAY_STABLE_S = 10.0
# Re-evaluate the gateway choice at least this often (stability changes with time).
GATEWAY_RECHECK_S = 5.0
# Gateways are first chosen this long after start, once the join has had time to answer.
GATEWAY_FIRST_CHECK_S = 2.0
# A primary gateway republishes its region's summary at most this often.
SUMMARY_MIN_INTERVAL_S = 5.0
# A gateway that steps down keeps its fleet pool running this long to deliver its leave.
FLEET_RETIRE_S = 2.0
# Fleet-wide broadcasts remembered for de-duplication.
SEEN_BROADCASTS_MAX = 8192
# A new gateway passes on to the fleet the broadcasts of this recent past
# (a broadcast sent while a region had no gateway yet still leaves the region).
RECENT_BROADCASTS_MAX = 64
RECENT_BROADCASTS_S = 60.0
# A record whose encoding fits this is piggybacked on gossip; a larger one travels
# by anti-entropy (push-pull) only.
RECORD_PIGGYBACK_MAX_BYTES = 1024
# Region records of its own an author keeps for their second sending (region_record_repeat_s).
RECORD_REPEATS_MAX = 64
# Authors a digest on the wire may name.
DIGEST_AUTHORS_MAX = 16_384
# Regions whose summaries a node keeps.
SUMMARIES_MAX = 4096
# Fleet-pool members whose admission (carried in their metadata) was verified, kept.
FLEET_ADMISSIONS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as a node sees it (for the API, the CLI and the simulator)."""

    node_id: str
    addr: str
    region: str
    state: MemberState
    incarnation: int
    gateway: bool
    api_addr: str


@dataclass(frozen=True, slots=True)
class RegionSummary:
    """What the fleet knows of one region."""

    region: str
    alive: int
    gateways: tuple[tuple[str, str], ...]
    api_addrs: tuple[str, ...]
    version: int


def encode_meta(region: str, api_addr: str, admission: bytes = b"") -> bytes:
    """Member metadata carried in alive messages: region, API address, and in the fleet
    pool the encoded admission record (gateways of other regions cannot look it up)."""
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


def _rank_hash(node_id: str) -> bytes:
    return hashlib.sha256(node_id.encode()).digest()


def _summary_content(s: codec.Summary) -> tuple[object, ...]:
    return (s.alive, s.gateways, s.api_addrs)


def _newer(a: codec.Summary, b: codec.Summary | None) -> bool:
    """True if summary a supersedes b: higher version, ties broken by author id."""
    return b is None or (a.version, a.author_id) > (b.version, b.author_id)


class GossipNode:
    """The gossip layer of one node: region pool, fleet pool when a gateway, and the relay between."""

    def __init__(
        self,
        node_id: str,
        addr: str,
        region: str,
        rng: random.Random,
        *,
        region_config: MembershipConfig = LAN,
        fleet_config: MembershipConfig = WAN,
        api_addr: str = "",
        incarnation: int = 0,
        now: float = 0.0,
        trust: Trust | None = None,
        store_limits: StoreLimits | None = None,
        admission: Record | None = None,
    ) -> None:
        """A node's gossip layer. With `admission` (this node's own admission record,
        gossip/admission.py) the node is in admission mode: a peer is a member only
        once its admission is held (region pool) or carried in its metadata and
        verified (fleet pool). Without, the network key alone decides (simulations
        of membership, tests)."""
        self.node_id = node_id
        self.addr = addr
        self.region = region
        self.api_addr = api_addr
        self.region_config = region_config
        self.fleet_config = fleet_config
        self._rng = rng
        self._meta = encode_meta(region, api_addr)
        self._admission_blob = encode_record(admission) if admission is not None else b""
        self._fleet_meta = encode_meta(region, api_addr, self._admission_blob)
        self._fleet_admitted: OrderedDict[str, bytes] = OrderedDict()  # node id -> verified meta
        self._start_s = now
        # A restart always comes back above anything it said before it stopped.
        self._incarnation_floor = incarnation + 1
        self._reported_incarnation = 0
        self._events: list[Event] = []
        self._counters: dict[str, int] = {}
        # The signed, versioned state (gossip/state.py). Without a trust, it accepts nothing.
        self.state = StateStore(
            trust if trust is not None else StaticTrust(),
            random.Random(rng.getrandbits(64)),
            limits=store_limits or StoreLimits(),
            region=region,
        )
        self.admission_mode = admission is not None
        # Why our own admission is refused by our own rules (None: it is fine). Peers
        # will refuse it for the same reason; the owner should say so.
        self.admission_problem: str | None = None
        self.fleet_pool: Membership | None = None
        if admission is not None:
            self.present_admission(now, admission)
        self.region_pool = Membership(
            pool=codec.POOL_REGION,
            node_id=node_id,
            addr=addr,
            meta=self._meta,
            region=region,
            config=region_config,
            rng=random.Random(rng.getrandbits(64)),
            delegate=self,
            incarnation=self._incarnation_floor,
            now=now,
        )
        self._retiring: list[tuple[Membership, float]] = []
        self._gateways: list[tuple[str, str]] = []
        self._gateways_dirty = True
        self._next_gateway_check_s = now + GATEWAY_FIRST_CHECK_S
        self._summaries: dict[str, codec.Summary] = {}
        self._last_summary_publish_s = now  # the first summary waits until the join settled
        self._fleet_hints: dict[str, tuple[tuple[str, str], ...]] = {}
        self._stability_change_s = now
        self._ranked_live_version = -1
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._broadcast_seq = 0
        self._recent: list[tuple[float, codec.UserBroadcast]] = []
        self._hashes: dict[str, bytes] = {}
        self._fleet_join_at_s = -1e18
        # Region records of our own to send to every member once more: key -> (when, message).
        self._record_repeats: dict[str, tuple[float, codec.RecordGossip]] = {}
        self._now = now
        self._after(now)

    # --- the API of docs/core-api.md -----------------------------------------------

    @property
    def incarnation(self) -> int:
        """This node's highest incarnation in any pool (persist it)."""
        inc = self.region_pool.incarnation
        if self.fleet_pool is not None:
            inc = max(inc, self.fleet_pool.incarnation)
        return inc

    @property
    def is_gateway(self) -> bool:
        """True while this node is one of its region's gateways."""
        return self.fleet_pool is not None

    @property
    def counters(self) -> dict[str, int]:
        """Drops by reason and other protocol counters, prefixed by pool."""
        out = dict(self._counters)
        for prefix, pool in (("region.", self.region_pool), ("fleet.", self.fleet_pool)):
            if pool is not None:
                for k, v in pool.counters.items():
                    out[prefix + k] = v
                out[prefix + "broadcast_queue_dropped"] = pool.broadcast_queue_dropped
        for k, v in self.state.counters.items():
            out["state." + k] = v
        return out

    def _count(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n

    def join(self, now: float, seeds: Sequence[str]) -> None:
        """Join the mesh through any known nodes ("host:port"), in any region."""
        self.region_pool.join(now, seeds)
        self._after(now)

    def leave(self, now: float) -> None:
        """Leave gracefully: every pool hears that we left, not that we died."""
        self.region_pool.leave(now)
        if self.fleet_pool is not None:
            self.fleet_pool.leave(now)
        self._after(now)

    def broadcast(self, now: float, payload: bytes) -> tuple[str, int]:
        """Send payload to every node of the fleet; returns its (origin_id, seq)."""
        if len(payload) > self.region_config.user_payload_max_bytes:
            raise ValueError(
                f"broadcast payload is {len(payload)} bytes; the limit is "
                f"{self.region_config.user_payload_max_bytes}"
            )
        self._broadcast_seq += 1
        msg = codec.UserBroadcast(self.node_id, self._broadcast_seq, payload)
        self._remember((msg.origin_id, msg.seq))
        self._keep_recent(now, msg)
        self._events.append(BroadcastDelivered(msg.origin_id, msg.seq, payload))
        # Straight to our gateways, so the fleet hears of it without waiting for
        # the region's epidemic to reach them.
        for gw_id, gw_addr in self._current_gateways(now):
            if gw_id != self.node_id:
                self.region_pool.send_direct(now, gw_addr, msg)
        self._spread(now, msg, key=None)
        self._after(now)
        return msg.origin_id, msg.seq

    def present_admission(self, now: float, record: Record) -> str | None:
        """Take `record` as this node's admission (a new invite, after a restore showed the
        old one no longer holds); returns admission_problem (None: admitted by our own rules)."""
        self._admission_blob = encode_record(record)
        self._fleet_meta = encode_meta(self.region, self.api_addr, self._admission_blob)
        if self.fleet_pool is not None:
            self.fleet_pool.set_meta(self._fleet_meta)
        self.state.merge(now, [record])
        if self.state.is_admitted(self.node_id):
            self.admission_problem = None
        else:
            refusals = [reason for node_id, reason in self.state.drain_refusals() if node_id == self.node_id]
            self.admission_problem = refusals[-1] if refusals else "refused"
        return self.admission_problem

    def publish_record(self, now: float, record: Record, *, urgent: bool = False) -> bool:
        """Add a signed record made or received here (an operator command, our inventory).

        True if the store took it as new: it is then gossiped to the pools. False
        if it was already known, superseded, or refused (see counters "state.drop_*").
        urgent marks a meaningful change, as opposed to a periodic refresh: a
        region record is then sent to every member a second time
        (region_record_repeat_s later), so one lost datagram rarely leaves a peer
        with the old value until the next refresh. Fleet records ignore it.
        """
        new = self.state.merge(now, [record])
        if new:
            self._records_accepted(now, new, origin=True, urgent=urgent)
        self._after(now)
        return bool(new)

    def handle_datagram(self, now: float, src: str, data: bytes) -> None:
        """One datagram (plaintext) from src; bad input is dropped and counted."""
        try:
            packet = codec.decode_packet(
                data,
                max_bytes=self.region_config.packet_plaintext_max_bytes,
                meta_max_bytes=self.region_config.meta_max_bytes,
                payload_max_bytes=self.region_config.user_payload_max_bytes,
            )
        except codec.DecodeError as exc:
            self._count("drop_" + exc.reason)
            return
        if packet.unknown:
            self._count("skip_unknown_message", packet.unknown)
        if packet.invalid:
            self._count("drop_invalid_message", packet.invalid)
        pool = self._pool_for(packet.pool)
        if pool is None:
            self._count("drop_not_gateway")
            return
        if packet.pool == codec.POOL_REGION and packet.region != self.region:
            self._count("drop_wrong_region")
            return
        pool.handle_messages(now, src, packet.messages)
        self._after(now)

    def handle_stream_request(self, now: float, src: str, data: bytes) -> bytes | None:
        """A peer opened a stream with one frame; returns our reply frame (None: refuse)."""
        try:
            msg = codec.decode_frame(
                data,
                max_bytes=self.region_config.stream_max_bytes,
                meta_max_bytes=self.region_config.meta_max_bytes,
            )
        except codec.DecodeError as exc:
            self._count("drop_stream_" + exc.reason)
            return None
        if isinstance(msg, codec.RecordPush):
            target = self._pool_for(msg.pool)
            if target is not None:
                self.merge_records(target, now, msg.records)
            self._after(now)
            return codec.encode_frame(codec.RecordPush(msg.pool, ()))
        if not isinstance(msg, codec.PushPull):
            self._count("drop_stream_unexpected")
            return None
        pool = self._pool_for(msg.pool)
        if pool is None:
            # Asked to join a fleet pool we are not in: point at our region's gateways.
            self._count("fleet_redirects_sent")
            redirect = codec.PushPull(
                msg.pool, self.region, msg.join, (), self.redirect_summaries(None), True
            )
            return codec.encode_frame(redirect)
        reply = pool.handle_push_pull(now, src, msg)
        self._after(now)
        return codec.encode_frame(reply)

    def handle_stream_reply(self, now: float, request_id: int, data: bytes | None) -> None:
        """The reply to a stream this node opened; None when the peer was unreachable."""
        pool = self._pool_for(request_id & 1)
        if pool is None:
            return
        reply: codec.PushPull | None = None
        if data is not None:
            try:
                msg = codec.decode_frame(
                    data,
                    max_bytes=self.region_config.stream_max_bytes,
                    meta_max_bytes=self.region_config.meta_max_bytes,
                )
            except codec.DecodeError as exc:
                self._count("drop_stream_" + exc.reason)
                msg = None
            if isinstance(msg, codec.PushPull):
                reply = msg
            elif isinstance(msg, codec.RecordPush):
                reply = None  # an acknowledgement; the pool only needs to forget the stream
        pool.handle_stream_reply(now, request_id, reply)
        self._after(now)

    def handle_timer(self, now: float) -> None:
        """Run every timer that is due at now."""
        self.region_pool.handle_timer(now)
        if self.fleet_pool is not None:
            self.fleet_pool.handle_timer(now)
        if self._retiring:
            for pool, _until in self._retiring:
                pool.handle_timer(now)
            self._retiring = [(p, u) for p, u in self._retiring if now < u]
        if now >= self._next_gateway_check_s:
            self._check_gateway(now)
        if self._record_repeats:
            self._repeat_region_records(now)
        self._after(now)

    def next_deadline(self) -> float | None:
        """When handle_timer must next run."""
        t = self.region_pool.next_deadline()
        if self._next_gateway_check_s < t:
            t = self._next_gateway_check_s
        if self.fleet_pool is not None:
            t = min(t, self.fleet_pool.next_deadline())
        for pool, until in self._retiring:
            t = min(t, pool.next_deadline(), until)
        for due_s, _msg in self._record_repeats.values():
            t = min(t, due_s)
        return t

    def poll_transmit(self) -> list[Outbound]:
        """Everything to send now (plaintext; the driver seals it)."""
        out = self.region_pool.outbox
        self.region_pool.outbox = []
        fleet = self.fleet_pool
        if fleet is not None and fleet.outbox:
            out.extend(fleet.outbox)
            fleet.outbox = []
        for pool, _until in self._retiring:
            if pool.outbox:
                out.extend(pool.outbox)
                pool.outbox = []
        return out

    def next_event(self) -> Event | None:
        """The next event for the driver, or None."""
        if self._events:
            return self._events.pop(0)
        return None

    def drain_events(self) -> list[Event]:
        """Every pending event at once (cheaper than next_event in a loop)."""
        out, self._events = self._events, []
        return out

    def members(self, pool: str = "region") -> list[MemberView]:
        """This node's view of a pool ("region" or "fleet"), itself included, in id order."""
        src = self.region_pool if pool == "region" else self.fleet_pool
        if src is None:
            return []
        gw_ids = {g for g, _ in self._gateways}
        me = MemberView(
            self.node_id,
            self.addr,
            self.region,
            MemberState.LEFT if src.leaving else MemberState.ALIVE,
            src.incarnation,
            self.node_id in gw_ids,
            self.api_addr,
        )
        views = [me]
        for m in src.members():
            region, api = decode_meta(m.meta)
            is_gw = m.node_id in gw_ids if pool == "region" else True
            views.append(MemberView(m.node_id, m.addr, region, m.state, m.incarnation, is_gw, api))
        views.sort(key=lambda v: v.node_id)
        return views

    def summaries(self) -> dict[str, RegionSummary]:
        """Every region this node knows of, its own included."""
        out = {
            r: RegionSummary(s.region, s.alive, s.gateways, s.api_addrs, s.version)
            for r, s in sorted(self._summaries.items())
        }
        own = self._fresh_own_summary(self._now)
        out[self.region] = RegionSummary(own.region, own.alive, own.gateways, own.api_addrs, own.version)
        return out

    def restore_view(self, now: float, members: Sequence[MemberView]) -> None:
        """Install members known to be alive without broadcasting (warm start, restart)."""
        for v in members:
            if v.region == self.region and v.node_id != self.node_id:
                self.region_pool.restore(
                    now, v.node_id, v.addr, encode_meta(v.region, v.api_addr), v.incarnation
                )
        self._gateways_dirty = True
        self._after(now)

    # --- the pool delegate (called by Membership) --------------------------------------

    def on_user_message(
        self, pool: Membership, now: float, msg: codec.UserBroadcast | codec.Summary | codec.RecordGossip
    ) -> None:
        """A broadcast arrived in one of our pools: deliver and relay it once."""
        if isinstance(msg, codec.Summary):
            self._on_summary(now, pool, msg)
            return
        if isinstance(msg, codec.RecordGossip):
            self.merge_records(pool, now, (msg.blob,))
            return
        key = (msg.origin_id, msg.seq)
        if key in self._seen:
            self._count("duplicate_broadcasts")
            return
        self._remember(key)
        self._keep_recent(now, msg)
        self._events.append(BroadcastDelivered(msg.origin_id, msg.seq, msg.payload))
        self._spread(now, msg, key=None)

    def local_summaries(self, pool: Membership) -> tuple[codec.Summary, ...]:
        """Summaries we carry in push-pull exchanges (anti-entropy for summaries)."""
        out = dict(self._summaries)
        if self.region not in out:
            # Nothing published yet (a young region): say what we see, at version 0.
            out[self.region] = self._fresh_own_summary(0.0)
        return tuple(out[r] for r in sorted(out))

    def merge_summaries(self, pool: Membership, now: float, summaries: Sequence[codec.Summary]) -> None:
        """Keep the newest summary of each region, and pass on what was news to us."""
        for s in summaries:
            if self._store_summary(s):
                self._relay_summary(now, s)
        self._maybe_join_fleet(now)

    def state_digest(self, pool: Membership) -> bytes:
        """Our state digest for a push-pull in `pool` (the fleet pool sees fleet records only)."""
        return encode_digest(self.state.digest(fleet_only=pool.pool == codec.POOL_FLEET))

    def state_missing(self, pool: Membership, remote_digest: bytes) -> tuple[bytes, ...]:
        """Encoded records a peer lacks, by its digest (bounded by the store's delta budget)."""
        if not remote_digest:
            return ()  # a peer that does not run the state store (or an empty redirect)
        try:
            digest = decode_digest(remote_digest, authors_max=DIGEST_AUTHORS_MAX)
        except codec.DecodeError as exc:
            self._count("drop_digest_" + exc.reason)
            return ()
        missing = self.state.missing_for(
            digest, self.state.limits.delta_max_bytes, fleet_only=pool.pool == codec.POOL_FLEET
        )
        return tuple(encode_record(r) for r in missing)

    def merge_records(self, pool: Membership, now: float, blobs: Sequence[bytes]) -> None:
        """Records from a peer: the store verifies each once; what is new is passed on."""
        new = self.state.merge_encoded(now, blobs)
        if new:
            self._records_accepted(now, new, origin=False)

    def may_join(self, pool: Membership, node_id: str, meta: bytes) -> bool:
        """In admission mode: region members need their admission held, fleet members carry it."""
        if not self.admission_mode or self.state.is_admitted(node_id):
            return True
        if pool is self.region_pool or self.state.is_revoked(node_id):
            return False
        return self._admitted_by_meta(node_id, meta)

    def _admitted_by_meta(self, node_id: str, meta: bytes) -> bool:
        """A fleet-pool member from another region: verify the admission in its metadata (once)."""
        if self._fleet_admitted.get(node_id) == meta:
            return True
        try:
            r = decode_record(decode_meta_admission(meta))
        except codec.DecodeError:
            self._count("fleet_drop_admission_undecodable")
            return False
        admission = check_admission(r, self.state) if r.kind == ADMISSION_KIND else "admission_malformed"
        if (
            isinstance(admission, str)
            or r.key != node_id
            or r.scope != admission_scope(decode_meta(meta)[0])  # admitted to the region it claims
            or not verify_record(r, admission.public_key)
        ):
            self._count("fleet_drop_not_admitted")
            return False
        self._fleet_admitted[node_id] = meta
        self._fleet_admitted.move_to_end(node_id)
        if len(self._fleet_admitted) > FLEET_ADMISSIONS_KEPT:
            self._fleet_admitted.popitem(last=False)
        return True

    def introduction(self, pool: Membership) -> tuple[bytes, ...]:
        """Our admission record rides on our join requests, so the peer admits us at once."""
        return (self._admission_blob,) if self._admission_blob and pool is self.region_pool else ()

    def _records_accepted(
        self, now: float, records: list[Record], *, origin: bool, urgent: bool = False
    ) -> None:
        self._events.append(RecordsAccepted(tuple(records)))
        for r in records:
            if r.kind == ADMISSION_KIND:
                self.region_pool.admitted(now, r.key)
            elif r.kind == REVOCATION_KIND:
                self._expel(now, r.key)
        for r in records:
            blob = encode_record(r)
            if len(blob) > RECORD_PIGGYBACK_MAX_BYTES:
                continue  # too big to piggyback: anti-entropy carries it
            msg = codec.RecordGossip(blob)
            key = f"rec:{r.kind}/{r.key}"
            if r.scope == "fleet":
                self._spread_fleet_record(now, msg, key, origin=origin)
            elif r.kind == ADMISSION_KIND:
                self._spread_admission(now, msg, key)
            else:
                self._spread_region_record(now, msg, key, origin=origin, urgent=urgent)

    def _spread_admission(self, now: float, msg: codec.RecordGossip, key: str) -> None:
        """A new member's admission: an epidemic in the region, like its alive notice.

        Unlike other region records it is not published by its author (the joiner
        hands it to its seed with the join), and every member needs it before it
        lets the joiner in; joins are rare, so the epidemic's cost does not matter.
        """
        pool = self.region_pool
        pool.queue_user(msg, key)
        for m in self._eager_targets(pool, now):
            pool.send_direct(now, m.addr, msg)

    def _spread_fleet_record(self, now: float, msg: codec.RecordGossip, key: str, *, origin: bool) -> None:
        """Operator records: pushed at once and gossiped in every pool, like fleet broadcasts."""
        if origin:
            for gw_id, gw_addr in self._current_gateways(now):
                if gw_id != self.node_id:
                    self.region_pool.send_direct(now, gw_addr, msg)
        for pool in (self.region_pool, self.fleet_pool):
            if pool is not None:
                pool.queue_user(msg, key)
                for m in self._eager_targets(pool, now):
                    pool.send_direct(now, m.addr, msg)

    def _spread_region_record(
        self, now: float, msg: codec.RecordGossip, key: str, *, origin: bool, urgent: bool = False
    ) -> None:
        """Region records (a node's inventory, a leader's placement): the author tells every member.

        Every member must receive each record once, so one datagram from the
        author to each live member is the least any dissemination can send; an
        epidemic sends each record about retransmit-limit times per member. What
        this misses (loss, a member the author did not see yet) anti-entropy
        repairs, and a member that joins gets it in its join's push-pull. An
        urgent record is sent to every member a second time, a little later.
        Relaying and piggybacking are off by default (docs/state.md has the figures).
        """
        pool = self.region_pool
        cfg = self.region_config
        if origin:
            if cfg.region_record_push_all:
                targets = self._live_region_members()
                # A newer version, urgent or not, cancels the older one's repeat.
                self._record_repeats.pop(key, None)
                if urgent and cfg.region_record_repeat_s > 0:
                    self._record_repeats[key] = (now + cfg.region_record_repeat_s, msg)
                    if len(self._record_repeats) > RECORD_REPEATS_MAX:
                        del self._record_repeats[next(iter(self._record_repeats))]
                        self._count("drop_record_repeats_full")
            else:
                targets = pool.gossip_targets(cfg.region_record_push, now)
        elif cfg.region_record_relay > 0:
            targets = pool.gossip_targets(cfg.region_record_relay, now)
        else:
            targets = []
        for m in targets:
            pool.send_direct(now, m.addr, msg)
        if cfg.region_record_retransmit > 0:
            pool.queue_user(msg, key, limit=cfg.region_record_retransmit)

    def _live_region_members(self) -> list[Member]:
        live = (MemberState.ALIVE, MemberState.SUSPECT)
        return [m for m in self.region_pool.members() if m.state in live]

    def _repeat_region_records(self, now: float) -> None:
        """Send our due region records to every member we now see alive (joiners included)."""
        due = [key for key, (due_s, _msg) in self._record_repeats.items() if due_s <= now]
        if not due:
            return
        targets = self._live_region_members()
        for key in due:
            _due_s, msg = self._record_repeats.pop(key)
            for m in targets:
                self.region_pool.send_direct(now, m.addr, msg)

    def redirect_summaries(self, pool: Membership | None) -> tuple[codec.Summary, ...]:
        """For a redirect: our region as we see it right now first, then what we know of others."""
        fresh = self._fresh_own_summary(self._now)
        return (fresh, *(s for r, s in sorted(self._summaries.items()) if r != self.region))

    def on_redirect(self, pool: Membership, now: float, reply: codec.PushPull) -> None:
        """A node that cannot serve us answered with what it knows: find our way from there."""
        for s in reply.summaries:
            if self._store_summary(s):
                self._relay_summary(now, s)
        fresh = next((s for s in reply.summaries if s.region == reply.region), None)
        if fresh is not None and fresh.region != self.region and fresh.gateways:
            if self._fleet_hints.get(fresh.region) != fresh.gateways:
                self._fleet_join_at_s = -1e18  # new directions: try them now
            if fresh.region in self._fleet_hints or len(self._fleet_hints) < SUMMARIES_MAX:
                self._fleet_hints[fresh.region] = fresh.gateways
        own = self._summaries.get(self.region)
        if pool is self.region_pool and own is not None and self.region_pool.alive_count == 1:
            seeds = [addr for gid, addr in own.gateways if gid != self.node_id]
            if seeds:
                self.region_pool.join(now, seeds)
        self._gateways_dirty = True
        self._maybe_join_fleet(now)

    # --- summaries -------------------------------------------------------------------------

    def _fresh_own_summary(self, now: float) -> codec.Summary:
        gws = tuple(self._current_gateways(now))
        apis: list[str] = []
        for gid, _addr in gws:
            if gid == self.node_id:
                api = self.api_addr
            else:
                m = self.region_pool.member(gid)
                api = decode_meta(m.meta)[1] if m is not None else ""
            if api:
                apis.append(api)
        prev = self._summaries.get(self.region)
        return codec.Summary(
            self.region,
            prev.version if prev else 0,
            self.node_id,
            self.region_pool.alive_count,
            gws,
            tuple(apis),
        )

    def _store_summary(self, s: codec.Summary) -> bool:
        if not s.region:
            return False
        if not _newer(s, self._summaries.get(s.region)):
            return False
        if s.region not in self._summaries and len(self._summaries) >= SUMMARIES_MAX:
            self._count("drop_summaries_full")
            return False
        self._summaries[s.region] = s
        return True

    def _on_summary(self, now: float, pool: Membership, s: codec.Summary) -> None:
        if not self._store_summary(s):
            return
        self._relay_summary(now, s)
        self._maybe_join_fleet(now)

    def _relay_summary(self, now: float, s: codec.Summary) -> None:
        key = "summary:" + s.region
        self.region_pool.queue_user(s, key)
        if self.fleet_pool is not None:
            self.fleet_pool.queue_user(s, key)

    def _maybe_publish_summary(self, now: float) -> None:
        if not self._gateways or self._gateways[0][0] != self.node_id:
            return  # only the primary gateway speaks for the region
        if now - self._last_summary_publish_s < SUMMARY_MIN_INTERVAL_S:
            return
        fresh = self._fresh_own_summary(now)
        prev = self._summaries.get(self.region)
        if prev is not None and _summary_content(prev) == _summary_content(fresh):
            return
        version = (prev.version if prev else 0) + 1
        s = codec.Summary(fresh.region, version, self.node_id, fresh.alive, fresh.gateways, fresh.api_addrs)
        self._summaries[self.region] = s
        self._last_summary_publish_s = now
        self._count("summaries_published")
        self._relay_summary(now, s)
        if self.fleet_pool is not None:
            for m in self._eager_targets(self.fleet_pool, now):
                self.fleet_pool.send_direct(now, m.addr, s)

    # --- gateways ------------------------------------------------------------------------------

    def _hash(self, node_id: str) -> bytes:
        h = self._hashes.get(node_id)
        if h is None:
            if len(self._hashes) > 4 * self.region_config.members_max:
                self._hashes.clear()
            h = self._hashes[node_id] = _rank_hash(node_id)
        return h

    def _current_gateways(self, now: float) -> list[tuple[str, str]]:
        if self._gateways_dirty:
            self._gateways = self._choose_gateways(now)
        return self._gateways

    def _choose_gateways(self, now: float) -> list[tuple[str, str]]:
        """The region's gateways by the rule every member applies.

        Rank alive members by the sha256 of their id. Once the region has enough
        stable members (alive for GATEWAY_STABLE_S in our view), newer ones rank
        after them, so a node that just joined is never made a gateway at once;
        before that, stability is ignored so a young region does not flap.
        """
        ranked: list[tuple[bool, bytes, str, str]] = []
        next_change_s = float("inf")
        if not self.region_pool.leaving:
            young = now - self._start_s < GATEWAY_STABLE_S
            if young:
                next_change_s = self._start_s + GATEWAY_STABLE_S
            ranked.append((young, self._hash(self.node_id), self.node_id, self.addr))
        for m in self.region_pool.members():
            if m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                young = now - m.alive_since_s < GATEWAY_STABLE_S
                if young:
                    next_change_s = min(next_change_s, m.alive_since_s + GATEWAY_STABLE_S)
                ranked.append((young, self._hash(m.node_id), m.node_id, m.addr))
        self._stability_change_s = next_change_s
        if sum(1 for r in ranked if not r[0]) < GATEWAYS_PER_REGION:
            ranked = [(False, h, nid, addr) for _y, h, nid, addr in ranked]
        ranked.sort()
        return [(nid, addr) for _y, _h, nid, addr in ranked[:GATEWAYS_PER_REGION]]

    def _check_gateway(self, now: float) -> None:
        # Without a membership change the choice can only change when a young member turns stable.
        if self._gateways_dirty or now >= self._stability_change_s:
            self._gateways = self._choose_gateways(now)
        self._gateways_dirty = False
        self._next_gateway_check_s = now + GATEWAY_RECHECK_S
        should = any(gid == self.node_id for gid, _ in self._gateways)
        if should and self.fleet_pool is None:
            self._become_gateway(now)
        elif not should and self.fleet_pool is not None:
            self._step_down(now)
        if self.fleet_pool is not None:
            self._maybe_join_fleet(now)
            self._maybe_publish_summary(now)

    def _become_gateway(self, now: float) -> None:
        self.fleet_pool = Membership(
            pool=codec.POOL_FLEET,
            node_id=self.node_id,
            addr=self.addr,
            meta=self._fleet_meta,
            region=self.region,
            config=self.fleet_config,
            rng=random.Random(self._rng.getrandbits(64)),
            delegate=self,
            incarnation=max(self._incarnation_floor, self.region_pool.incarnation),
            now=now,
        )
        self._events.append(GatewayChanged(True))
        self._count("became_gateway")
        self._fleet_join_at_s = -1e18
        for _t, msg in self._recent:
            self.fleet_pool.queue_user(msg)
        self._maybe_join_fleet(now)

    def _step_down(self, now: float) -> None:
        assert self.fleet_pool is not None
        self.fleet_pool.leave(now)
        self._retiring.append((self.fleet_pool, now + FLEET_RETIRE_S))
        self.fleet_pool = None
        self._events.append(GatewayChanged(False))
        self._count("stepped_down_gateway")

    def _maybe_join_fleet(self, now: float) -> None:
        """Join the fleet pool through the gateways of every region we know but do not see in it."""
        fleet = self.fleet_pool
        if fleet is None or self._fleet_join_at_s > now:
            return
        present: dict[str, None] = {self.region: None}
        for m in fleet.members():
            if m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                present[decode_meta(m.meta)[0]] = None
        seeds: list[str] = []
        for region in sorted({*self._summaries, *self._fleet_hints}):
            if region in present:
                continue
            hint = self._fleet_hints.get(region)
            gateways = hint if hint is not None else self._summaries[region].gateways
            for gid, addr in gateways:
                if gid != self.node_id and addr not in seeds:
                    seeds.append(addr)
        if fleet.alive_count == 1:
            seeds.extend(addr for gid, addr in self._gateways if gid != self.node_id and addr not in seeds)
        if not seeds:
            return
        self._fleet_join_at_s = now + GATEWAY_RECHECK_S
        self._count("fleet_joins")
        fleet.join(now, seeds[:8])

    # --- fleet-wide broadcasts ----------------------------------------------------------------------

    def _remember(self, key: tuple[str, int]) -> None:
        self._seen[key] = None
        if len(self._seen) > SEEN_BROADCASTS_MAX:
            self._seen.popitem(last=False)

    def _keep_recent(self, now: float, msg: codec.UserBroadcast) -> None:
        """Keep the last few broadcasts so a node that becomes a gateway can carry them on."""
        self._recent.append((now, msg))
        while self._recent and (
            len(self._recent) > RECENT_BROADCASTS_MAX or now - self._recent[0][0] > RECENT_BROADCASTS_S
        ):
            self._recent.pop(0)

    def _eager_targets(self, pool: Membership, now: float) -> list[Member]:
        return pool.gossip_targets(pool.config.gossip_nodes, now)

    def _spread(self, now: float, msg: codec.UserBroadcast, key: str | None) -> None:
        """Queue msg for gossip in every pool we are in, and push it to a few members at once."""
        for pool in (self.region_pool, self.fleet_pool):
            if pool is None:
                continue
            pool.queue_user(msg, key)
            for m in self._eager_targets(pool, now):
                pool.send_direct(now, m.addr, msg)

    # --- plumbing ---------------------------------------------------------------------------------

    def _pool_for(self, pool_code: int) -> Membership | None:
        if pool_code == codec.POOL_REGION:
            return self.region_pool
        if self.fleet_pool is not None:
            return self.fleet_pool
        if self._retiring:
            return self._retiring[-1][0]
        return None

    def _expel(self, now: float, node_id: str) -> None:
        """An operator revoked node_id: out of every pool, and never let in again."""
        self._fleet_admitted.pop(node_id, None)
        for pool in (self.region_pool, self.fleet_pool):
            if pool is not None:
                pool.expel(now, node_id)
        self._events.append(Revoked(node_id))

    def _after(self, now: float) -> None:
        """After every input: collect pool events, re-choose gateways if the region changed."""
        self._now = now
        for node_id, reason in self.state.drain_refusals():
            self._events.append(AdmissionRefused(node_id, reason))
        for node_id in self.state.drain_displaced():
            # Displaced by an earlier admission under the same invite: out of the pools.
            for pool in (self.region_pool, self.fleet_pool):
                if pool is not None:
                    pool.expel(now, node_id)
        self._collect()
        if self._gateways_dirty and now >= self._start_s + GATEWAY_FIRST_CHECK_S:
            self._check_gateway(now)
            self._collect()

    def _collect(self) -> None:
        """Move pool events into our queue and note what they change."""
        region_events = self.region_pool.events
        if region_events:
            self.region_pool.events = []
            if self.region_pool.live_set_version != self._ranked_live_version:
                # Suspect <-> alive flips leave the candidates as they were; joins and deaths do not.
                self._ranked_live_version = self.region_pool.live_set_version
                self._gateways_dirty = True
            self._events.extend(region_events)
            if self.fleet_pool is not None:
                # The region pool's LAN failure detector is faster than the fleet's:
                # a gateway vouches for the death of its own region's members.
                for e in region_events:
                    if e.state in (MemberState.DEAD, MemberState.LEFT):
                        left = e.state == MemberState.LEFT
                        self.fleet_pool.declare_dead(self._now, e.node_id, left=left)
        fleet = self.fleet_pool
        if fleet is not None and fleet.events:
            self._events.extend(fleet.events)
            fleet.events = []
        for pool, _until in self._retiring:
            if pool.events:
                self._events.extend(pool.events)
                pool.events = []
        inc = self.region_pool.incarnation
        if fleet is not None and fleet.incarnation > inc:
            inc = fleet.incarnation
        if inc > self._reported_incarnation:
            self._reported_incarnation = inc
            self._events.append(IncarnationChanged(inc))


__all__ = ["GossipNode", "MemberChanged", "MemberView", "RegionSummary", "decode_meta", "encode_meta"]
