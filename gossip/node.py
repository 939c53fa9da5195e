"""A node's gossip layer: its region pool, and the fleet pool while it is a gateway (sans-IO).

Every node runs SWIM with its region (the `lan` profile). Up to
`GATEWAYS_PER_REGION` members of each region, chosen by the same deterministic
rule at every node (gossip/gateways.py), also run SWIM with the gateways of all
other regions (the `wan` profile). Gateways carry fleet-wide broadcasts and one
small summary per region (gossip/summaries.py) between the pools, so a node's
memory and traffic grow with its region, not with the fleet. The pools ask this
node what they do not decide themselves through narrow roles (gossip/roles.py):
the admission gate (gossip/gate.py), the state exchange (gossip/exchange.py),
and the directory of summaries and the messages they carry (this class).
See docs/design.md and docs/core-api.md.

node.py is long because it is the one place where the two pools meet: what a
gateway relays between them, when it joins or leaves the fleet pool, and how a
record or broadcast moves through both share its state; the rules themselves
live in the modules named above.
"""

from __future__ import annotations

import random
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import nacl.signing

from gossip import codec
from gossip.config import LAN, WAN, MembershipConfig
from gossip.events import (
    AdmissionRefused,
    AppMessageReceived,
    BroadcastDelivered,
    Event,
    GatewayChanged,
    IncarnationChanged,
    MemberChanged,
    MemberState,
    RecordsAccepted,
    Revoked,
)
from gossip.exchange import StoreExchange
from gossip.gate import MemberGate
from gossip.gateways import GATEWAY_STABLE_S, GATEWAYS_PER_REGION, choose_gateways, rank_hash
from gossip.io import CheckResult, Outbound
from gossip.islands import REGION_MERGE_INTERVAL_S, IslandMerge
from gossip.kinds import ADMISSION_KIND, DEFAULT_KINDS, FLEET_SCOPE, REVOCATION_KIND, KindTable
from gossip.membership import Member, Membership
from gossip.records import Record, encode_record
from gossip.relay import BroadcastLog, RepeatQueue, spread
from gossip.roles import OwnerMessage, PoolRoles
from gossip.state import StateStore, StoreLimits
from gossip.summaries import SUMMARY_MIN_INTERVAL_S, RegionSummary, SummaryTable
from gossip.trust import StaticTrust, Trust

# Re-evaluate the gateway choice at least this often (stability changes with time).
GATEWAY_RECHECK_S = 5.0
# Gateways are first chosen this long after start, once the join has had time to answer.
GATEWAY_FIRST_CHECK_S = 2.0
# A gateway a summary names and the fleet pool has not listed for this long is joined.
UNLISTED_GATEWAY_GRACE_S = 10.0
# A gateway that steps down keeps its fleet pool running this long to deliver its leave.
FLEET_RETIRE_S = 2.0
# A record whose encoding fits this is piggybacked on gossip; a larger one travels
# by anti-entropy (push-pull) only.
RECORD_PIGGYBACK_MAX_BYTES = 1024


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
        node_key: nacl.signing.SigningKey | None = None,
        kinds: KindTable = DEFAULT_KINDS,
    ) -> None:
        """A node's gossip layer. With `admission` (this node's own admission record,
        gossip/admission.py) the node is in admission mode: a peer is a member only
        once its admission is held (region pool) or carried in its metadata and
        verified (fleet pool), and members' alive claims are signed with their node
        keys (`node_key` is this node's; required in admission mode). Without, the
        network key alone decides (simulations of membership, tests)."""
        self.node_id = node_id
        self.addr = addr
        self.region = region
        self.api_addr = api_addr
        self.region_config = region_config
        self.fleet_config = fleet_config
        self._rng = rng
        self._meta = codec.encode_meta(region, api_addr)
        self._fleet_meta = self._meta
        self._start_s = now
        # A restart always comes back above anything it said before it stopped (and
        # never above what peers accept, whatever was persisted).
        self._incarnation_floor = min(incarnation + 1, codec.INCARNATION_MAX)
        self._reported_incarnation = 0
        self._events: list[Event] = []
        self._counters: dict[str, int] = {}
        # The signed, versioned state (gossip/state.py). Without a trust, it accepts nothing.
        self.state = StateStore(
            trust if trust is not None else StaticTrust(),
            random.Random(rng.getrandbits(64)),
            limits=store_limits or StoreLimits(),
            region=region,
            kinds=kinds,  # drivers pass inference/kinds.py's table: payloads checked on acceptance
        )
        self._gate = MemberGate(
            self.state, admission_mode=admission is not None, count=self._count, node_key=node_key
        )
        self._exchange = StoreExchange(
            self.state, on_new=lambda t, new: self._records_accepted(t, new, origin=False), count=self._count
        )
        self._roles = PoolRoles(gate=self._gate, state=self._exchange, directory=self, messages=self)
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
            roles=self._roles,
            incarnation=self._incarnation_floor,
            now=now,
        )
        self._retiring: list[tuple[Membership, float]] = []
        self._gateways: list[tuple[str, str]] = []
        self._gateways_dirty = True
        self._preferred_gateways: tuple[str, ...] = ()
        self._next_gateway_check_s = now + GATEWAY_FIRST_CHECK_S
        self._summaries = SummaryTable(region, self._count)
        self._last_summary_publish_s = now  # the first summary waits until the join settled
        self._stability_change_s = now
        self._ranked_live_version = -1
        self._broadcasts = BroadcastLog()
        self._broadcast_seq = 0
        self._hashes: dict[str, bytes] = {}
        self._fleet_join_at_s = -1e18
        # Gateways named by summaries, not (yet) in our fleet pool: id -> first noticed.
        self._unlisted_gateways: dict[str, float] = {}
        self._record_repeats = RepeatQueue()
        # Members of our region heard of outside our region pool, to join (gossip/islands.py).
        self._islands = IslandMerge(node_id, addr, self._count)
        self._now = now
        self._after(now)

    # --- the API of docs/core-api.md -----------------------------------------------

    @property
    def admission_mode(self) -> bool:
        """True when peers must show an admission (this node was given one)."""
        return self._gate.admission_mode

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
                for k, v in pool.watch_counters.items():
                    out[prefix + k] = v
                out[prefix + "broadcast_queue_dropped"] = pool.broadcast_queue_dropped
        for k, v in self.state.counters.items():
            out["state." + k] = v
        return out

    def _count(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n

    def join(self, now: float, seeds: Sequence[str]) -> None:
        """Join the mesh through any known nodes ("host:port"), in any region."""
        # Our own join is what finds our region; merging islands waits until it had its chance.
        self._islands.wait(now + REGION_MERGE_INTERVAL_S)
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
        self._broadcasts.first_sight(now, msg)
        self._events.append(BroadcastDelivered(msg.origin_id, msg.seq, payload))
        # Straight to our gateways, so the fleet hears of it without waiting for
        # the region's epidemic to reach them.
        self._push_to_gateways(now, msg)
        spread(now, (self.region_pool, self.fleet_pool), msg, None)
        self._after(now)
        return msg.origin_id, msg.seq

    def send_app(
        self, now: float, dst_id: str, channel: int, payload: bytes, *, pool: str = "region"
    ) -> bool:
        """Send one application message to member dst_id of a pool ("region" or "fleet").

        It rides the sealed datagram transport in a packet of its own (no gossip
        piggybacked); delivery is not guaranteed (the hosted core retries). False,
        and counted, when dst_id is not a live member of that pool here or the
        payload is over the limit (user_payload_max_bytes).
        """
        src = self.region_pool if pool == "region" else self.fleet_pool
        if len(payload) > self.region_config.user_payload_max_bytes:
            self._count("drop_app_oversized")
            return False
        m = src.member(dst_id) if src is not None else None
        if src is None or m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            self._count("drop_app_no_route")
            return False
        src.send_alone(m.addr, codec.AppMessage(channel, self.node_id, payload))
        self._count("app_sent")
        self._after(now)
        return True

    def member_key(self, node_id: str) -> bytes | None:
        """An admitted member's Ed25519 public key (region: its admission; fleet: its verified
        metadata), or None: what hosted cores seal to (node/netkeys.py)."""
        return self._gate.member_key(node_id)

    def prefer_gateways(self, now: float, node_ids: Sequence[str]) -> None:
        """Make these members (live ones, in this order) the region's gateways, the rule
        filling the remaining places (gossip/gateways.py): the hook for a region's voters."""
        preferred = tuple(node_ids)
        if preferred != self._preferred_gateways:
            self._preferred_gateways = preferred
            self._gateways_dirty = True
            self._after(now)

    def present_admission(self, now: float, record: Record) -> str | None:
        """Take `record` as this node's admission (a new invite, after a restore showed the
        old one no longer holds); returns admission_problem (None: admitted by our own rules)."""
        self._gate.admission_blob = encode_record(record)
        self._fleet_meta = codec.encode_meta(self.region, self.api_addr, self._gate.admission_blob)
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

    def handle_datagram(self, now: float, src: str, data: bytes, sender_id: str = "") -> None:
        """One datagram (plaintext) from src; bad input is dropped and counted.

        sender_id: the member the driver's pairwise envelope proved sent it ("" for
        a network-key frame); see Membership.handle_messages.
        """
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
        pool.handle_messages(now, src, packet.messages, sender_id)
        self._after(now)

    def handle_stream_request(
        self, now: float, src: str, data: bytes, sender_id: str = "", claimed_id: str = ""
    ) -> bytes | None:
        """A peer opened a stream with one frame; returns our reply frame (None: refuse).

        sender_id as for handle_datagram: with authenticated members, records are
        pushed and state exchanged only by a proven member; a join may come under
        the network key, naming the joiner (claimed_id), to whom alone the driver
        seals the answer.
        """
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
            if self._gate.authenticated and (not sender_id or self._gate.member_key(sender_id) is None):
                self._count("drop_stream_not_member")
                return None
            target = self._pool_for(msg.pool)
            if target is not None:
                self._exchange.merge(msg.pool, now, msg.records)
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
        reply = pool.handle_push_pull(now, src, msg, sender_id, claimed_id)
        self._after(now)
        return codec.encode_frame(reply)

    def peer_at(self, addr: str) -> str | None:
        """The id of the member at addr, whom the driver seals to pairwise (authenticated mode only)."""
        member = self.region_pool.member_at(addr)
        if member is None and self.fleet_pool is not None:
            member = self.fleet_pool.member_at(addr)
        if member is None:
            # A fleet pool we are leaving still sends (our leave notice): to its members too.
            for pool, _until in self._retiring:
                member = pool.member_at(addr)
                if member is not None:
                    break
        return member

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
                if request_id & 1 == codec.POOL_REGION and not msg.redirect and msg.region != self.region:
                    # An honest node of another region redirects; one that answers with its
                    # members instead would put them in our region pool.
                    self._count("drop_stream_wrong_region")
                    reply = None
            elif isinstance(msg, codec.RecordPush):
                reply = None  # an acknowledgement; the pool only needs to forget the stream
        pool.handle_stream_reply(now, request_id, reply)
        self._after(now)

    def handle_conn_check(self, now: float, request_id: int, result: CheckResult) -> None:
        """The driver's answer to a connection check a pool asked for (gossip.io.ConnCheck)."""
        pool = self._pool_for(request_id & 1)
        if pool is None:
            return
        pool.handle_conn_check(now, request_id, result)
        self._after(now)

    def handle_watch_ended(self, now: float, watch_id: int, peer_closed: bool) -> None:
        """The driver's news that a watched connection a pool holds ended (gossip.io.Watch)."""
        pool = self._pool_for(watch_id & 1)
        if pool is None:
            return
        pool.handle_watch_ended(now, watch_id, peer_closed)
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
        if self._record_repeats.due:
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
        if self._record_repeats.due:
            t = min(t, self._record_repeats.next_deadline())
        if self._islands.pending:
            merge_s = self._islands.due_s(self._now)
            if merge_s is not None:
                t = min(t, merge_s)
        return t

    def poll_transmit(self) -> list[Outbound]:
        """Everything to send now (plaintext; the driver seals it)."""
        out = self.region_pool.poll_transmit()
        if self.fleet_pool is not None:
            out.extend(self.fleet_pool.poll_transmit())
        for pool, _until in self._retiring:
            out.extend(pool.poll_transmit())
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
        views = [self._own_view(src, gw_ids)]
        views += (self._view(m, pool, gw_ids) for m in src.members())
        views.sort(key=lambda v: v.node_id)
        return views

    def member(self, node_id: str, pool: str = "region") -> MemberView | None:
        """One member of a pool as `members` shows it, or None: a lookup, not a list (the
        inference router asks this for every replica of every request)."""
        src = self.region_pool if pool == "region" else self.fleet_pool
        if src is None:
            return None
        gw_ids = {g for g, _ in self._gateways}
        if node_id == self.node_id:
            return self._own_view(src, gw_ids)
        m = src.member(node_id)
        return None if m is None else self._view(m, pool, gw_ids)

    def _own_view(self, src: Membership, gw_ids: set[str]) -> MemberView:
        state = MemberState.LEFT if src.leaving else MemberState.ALIVE
        gateway = self.node_id in gw_ids
        return MemberView(
            self.node_id, self.addr, self.region, state, src.incarnation, gateway, self.api_addr
        )

    @staticmethod
    def _view(m: Member, pool: str, gw_ids: set[str]) -> MemberView:
        region, api = codec.decode_meta(m.meta)
        is_gw = m.node_id in gw_ids if pool == "region" else True
        return MemberView(m.node_id, m.addr, region, m.state, m.incarnation, is_gw, api)

    def member_states(self, pool: str = "region") -> list[tuple[str, MemberState]]:
        """(id, state) of every member of a pool, itself included, in id order: `members` without
        the per-member metadata it decodes (the placement and election cores read this often)."""
        src = self.region_pool if pool == "region" else self.fleet_pool
        if src is None:
            return []
        me = (self.node_id, MemberState.LEFT if src.leaving else MemberState.ALIVE)
        return sorted([me, *((m.node_id, m.state) for m in src.members_unordered())])

    def summaries(self) -> dict[str, RegionSummary]:
        """Every region this node knows of, its own included."""
        return self._summaries.views(self._fresh_own_summary(self._now))

    def restore_view(
        self, now: float, members: Sequence[MemberView], signatures: Mapping[str, bytes] | None = None
    ) -> None:
        """Install members known to be alive without broadcasting (warm start, restart).

        signatures: node id -> its signature of its region-pool alive claim at that
        view (codec.alive_signing_bytes), kept to pass on in push-pull."""
        for v in members:
            if v.region == self.region and v.node_id != self.node_id:
                meta = codec.encode_meta(v.region, v.api_addr)
                sig = signatures.get(v.node_id, b"") if signatures else b""
                self.region_pool.restore(now, v.node_id, v.addr, meta, v.incarnation, sig)
        self._gateways_dirty = True
        self._after(now)

    # --- the roles the pools ask of this node: messages and the directory (gossip/roles.py) -----

    def on_message(self, pool: int, now: float, src: str, msg: OwnerMessage) -> None:
        """A message a pool carried for us: deliver it, and relay a broadcast once."""
        match msg:
            case codec.Summary():
                self._on_summary(now, msg)
            case codec.RecordGossip():
                self._exchange.merge(pool, now, (msg.blob,))
            case codec.AppMessage():
                self._on_app_message(self._pool_for(pool), src, msg)
            case codec.UserBroadcast():
                if not self._broadcasts.first_sight(now, msg):
                    self._count("duplicate_broadcasts")
                    return
                self._events.append(BroadcastDelivered(msg.origin_id, msg.seq, msg.payload))
                spread(now, (self.region_pool, self.fleet_pool), msg, None)

    def _on_app_message(self, pool: Membership | None, src: str, msg: codec.AppMessage) -> None:
        """Only a live member of the pool, at the address we know for it, speaks to our cores."""
        m = pool.member(msg.from_id) if pool is not None else None
        if m is None or m.addr != src or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            self._count("drop_app_not_member")
            return
        self._count("app_received")
        assert pool is not None
        self._events.append(AppMessageReceived(pool.pool_name, msg.channel, msg.from_id, msg.payload))

    def local_summaries(self, pool: int) -> tuple[codec.Summary, ...]:
        """Summaries we carry in push-pull exchanges (anti-entropy for summaries).

        Before our region published one (a young region), we say what we see, at version 0.
        """
        return self._summaries.with_own(lambda: self._fresh_own_summary(0.0))

    def redirect_summaries(self, pool: int | None) -> tuple[codec.Summary, ...]:
        """For a redirect: our region as we see it right now first, then what we know of others."""
        return (self._fresh_own_summary(self._now), *self._summaries.others())

    def merge_summaries(self, pool: int, now: float, summaries: Sequence[codec.Summary]) -> None:
        """Keep the newest summary of each region, and pass on what was news to us."""
        for s in summaries:
            if self._summaries.store(s):
                self._relay_summary(now, s)
                self._note_own_summary(s)
        self._maybe_join_fleet(now)

    def on_redirect(self, pool: int, now: float, reply: codec.PushPull) -> None:
        """A node that cannot serve us answered with what it knows: find our way from there."""
        for s in reply.summaries:
            if self._summaries.store(s):
                self._relay_summary(now, s)
        fresh = next((s for s in reply.summaries if s.region == reply.region), None)
        if (
            fresh is not None
            and fresh.region != self.region
            and fresh.gateways
            and self._summaries.hint(fresh)
        ):
            self._fleet_join_at_s = -1e18  # new directions: try them now
        # The redirecting node's region, as it sees it: never ours, so none of its gateways is
        # one of ours, whatever a stale or lying summary of our region says.
        foreign: frozenset[str] = frozenset()
        if fresh is not None and fresh.region != self.region:
            foreign = frozenset(gid for gid, _addr in fresh.gateways)
        own = self._summaries.get(self.region)
        joined_own = False
        if pool == codec.POOL_REGION and own is not None and self.region_pool.alive_count == 1:
            seeds = [addr for gid, addr in own.gateways if gid != self.node_id and gid not in foreign]
            if seeds:
                # Alone in our region pool: our own join continues at our region's gateways.
                self.region_pool.join(now, seeds)
                joined_own = True
        if not joined_own:
            # Otherwise gateways of our region we never heard of mean another island.
            for s in reply.summaries:
                if s.region == self.region:
                    self._note_own_summary(s, foreign)
        self._gateways_dirty = True
        self._maybe_join_fleet(now)

    # --- records ------------------------------------------------------------------------------

    def _records_accepted(
        self, now: float, records: list[Record], *, origin: bool, urgent: bool = False
    ) -> None:
        self._events.append(RecordsAccepted(tuple(records)))
        for r in records:
            if r.kind == ADMISSION_KIND:
                self.region_pool.admitted(now, r.key)
            elif r.kind == REVOCATION_KIND:
                self._expel(now, r.key, codec.encode_message(codec.RecordGossip(encode_record(r))))
        for r in records:
            blob = encode_record(r)
            if len(blob) > RECORD_PIGGYBACK_MAX_BYTES:
                continue  # too big to piggyback: anti-entropy carries it
            msg = codec.RecordGossip(blob)
            key = f"rec:{r.kind}/{r.key}"
            if r.scope == FLEET_SCOPE:
                # Operator records: pushed at once and gossiped in every pool, like fleet broadcasts.
                if origin:
                    self._push_to_gateways(now, msg)
                spread(now, (self.region_pool, self.fleet_pool), msg, key)
            elif r.kind == ADMISSION_KIND:
                # A new member's admission: an epidemic in the region, like its alive notice.
                # Unlike other region records it is not published by its author (the joiner
                # hands it to its seed with the join), and every member needs it before it
                # lets the joiner in; joins are rare, so the epidemic's cost does not matter.
                spread(now, (self.region_pool,), msg, key)
            else:
                self._spread_region_record(now, msg, key, origin=origin, urgent=urgent)

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
                self._record_repeats.cancel(key)
                due_s = now + cfg.region_record_repeat_s
                if (
                    urgent
                    and cfg.region_record_repeat_s > 0
                    and not self._record_repeats.schedule(key, due_s, msg)
                ):
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
        due = self._record_repeats.pop_due(now)
        if not due:
            return
        targets = self._live_region_members()
        for msg in due:
            for m in targets:
                self.region_pool.send_direct(now, m.addr, msg)

    def _push_to_gateways(self, now: float, msg: codec.Message) -> None:
        for gw_id, gw_addr in self._current_gateways(now):
            if gw_id != self.node_id:
                self.region_pool.send_direct(now, gw_addr, msg)

    # --- summaries -------------------------------------------------------------------------

    def _fresh_own_summary(self, now: float) -> codec.Summary:
        gws = tuple(self._current_gateways(now))
        apis: list[str] = []
        for gid, _addr in gws:
            if gid == self.node_id:
                api = self.api_addr
            else:
                m = self.region_pool.member(gid)
                api = codec.decode_meta(m.meta)[1] if m is not None else ""
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

    def _on_summary(self, now: float, s: codec.Summary) -> None:
        if not self._summaries.store(s):
            return
        self._note_own_summary(s)
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
        s = self._summaries.next_own(self._fresh_own_summary(now))
        if s is None:
            return
        self._last_summary_publish_s = now
        self._count("summaries_published")
        self._relay_summary(now, s)
        if self.fleet_pool is not None:
            for m in self.fleet_pool.gossip_targets(self.fleet_pool.config.gossip_nodes, now):
                self.fleet_pool.send_direct(now, m.addr, s)

    # --- gateways ------------------------------------------------------------------------------

    def _rank(self, node_id: str) -> bytes:
        h = self._hashes.get(node_id)
        if h is None:
            if len(self._hashes) > 4 * self.region_config.members_max:
                self._hashes.clear()
            h = self._hashes[node_id] = rank_hash(node_id)
        return h

    def _current_gateways(self, now: float) -> list[tuple[str, str]]:
        if self._gateways_dirty:
            self._gateways = self._choose_gateways(now)
        return self._gateways

    def _choose_gateways(self, now: float) -> list[tuple[str, str]]:
        """The region's gateways by the rule every member applies (gossip/gateways.py)."""
        # Plain tuples from the unsorted member table: this runs over the whole region at every
        # join or death, and the ranking sorts by itself (a Candidate per member and the sorted
        # members() list were a measurable part of a 1,000-node simulation's CPU time).
        live = (MemberState.ALIVE, MemberState.SUSPECT)
        candidates = [
            (m.node_id, m.addr, m.alive_since_s)
            for m in self.region_pool.members_unordered()
            if m.state in live
        ]
        if not self.region_pool.leaving:
            candidates.append((self.node_id, self.addr, self._start_s))
        choice = choose_gateways(
            candidates,
            now,
            rank=self._rank,
            count=GATEWAYS_PER_REGION,
            stable_s=GATEWAY_STABLE_S,
            preferred=self._preferred_gateways,
        )
        self._stability_change_s = choice.next_change_s
        return list(choice.gateways)

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
            roles=self._roles,
            incarnation=max(self._incarnation_floor, self.region_pool.incarnation),
            now=now,
        )
        self._events.append(GatewayChanged(True))
        self._count("became_gateway")
        self._fleet_join_at_s = -1e18
        for msg in self._broadcasts.recent():
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
        """Join the fleet pool through the gateways of every region we know but do not see in it,
        and through any gateway a summary names that our fleet pool has never listed."""
        fleet = self.fleet_pool
        if fleet is None or self._fleet_join_at_s > now:
            return
        present: dict[str, None] = {self.region: None}
        for m in fleet.members():
            if m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                present[codec.decode_meta(m.meta)[0]] = None
        seeds: list[str] = []
        unlisted: dict[str, float] = {}
        for region in self._summaries.known_regions():
            for gid, addr in self._summaries.gateways_of(region):
                if gid == self.node_id or addr in seeds:
                    continue
                if region not in present:
                    seeds.append(addr)  # a region we do not see at all
                elif region != self.region and fleet.member(gid) is None:
                    # A gateway our fleet pool has never listed. Usually its alive notice is
                    # on its way; after a cold start's storm (every node a gateway for a
                    # moment) it may have been lost for good, and only a join introduces us.
                    since = unlisted[gid] = self._unlisted_gateways.get(gid, now)
                    if now - since >= UNLISTED_GATEWAY_GRACE_S:
                        seeds.append(addr)
        for gid, addr in self._gateways:
            # Our own region's other gateways, as we choose them: the same storm can hide two
            # gateways of one region from each other in the fleet pool, and no summary of
            # another region names them.
            if gid != self.node_id and addr not in seeds and fleet.member(gid) is None:
                since = unlisted[gid] = self._unlisted_gateways.get(gid, now)
                if now - since >= UNLISTED_GATEWAY_GRACE_S:
                    seeds.append(addr)
        self._unlisted_gateways = unlisted
        if fleet.alive_count == 1:
            seeds.extend(addr for gid, addr in self._gateways if gid != self.node_id and addr not in seeds)
        if not seeds:
            return
        self._fleet_join_at_s = now + GATEWAY_RECHECK_S
        self._count("fleet_joins")
        fleet.join(now, seeds[:8])

    # --- islands of one region (gossip/islands.py) -------------------------------------------------

    def _listed(self, node_id: str) -> bool:
        return self.region_pool.member(node_id) is not None

    def _note_own_summary(self, s: codec.Summary, foreign: Container[str] = ()) -> None:
        """A published summary of our region (version 1 on, by a primary gateway): its gateways,
        but those in `foreign` (known to be of another region).

        Version 0 is one node's own view, carried in push-pulls before its region
        published anything (a joiner's, naming itself): no evidence of an island.
        """
        if s.region == self.region and s.version > 0:
            self._islands.note(((g, a) for g, a in s.gateways if g not in foreign), self._listed)

    def _note_fleet_members(self, events: Sequence[MemberChanged]) -> None:
        """Fleet-pool members that came alive and say they are of our region, unknown to our region pool."""
        fleet = self.fleet_pool
        assert fleet is not None
        for e in events:
            if e.state != MemberState.ALIVE or self._listed(e.node_id):
                continue
            m = fleet.member(e.node_id)
            if m is not None and codec.decode_meta(m.meta)[0] == self.region:
                self._islands.note(((m.node_id, m.addr),), self._listed)

    def _merge_islands(self, now: float) -> None:
        """Join the members of our region we noted and still do not list (bounded, rate limited).

        A push-pull join with one member of another island merges both views (the
        exchange carries every member each side knows, and our admission), and
        the usual gossip spreads the news on each side. A node of another region
        answers a region-pool join with a redirect, never with its members.
        """
        pool = self.region_pool
        if pool.leaving:
            self._islands.clear()
            return
        seeds = self._islands.take(now, self._listed)
        if seeds:
            pool.join(now, seeds)

    # --- plumbing ---------------------------------------------------------------------------------

    def _pool_for(self, pool_code: int) -> Membership | None:
        if pool_code == codec.POOL_REGION:
            return self.region_pool
        if self.fleet_pool is not None:
            return self.fleet_pool
        if self._retiring:
            return self._retiring[-1][0]
        return None

    def _expel(self, now: float, node_id: str, notice: bytes) -> None:
        """An operator revoked node_id: out of every pool, and never let in again (it is told once)."""
        self._gate.forget(node_id)
        for pool in (self.region_pool, self.fleet_pool):
            if pool is not None:
                pool.expel(now, node_id, notice)
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
        if self._islands.pending:
            self._merge_islands(now)

    def _collect(self) -> None:
        """Move pool events into our queue and note what they change."""
        if self.region_pool.events:
            region_events = self.region_pool.drain_events()
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
            fleet_events = fleet.drain_events()
            self._note_fleet_members(fleet_events)
            self._events.extend(fleet_events)
        for pool, _until in self._retiring:
            self._events.extend(pool.drain_events())
        inc = self.region_pool.incarnation
        if fleet is not None and fleet.incarnation > inc:
            inc = fleet.incarnation
        if inc > self._reported_incarnation:
            self._reported_incarnation = inc
            self._events.append(IncarnationChanged(inc))


__all__ = ["GATEWAYS_PER_REGION", "GossipNode", "MemberChanged", "MemberView", "RegionSummary"]
