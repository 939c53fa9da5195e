"""SWIM membership with the Lifeguard extensions for one pool (sans-IO).

One instance runs one pool (a region, or the fleet of gateways). It follows
HashiCorp memberlist: shuffled round-robin probing, ping / ack, indirect
ping-req through k helpers that answer with nacks, incarnation numbers with
refutation, suspect -> dead with a Lifeguard suspicion timer, the local health
multiplier, the buddy system, piggybacked dissemination with a retransmit limit
of mult x log(N), periodic push-pull over a stream, gossip to the recently dead,
and (as Serf does) push-pull reconnects to dead members so split pools merge.

The owner (gossip/node.py) decodes packets, hands this pool its messages, and
takes `poll_transmit()` and `drain_events()` after every call. What the pool
does not decide itself it asks of its owner through narrow roles
(gossip/roles.py).

membership.py is long because SWIM's probe, suspicion, dissemination and
push-pull paths share one member table and read best together, as in
memberlist's state.go; the Lifeguard pieces (awareness, suspicion) and the
broadcast queue live in modules of their own.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from gossip import codec
from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.config import INTRO_KEY_BYTES, MembershipConfig, retransmit_limit, suspicion_timeout_s
from gossip.events import MemberChanged, MemberState
from gossip.io import CheckResult, ConnCheck, Datagram, Outbound, StreamOpen
from gossip.records import revokes
from gossip.roles import PoolRoles
from gossip.suspicion import Suspicion
from gossip.watch import Watches

_WIRE_STATE = {
    MemberState.ALIVE: codec.STATE_ALIVE,
    MemberState.SUSPECT: codec.STATE_SUSPECT,
    MemberState.DEAD: codec.STATE_DEAD,
    MemberState.LEFT: codec.STATE_LEFT,
}

# Seconds between join attempts while no seed has answered (doubling, capped).
JOIN_RETRY_FIRST_S = 1.0
JOIN_RETRY_MAX_S = 30.0
# A suspect is buddy-pinged by each accuser at most once per this many probe intervals.
SUSPECT_REPING_INTERVALS = 4
# Members held dead whose pings we answered with their death notice, remembered for the rate limit.
TOLD_DEAD_KEPT = 256
# Sequence number of buddy pings (probe sequence numbers start at 1).
BUDDY_PING_SEQ = 0
# This many members revived (dead -> alive) since our last push-pull bring the next one forward.
REVIVALS_FOR_EARLY_SYNC = 3
# Streams a pool keeps open at once; beyond this a new one is dropped and counted.
STREAMS_OPEN_MAX = 64
# Connection checks a pool keeps track of at once (one per probe and per indirect
# probe it runs); beyond this the oldest is forgotten, as its probe has long ended.
CHECKS_OPEN_MAX = 512
# Packet budget kept free for the compound header's growth.
_HEADER_SLACK_BYTES = 3


@dataclass(slots=True)
class Member:
    """What this node knows of one member of the pool."""

    node_id: str
    addr: str
    meta: bytes
    incarnation: int
    state: MemberState
    state_change_s: float
    alive_since_s: float  # when it last became alive from unknown, dead or left (not reset by suspicion)
    signature: bytes = b""  # its own signature of its alive claim at this incarnation (admission mode)


@dataclass(slots=True)
class _Probe:
    target_id: str
    seq: int
    started_s: float
    direct_deadline_s: float
    end_s: float
    acked: bool = False
    indirect_sent: bool = False
    nacks_expected: int = 0
    nacks: int = 0
    check: CheckResult = CheckResult.TIMED_OUT  # our connection check's answer, if it came in time


@dataclass(slots=True)
class _Forward:
    """An indirect probe this node runs on behalf of another."""

    requester_addr: str
    requester_seq: int
    nack: bool
    deadline_s: float
    target_id: str = ""
    target_addr: str = ""
    check: CheckResult = CheckResult.TIMED_OUT


class Membership:
    """SWIM + Lifeguard for one pool."""

    def __init__(
        self,
        *,
        pool: int,
        node_id: str,
        addr: str,
        meta: bytes,
        region: str,
        config: MembershipConfig,
        rng: random.Random,
        roles: PoolRoles,
        incarnation: int = 0,
        now: float = 0.0,
    ) -> None:
        self.pool = pool
        self.pool_name = codec.POOL_NAMES[pool]
        self.node_id = node_id
        self.addr = addr
        self.meta = meta
        self.region = region
        self.config = config
        self.incarnation = incarnation
        self.leaving = False
        self._outbox: list[Outbound] = []
        # Changes not drained yet. The owner only reads it, to skip drain_events() when it is
        # empty: it checks after every input, where a call saved shows in a simulation's CPU time.
        self.events: list[MemberChanged] = []
        self.counters: dict[str, int] = {}
        self._rng = rng
        self._roles = roles
        # Whether members' claims are signed is fixed when the node is made (admission mode).
        self._authenticated = roles.gate.authenticated
        # Room left in every packet for the envelope to introduce our key (see gossip/config.py).
        self._intro_room_bytes = INTRO_KEY_BYTES if self._authenticated else 0
        self._members: dict[str, Member] = {}
        # A member's address -> its id: who a datagram is from (kept in admission mode only,
        # where strangers are told apart; elsewhere it would cost memory for nothing).
        self._by_addr: dict[str, str] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._seq = 0
        self._stream_seq = 0
        self._probe: _Probe | None = None
        # A probe out of turn, of a watched member whose connection its host closed (gossip/watch.py).
        self._urgent: _Probe | None = None
        self._watches = Watches(pool=pool, count=config.watch_count, retry_s=config.watch_retry_s)
        self._watch_plan_version = -1
        self._watch_plan_at_s = 0.0
        self._forwards: dict[int, _Forward] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._unadmitted: OrderedDict[str, codec.Alive] = OrderedDict()  # see _park
        self._buddy_pinged_s: dict[str, float] = {}
        self._told_dead_s: dict[str, float] = {}  # member held dead -> when we last told it so
        self._told_accuser_s: dict[tuple[str, str], float] = {}  # (address, member held dead) -> when
        self._hold_expiry_until_s = -1e18
        self._revivals_since_sync = 0
        self._streams: dict[int, tuple[str, str]] = {}  # request id -> (dst, "join" | "sync" | "push")
        # Connection check id -> (for our probe?, the probe's or forward's sequence number).
        self._checks: OrderedDict[int, tuple[bool, int]] = OrderedDict()
        self._check_seq = 0
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._queue = BroadcastQueue(config.broadcast_queue_max)
        self._alive_count = 1
        self.live_set_version = 0  # bumps whenever a member joins or leaves the live set
        # Spread first timers over one interval so a fleet started together does not tick together.
        self._next_probe_s = now + rng.uniform(0, config.probe_interval_s)
        self._next_gossip_s = now + rng.uniform(0, config.gossip_interval_s)
        self._next_push_pull_s = now + rng.uniform(0.5, 1.0) * self._push_pull_interval_s()
        self._next_reconnect_s = now + rng.uniform(0.5, 1.0) * config.reconnect_interval_s
        self._join_seeds: list[str] = []
        self._join_retry_s: float | None = None
        self._join_backoff_s = JOIN_RETRY_FIRST_S
        self._started_s = now
        self._refute_pending = False

    # --- small helpers -------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def _emit(self, m: Member) -> None:
        self.events.append(MemberChanged(self.pool_name, m.node_id, m.addr, m.state, m.incarnation))

    def _live_changed(self, delta: int) -> None:
        """A member entered (+1) or left (-1) the live set (alive or suspect)."""
        self._alive_count += delta
        self.live_set_version += 1

    def poll_transmit(self) -> list[Outbound]:
        """Everything this pool has to send (plaintext; the owner passes it to the driver)."""
        out, self._outbox = self._outbox, []
        return out

    def drain_events(self) -> list[MemberChanged]:
        """The membership changes seen since the last call."""
        out, self.events = self.events, []
        return out

    @property
    def alive_count(self) -> int:
        """Members alive or suspect in this view, this node included."""
        return self._alive_count

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy."""
        return self._awareness.health_score

    def members(self) -> list[Member]:
        """Every member known to this pool except this node, in id order."""
        return [self._members[k] for k in sorted(self._members)]

    def members_unordered(self) -> Iterable[Member]:
        """Every member known to this pool except this node, in no set order (a live view: do not
        change the pool while iterating). For callers that rank members themselves: no sort."""
        return self._members.values()

    def member(self, node_id: str) -> Member | None:
        """One member's entry, or None."""
        return self._members.get(node_id)

    @property
    def broadcast_queue_dropped(self) -> int:
        """Broadcasts dropped because the queue was full."""
        return self._queue.dropped

    def _push_pull_interval_s(self) -> float:
        # memberlist pushPullScale: beyond 32 members, back off with log2 of the pool size.
        n = getattr(self, "_alive_count", 1)
        base = self.config.push_pull_interval_s
        if n <= 32:
            return base
        return base * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def _retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self._alive_count)

    # --- sending ---------------------------------------------------------------

    def _send(self, now: float, dst: str, messages: list[bytes]) -> None:
        """Send messages to dst in one packet, filling the room left with piggybacked gossip."""
        used = sum(len(m) for m in messages)
        budget = (
            self.config.packet_plaintext_max_bytes
            - self._intro_room_bytes
            - codec.packet_overhead_bytes(self.region, 16)
            - _HEADER_SLACK_BYTES
            - used
        )
        if budget > 0 and len(self._queue):
            # The receiver refuses a packet of more than MESSAGES_PER_PACKET_MAX messages.
            room = codec.MESSAGES_PER_PACKET_MAX - len(messages)
            messages = messages + self._queue.take(budget, 0, self._retransmit_limit(), room)
        if not messages:
            return
        self._outbox.append(Datagram(dst, codec.encode_packet(self.pool, self.region, messages)))

    def _broadcast(self, msg: codec.Message, key: str | None) -> None:
        self._queue.queue(codec.encode_message(msg), key)

    def queue_user(
        self,
        msg: codec.UserBroadcast | codec.Summary | codec.RecordGossip,
        key: str | None = None,
        limit: int | None = None,
    ) -> None:
        """Queue an owner's message for piggybacked dissemination in this pool.

        limit, if given, caps its transmissions below the pool's retransmit limit.
        """
        self._queue.queue(codec.encode_message(msg), key, limit)

    def send_direct(self, now: float, dst: str, msg: codec.Message) -> None:
        """Send one message straight to dst now (eager push), with gossip piggybacked."""
        self._send(now, dst, [codec.encode_message(msg)])

    def send_alone(self, dst: str, msg: codec.Message) -> None:
        """Send one message to dst in a packet of its own, with no gossip piggybacked.

        For application messages, as memberlist's SendBestEffort: a hosted core
        talking to a few peers often must not spend the retransmissions of queued
        gossip on those peers alone.
        """
        self._outbox.append(
            Datagram(dst, codec.encode_packet(self.pool, self.region, [codec.encode_message(msg)]))
        )

    def _open_stream(self, dst: str, msg: codec.PushPull | codec.RecordPush, purpose: str) -> None:
        if len(self._streams) >= STREAMS_OPEN_MAX:
            self._count("drop_streams_full")
            return
        self._stream_seq += 1
        request_id = (self._stream_seq << 1) | self.pool
        self._streams[request_id] = (dst, purpose)
        self._outbox.append(StreamOpen(dst, request_id, codec.encode_frame(msg)))

    def _ask_check(self, dst: str, for_probe: bool, seq: int) -> None:
        """Ask the driver whether anything still listens at dst (a probe went unanswered)."""
        if not self.config.conn_checks:
            return
        if len(self._checks) >= CHECKS_OPEN_MAX:
            self._checks.popitem(last=False)
            self._count("drop_conn_check_stale")
        self._check_seq += 1
        request_id = (self._check_seq << 1) | self.pool
        self._checks[request_id] = (for_probe, seq)
        self._count("conn_checks")
        self._outbox.append(ConnCheck(dst, request_id, self.config.conn_check_timeout_s))

    def handle_conn_check(self, now: float, request_id: int, result: CheckResult) -> None:
        """The driver's answer to a connection check; kept on the probe it serves, if still running."""
        entry = self._checks.pop(request_id, None)
        if entry is None:
            self._count("drop_conn_check_unknown")
            return
        self._count("conn_check_" + result.name.lower())
        for_probe, seq = entry
        if for_probe:
            probe = self._probe_by_seq(seq)
            if probe is not None and not probe.acked:
                probe.check = result
            return
        fwd = self._forwards.get(seq)
        if fwd is not None:
            fwd.check = result

    def _probe_by_seq(self, seq: int) -> _Probe | None:
        """Our probe in flight with sequence number seq (the round-robin one or the urgent one)."""
        for probe in (self._probe, self._urgent):
            if probe is not None and probe.seq == seq:
                return probe
        return None

    # --- watched connections (gossip/watch.py) -------------------------------------

    def handle_watch_ended(self, now: float, watch_id: int, peer_closed: bool) -> None:
        """The driver's news that a watched connection ended (gossip.io.Watch)."""
        target = self._watches.ended(now, watch_id, peer_closed)
        self._watch_plan_at_s = min(self._watch_plan_at_s, now + self.config.watch_retry_s)
        if target is None:
            return
        m = self._members.get(target[0])
        if m is None or m.addr != target[1] or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return
        self._urgent_probe(now, m)

    def _urgent_probe(self, now: float, m: Member) -> None:
        """Probe m now, out of turn: its host closed our watched connection to it.

        A closed connection is no verdict (the process may have closed it itself,
        or restarted): it only brings m's next probe forward. The probe runs as
        any other (direct ping, then indirect pings, with connection checks), so
        only an unanswered probe with refusals declares anything.
        """
        if self.leaving or self._urgent is not None:
            self._count("urgent_probe_busy")
            return
        probe = self._probe
        if probe is not None and probe.target_id == m.node_id:
            self._count("urgent_probe_under_way")  # its probe is under way already
            return
        self._count("urgent_probes")
        self._seq += 1
        timeout_s = self._awareness.scale_timeout(self.config.probe_timeout_s)
        interval_s = self._awareness.scale_timeout(self.config.probe_interval_s)
        self._urgent = _Probe(m.node_id, self._seq, now, now + timeout_s, now + interval_s)
        self._send(now, m.addr, [codec.encode_message(codec.Ping(self._seq, m.node_id, self.node_id))])

    def _plan_watches(self, now: float) -> None:
        """Keep our watches on our ring successors among the live members (gossip/watch.py)."""
        if self.live_set_version == self._watch_plan_version and now < self._watch_plan_at_s:
            return
        self._watch_plan_version = self.live_set_version
        self._watch_plan_at_s = now + self.config.watch_retry_s
        live = sorted(
            (m.node_id, m.addr)
            for m in self._members.values()
            if m.node_id != self.node_id and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
        )
        self._outbox.extend(self._watches.plan(now, self.node_id, live))

    @property
    def watch_counters(self) -> dict[str, int]:
        return self._watches.counters

    # --- local state -----------------------------------------------------------

    def _local_push_pull(self, join: bool) -> codec.PushPull:
        me = codec.MemberEntry(
            self.node_id,
            self.addr,
            self.meta,
            self.incarnation,
            codec.STATE_LEFT if self.leaving else codec.STATE_ALIVE,
            self._self_alive().signature,
        )
        states = [me] + [
            codec.MemberEntry(m.node_id, m.addr, m.meta, m.incarnation, _WIRE_STATE[m.state], m.signature)
            for m in self.members()
        ]
        return codec.PushPull(
            self.pool,
            self.region,
            join,
            tuple(states),
            self._roles.directory.local_summaries(self.pool),
            digest=self._roles.state.digest(self.pool),
            records=self._roles.gate.introduction(self.pool) if join else (),
        )

    def _next_incarnation(self, above: int) -> int:
        # Never past what peers accept: accusations are bounded by what we signed, so
        # only our own refutations raise it, one at a time.
        self.incarnation = min(max(self.incarnation, above) + 1, codec.INCARNATION_MAX)
        return self.incarnation

    def _self_alive(self) -> codec.Alive:
        """Our alive claim at our incarnation, signed in admission mode."""
        signature = self._roles.gate.sign_alive(
            self.pool, self.node_id, self.incarnation, self.addr, self.meta
        )
        return codec.Alive(self.incarnation, self.node_id, self.addr, self.meta, signature)

    def _refute(self, accused_incarnation: int) -> None:
        """Someone says we are suspect or dead: assert we are alive with a higher incarnation."""
        self._next_incarnation(accused_incarnation)
        self._awareness.apply_delta(1)
        self._count("refutations")
        self._broadcast(self._self_alive(), self.node_id)
        # Push the refutation out at once: timers at the accusers are running.
        self._refute_pending = True

    def set_meta(self, meta: bytes) -> None:
        """Change this node's metadata and announce it with a higher incarnation."""
        self.meta = meta
        self._next_incarnation(self.incarnation)
        self._broadcast(self._self_alive(), self.node_id)

    # --- joining and leaving -----------------------------------------------------

    def join(self, now: float, seeds: Sequence[str]) -> None:
        """Push-pull with every seed; retried with backoff until one answers."""
        self._join_seeds = [s for s in seeds if s != self.addr]
        # Announce ourselves; the join exchange carries our state to the seed too.
        self._broadcast(self._self_alive(), self.node_id)
        self._join_backoff_s = JOIN_RETRY_FIRST_S
        self._attempt_join(now)

    def _attempt_join(self, now: float) -> None:
        if not self._join_seeds:
            self._join_retry_s = None
            return
        for seed in self._join_seeds:
            self._open_stream(seed, self._local_push_pull(join=True), "join")
        self._join_retry_s = now + self._join_backoff_s
        self._join_backoff_s = min(self._join_backoff_s * 2, JOIN_RETRY_MAX_S)

    def leave(self, now: float) -> None:
        """Graceful leave: tell the pool we left (a dead notice from ourselves)."""
        if self.leaving:
            return
        self.leaving = True
        self._probe = None
        self._urgent = None
        self._outbox.extend(self._watches.close_all())
        self._join_retry_s = None
        self._broadcast(codec.Dead(self.incarnation, self.node_id, self.node_id), self.node_id)
        # Push the notice out now rather than waiting for the next gossip tick.
        for m in self.gossip_targets(self.config.gossip_nodes, now):
            self._send(now, m.addr, [])

    def restore(
        self, now: float, node_id: str, addr: str, meta: bytes, incarnation: int, signature: bytes = b""
    ) -> None:
        """Install a member known alive without broadcasting (warm start); only if admitted.

        signature: the member's own signature of that claim, which we pass on in
        push-pull (without it, peers in admission mode learn the member only from
        its next signed claim)."""
        if node_id == self.node_id or node_id in self._members:
            return
        if not self._roles.gate.may_join(self.pool, node_id, meta):
            self._count("drop_not_admitted")
            return
        m = self._add(now, node_id, addr, meta, incarnation, MemberState.ALIVE)
        if m is not None:
            m.signature = signature

    def _add(
        self, now: float, node_id: str, addr: str, meta: bytes, inc: int, state: MemberState
    ) -> Member | None:
        if len(self._members) >= self.config.members_max:
            self._count("drop_members_full")
            return None
        m = Member(node_id, addr, meta, inc, state, now, now)
        self._members[node_id] = m
        if self._authenticated:
            self._by_addr[addr] = node_id
        # Insert at a random position so a new member is probed within one round.
        self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), node_id)
        if state in (MemberState.ALIVE, MemberState.SUSPECT):
            self._live_changed(+1)
        return m

    # --- message handling ---------------------------------------------------------

    def handle_messages(
        self, now: float, src: str, messages: Sequence[codec.Message], sender_id: str = ""
    ) -> None:
        """Process the messages of one decoded packet from src.

        sender_id is the member the driver's envelope proved the packet came from
        ("" for a network-key frame). With authenticated members, only a packet
        from the member we know at src is a member's; anything else is a stranger's.
        """
        if self._authenticated and (not sender_id or self._by_addr.get(src) != sender_id):
            self._from_stranger(now, src, messages)
        else:
            if self._authenticated:
                messages = self._own_claims(sender_id, messages)
            self._dispatch(now, src, messages)
        self._push_refutation(now)

    def _own_claims(self, sender_id: str, messages: Sequence[codec.Message]) -> Sequence[codec.Message]:
        """Drop (counted) messages that claim another sender than the one the envelope proved."""
        if not any(_claims_other_sender(msg, sender_id) for msg in messages):
            return messages
        kept = [msg for msg in messages if not _claims_other_sender(msg, sender_id)]
        self._count("drop_claim_not_sender", len(messages) - len(kept))
        return kept

    def member_at(self, addr: str) -> str | None:
        """The id of the member at addr (authenticated pools only; None elsewhere)."""
        return self._by_addr.get(addr)

    def _from_stranger(self, now: float, src: str, messages: Sequence[codec.Message]) -> None:
        """A packet from an address no member of ours has (admission mode).

        A stranger gets nothing back but a bare ack: no piggybacked members or
        records. We take from it only what lets a real member in (its own signed
        alive claim, still subject to admission) and answers to our probes.
        """
        for msg in messages:
            match msg:
                case codec.Ping() if msg.target_id == self.node_id:
                    packet = codec.encode_packet(
                        self.pool, self.region, [codec.encode_message(codec.Ack(msg.seq))]
                    )
                    self._outbox.append(Datagram(src, packet))
                case codec.Ack():
                    self._on_ack(now, msg)
                case codec.Nack():
                    self._on_nack(msg)
                case codec.Alive() if msg.addr == src:
                    self._on_alive(now, msg)
                case codec.RecordGossip() if revokes(msg.blob, self.node_id):
                    # Our own revocation, operator-signed (the store verifies it): the one
                    # thing a member still tells a device it expelled (see expel).
                    self._roles.messages.on_message(self.pool, now, src, msg)
                case _:
                    self._count("drop_from_stranger")

    def _push_refutation(self, now: float) -> None:
        if self._refute_pending:
            self._refute_pending = False
            for m in self.gossip_targets(self.config.gossip_nodes, now):
                self._send(now, m.addr, [])

    def _dispatch(self, now: float, src: str, messages: Sequence[codec.Message]) -> None:
        for msg in messages:
            match msg:
                case codec.Ping():
                    self._on_ping(now, src, msg)
                case codec.IndirectPing():
                    self._on_indirect_ping(now, src, msg)
                case codec.Ack():
                    self._on_ack(now, msg)
                case codec.Nack():
                    self._on_nack(msg)
                case codec.Alive():
                    self._on_alive(now, msg)
                case codec.Suspect():
                    self._on_suspect(now, msg, src)
                case codec.Dead():
                    self._on_dead(now, msg, src)
                case codec.UserBroadcast() | codec.Summary() | codec.RecordGossip() | codec.AppMessage():
                    self._roles.messages.on_message(self.pool, now, src, msg)
                case _:
                    self._count("drop_unexpected_message")

    def _on_ping(self, now: float, src: str, msg: codec.Ping) -> None:
        if msg.target_id != self.node_id:
            # A ping for a node that used to live at this address (it moved, we reused it).
            self._count("drop_ping_wrong_target")
            return
        msgs = [codec.encode_message(codec.Ack(msg.seq))]
        told = self._tell_dead(now, src, msg.src_id)
        if told is not None:
            msgs.append(told)
        self._send(now, src, msgs)

    def _tell_accuser(self, now: float, src: str | None, m: Member) -> None:
        """Someone still accuses m, which we hold dead at that incarnation: tell it so.

        A member that heard of m late (it joined the pool after the death was gossiped,
        or missed every notice) suspects it and waits out its own suspicion timer, with
        no one left to confirm it: up to the maximum timeout (minutes in the fleet pool).
        At most once per probe interval per (address, member).
        """
        if src is None:
            return
        key = (src, m.node_id)
        if now - self._told_accuser_s.get(key, -1e18) < self.config.probe_interval_s:
            return
        if len(self._told_accuser_s) >= TOLD_DEAD_KEPT:
            self._told_accuser_s.clear()  # only a rate limit
        self._told_accuser_s[key] = now
        self._count("dead_told_accuser")
        self._send(now, src, [codec.encode_message(codec.Dead(m.incarnation, m.node_id, self.node_id))])

    def _tell_dead(self, now: float, src: str, src_id: str) -> bytes | None:
        """A member we hold dead pings us: it lives. Tell it it was declared dead, so it
        refutes now rather than when a push-pull next tells it (up to 30 s later: the dead
        notice has long stopped being gossiped when a cut member's traffic flows again).
        At most once per probe interval per member."""
        m = self._members.get(src_id)
        if m is None or m.state != MemberState.DEAD or m.addr != src:
            return None
        if now - self._told_dead_s.get(src_id, -1e18) < self.config.probe_interval_s:
            return None
        if len(self._told_dead_s) >= TOLD_DEAD_KEPT:
            self._told_dead_s.clear()  # only a rate limit: forgetting costs one more notice each
        self._told_dead_s[src_id] = now
        self._count("dead_told")
        return codec.encode_message(codec.Dead(m.incarnation, m.node_id, self.node_id))

    def _on_indirect_ping(self, now: float, src: str, msg: codec.IndirectPing) -> None:
        self._seq += 1
        deadline = now + self._awareness.scale_timeout(self.config.probe_timeout_s)
        if len(self._forwards) >= 256:
            self._count("drop_indirect_full")
            return
        self._forwards[self._seq] = _Forward(src, msg.seq, msg.nack, deadline, msg.target_id, msg.target_addr)
        self._send(
            now, msg.target_addr, [codec.encode_message(codec.Ping(self._seq, msg.target_id, self.node_id))]
        )
        # Checked at once, alongside the ping: the answer must be in by our deadline.
        self._ask_check(msg.target_addr, False, self._seq)

    def _on_ack(self, now: float, msg: codec.Ack) -> None:
        if msg.seq == BUDDY_PING_SEQ:
            return  # the answer that matters to a buddy ping is the suspect's alive notice
        probe = self._probe_by_seq(msg.seq)
        if probe is not None and not probe.acked:
            probe.acked = True
            return
        fwd = self._forwards.pop(msg.seq, None)
        if fwd is not None:
            self._send(now, fwd.requester_addr, [codec.encode_message(codec.Ack(fwd.requester_seq))])
            return
        self._count("late_ack")

    def _on_nack(self, msg: codec.Nack) -> None:
        probe = self._probe_by_seq(msg.seq)
        if probe is not None:
            probe.nacks += 1

    def _on_alive(self, now: float, msg: codec.Alive) -> None:
        self._alive(now, msg.incarnation, msg.node_id, msg.addr, msg.meta, msg.signature, msg)

    def _alive(
        self,
        now: float,
        incarnation: int,
        node_id: str,
        addr: str,
        meta: bytes,
        signature: bytes,
        msg: codec.Alive | None,
    ) -> None:
        """An alive claim, from a message or a push-pull entry (msg None: made only if needed,
        since most entries of a push-pull are news to no one)."""
        gate = self._roles.gate
        if node_id == self.node_id:
            if self.leaving:
                return
            if incarnation > self.incarnation or (
                incarnation == self.incarnation and (addr, meta) != (self.addr, self.meta)
            ):
                msg = msg or codec.Alive(incarnation, node_id, addr, meta, signature)
                if self._authenticated and not gate.verify_alive(self.pool, msg):
                    self._count("drop_alive_forged")  # a claim in our name we did not make
                    return
                self._refute(incarnation)
            return
        if len(meta) > self.config.meta_max_bytes:
            self._count("drop_meta_oversized")
            return
        if not gate.may_join(self.pool, node_id, meta):
            self._park(now, msg or codec.Alive(incarnation, node_id, addr, meta, signature))
            return
        m = self._members.get(node_id)
        if m is not None and incarnation <= m.incarnation:
            return
        msg = msg or codec.Alive(incarnation, node_id, addr, meta, signature)
        if self._authenticated and not gate.verify_alive(self.pool, msg):
            self._count("drop_alive_forged")
            return
        if m is None:
            added = self._add(now, msg.node_id, msg.addr, msg.meta, msg.incarnation, MemberState.ALIVE)
            if added is None:
                return
            added.signature = msg.signature
            self._emit(added)
            self._broadcast(msg, msg.node_id)
            return
        changed = m.state != MemberState.ALIVE or m.addr != msg.addr
        if m.addr != msg.addr:
            self.live_set_version += 1  # same member, new address: owners re-read addresses
            if self._authenticated:
                if self._by_addr.get(m.addr) == m.node_id:
                    del self._by_addr[m.addr]
                self._by_addr[msg.addr] = m.node_id
        self._clear_suspicion(msg.node_id)
        m.incarnation, m.addr, m.meta, m.signature = msg.incarnation, msg.addr, msg.meta, msg.signature
        if m.state != MemberState.ALIVE:
            if m.state != MemberState.SUSPECT:
                m.alive_since_s = now
                self._live_changed(+1)
                self._revivals_since_sync += 1
                if self._revivals_since_sync == REVIVALS_FOR_EARLY_SYNC:
                    # Several members came back at once: a partition healed. Gossip alone can
                    # miss a node in the storm of updates; one early full exchange does not.
                    self._push_pull_soon(now)
            m.state, m.state_change_s = MemberState.ALIVE, now
        if changed:
            self._emit(m)
        self._broadcast(msg, msg.node_id)

    def _park(self, now: float, msg: codec.Alive) -> None:
        """Keep the newest alive notice of a node not (yet) admitted: its admission record
        may still be on its way. Bounded; the oldest parked node is forgotten first.

        A region member's admission spreads as an epidemic, which can miss a member;
        anti-entropy repairs that, so a new parked node brings our next push-pull
        forward instead of leaving the node out until the periodic one."""
        parked = self._unadmitted.get(msg.node_id)
        if parked is None:
            self._count("admission_pending")
            if len(self._unadmitted) >= self.config.members_max:
                self._unadmitted.popitem(last=False)
                self._count("drop_parked_full")
            if self.pool == codec.POOL_REGION:
                self._push_pull_soon(now)
        elif parked.incarnation >= msg.incarnation:
            return
        self._unadmitted[msg.node_id] = msg
        self._unadmitted.move_to_end(msg.node_id)

    def admitted(self, now: float, node_id: str) -> None:
        """node_id's admission arrived: take its parked alive notice, if any."""
        msg = self._unadmitted.pop(node_id, None)
        if msg is not None:
            self._count("admitted_parked")
            self._on_alive(now, msg)

    def expel(self, now: float, node_id: str, notice: bytes = b"") -> None:
        """node_id lost its admission (revoked): dead here, and nothing of it is parked.

        notice (an encoded RecordGossip of the revocation) is sent to it once, alone:
        with authenticated members we no longer open its frames nor seal to it, and
        this is how it learns why (Membership._from_stranger takes it).
        """
        self._unadmitted.pop(node_id, None)
        m = self._members.get(node_id)
        if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
            self._count("expelled")
            if notice:
                self._count("revocation_told")
                self._outbox.append(Datagram(m.addr, codec.encode_packet(self.pool, self.region, [notice])))
            self._on_dead(now, codec.Dead(m.incarnation, node_id, self.node_id))

    def _clear_suspicion(self, node_id: str) -> None:
        self._suspicions.pop(node_id, None)
        self._buddy_pinged_s.pop(node_id, None)

    def _tell_alive(self, now: float, src: str | None) -> None:
        """Answer an accusation straight to whoever sent it: we are alive, at this incarnation.

        The accuser may have missed our refutation (it was gossiped, and gossip
        can miss a node under loss); without this it would declare us dead when
        its timer runs out, however often we talk to it.
        """
        if src is not None and not self.leaving:
            self._count("accusations_answered")
            self._send(now, src, [codec.encode_message(self._self_alive())])

    def _above_signed(self, accused: str, incarnation: int) -> bool:
        """True (and counted) if an accusation names an incarnation the accused never signed.

        In admission mode a member's incarnation here only rises with its own signed
        alive claims, so an accusation above it is made up: taking it would let
        anyone out-bid the accused's refutations.
        """
        if not self._authenticated:
            return False
        held = self.incarnation if accused == self.node_id else None
        if held is None:
            m = self._members.get(accused)
            held = m.incarnation if m is not None else None
        if held is None or incarnation <= held:
            return False
        self._count("drop_accusation_above_signed")
        return True

    def _recover_incarnation(self, incarnation: int, addr: str, meta: bytes, signature: bytes) -> None:
        """A peer holds us dead or left at an incarnation above ours: a life this node forgot
        (its database restored from an old backup, or its incarnation row lost). In admission
        mode an accusation above our incarnation is refused as made up (`_above_signed`), so
        the entry must carry our own signature of that incarnation; then we refute above it.
        """
        if self.leaving:
            return
        claim = codec.Alive(incarnation, self.node_id, addr, meta, signature)
        if self._authenticated and not self._roles.gate.verify_alive(self.pool, claim):
            self._count("drop_accusation_above_signed")
            return
        self._count("own_incarnation_recovered")
        self._refute(incarnation)

    def _on_suspect(self, now: float, msg: codec.Suspect, src: str | None = None) -> None:
        if self._above_signed(msg.node_id, msg.incarnation):
            return
        if msg.node_id == self.node_id:
            if msg.incarnation >= self.incarnation and not self.leaving:
                self._refute(msg.incarnation)
            self._tell_alive(now, src)
            return
        m = self._members.get(msg.node_id)
        if m is None or msg.incarnation < m.incarnation:
            return
        if m.state == MemberState.DEAD and msg.incarnation == m.incarnation:
            self._tell_accuser(now, src, m)
            return
        timer = self._suspicions.get(msg.node_id)
        if timer is not None:
            m.incarnation = msg.incarnation  # a later suspicion of the same suspect
            confirmed = timer.confirm(msg.from_id)
            if self._take_evidence(now, timer, msg) or confirmed:
                # Re-gossip a confirmation (or new evidence) so the other timers shrink too.
                self._broadcast(self._with_evidence(msg, timer), msg.node_id)
            return
        if m.state != MemberState.ALIVE:
            return
        timer = self._start_suspicion(now, m, msg.incarnation, msg.from_id)
        self._take_evidence(now, timer, msg)
        self._broadcast(self._with_evidence(msg, timer), msg.node_id)

    def _take_evidence(self, now: float, timer: Suspicion, msg: codec.Suspect) -> bool:
        """Add msg's connection evidence to timer; True if it learned something new."""
        new = False
        for by_id in msg.refused_by:
            # The suspect cannot witness its own death (a forged notice would try).
            if by_id != msg.node_id and timer.refused(by_id, now):
                new = True
        if msg.stalled and timer.accepted(now):
            new = True
        return new

    @staticmethod
    def _with_evidence(msg: codec.Suspect, timer: Suspicion) -> codec.Suspect:
        """msg carrying all the evidence timer holds (every notice we pass on accumulates it)."""
        refused_by = timer.refusers[: codec.REFUSERS_PER_SUSPECT_MAX]
        if refused_by == msg.refused_by and timer.stalled == msg.stalled:
            return msg
        return replace(msg, refused_by=refused_by, stalled=timer.stalled)

    def _start_suspicion(self, now: float, m: Member, incarnation: int, from_id: str) -> Suspicion:
        n = self._alive_count
        k = self.config.suspicion_mult - 2
        if n - 2 < k:  # too few peers to expect k independent confirmations
            k = 0
        min_s = suspicion_timeout_s(self.config.suspicion_mult, n, self.config.probe_interval_s)
        max_s = self.config.suspicion_max_timeout_mult * min_s
        # Refusals from refusers_needed members, or from every other member of a smaller
        # pool (n counts us and the suspect).
        needed = max(1, min(self.config.refusers_needed, n - 1))
        timer = Suspicion(
            from_id,
            k,
            min_s,
            max_s,
            now,
            refusers_needed=needed,
            refused_floor_s=self.config.refused_dead_after_s,
            stalled_floor_s=self.config.stalled_dead_after_s,
        )
        self._suspicions[m.node_id] = timer
        m.incarnation, m.state, m.state_change_s = incarnation, MemberState.SUSPECT, now
        self._count("suspicions")
        self._emit(m)
        return timer

    def _on_dead(self, now: float, msg: codec.Dead, src: str | None = None) -> None:
        if self._above_signed(msg.node_id, msg.incarnation):
            return
        if msg.node_id == self.node_id:
            if not self.leaving:
                self._refute(msg.incarnation)
                self._tell_alive(now, src)
            return
        m = self._members.get(msg.node_id)
        if m is None or msg.incarnation < m.incarnation:
            return
        if m.state in (MemberState.DEAD, MemberState.LEFT):
            return
        self._clear_suspicion(msg.node_id)
        left = msg.from_id == msg.node_id
        m.incarnation, m.state, m.state_change_s = (
            msg.incarnation,
            (MemberState.LEFT if left else MemberState.DEAD),
            now,
        )
        self._live_changed(-1)
        self._emit(m)
        self._broadcast(msg, msg.node_id)

    def declare_dead(self, now: float, node_id: str, *, left: bool = False) -> None:
        """Declare a member dead, or gone by its own leave, on outside evidence (its region pool)."""
        m = self._members.get(node_id)
        if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
            self._count("declared_left_by_region" if left else "declared_dead_by_region")
            # A leave is relayed as the member's own notice (from itself), so it stays a leave.
            self._on_dead(now, codec.Dead(m.incarnation, node_id, node_id if left else self.node_id))

    # --- streams (push-pull) ----------------------------------------------------------

    def handle_push_pull(
        self, now: float, src: str, remote: codec.PushPull, sender_id: str = "", claimed_id: str = ""
    ) -> codec.PushPull:
        """Answer a peer's push-pull with our state, then merge theirs.

        With authenticated members, sender_id (the member the envelope proved,
        "" for a network-key frame) must be the asker's own entry; only a join
        may come under the network key (the joiner does not know our key yet),
        and its entry must be the node the frame names (claimed_id), for the
        answer is sealed to that node's key: a replayed admission reads nothing.
        """
        if remote.region != self.region and self.pool == codec.POOL_REGION:
            # A node of another region contacted us: tell it what we know of the
            # fleet (summaries) so it can find its own region and the gateways.
            self._count("redirects_sent")
            return codec.PushPull(
                self.pool,
                self.region,
                remote.join,
                (),
                self._roles.directory.redirect_summaries(self.pool),
                True,
            )
        sender = remote.states[0] if remote.states else None
        if self._authenticated and (
            (sender_id and (sender is None or sender.node_id != sender_id))
            or (not sender_id and not (remote.join and sender is not None and sender.node_id == claimed_id))
        ):
            self._count("drop_push_pull_not_sender")
            return codec.PushPull(self.pool, self.region, remote.join, (), ())
        if remote.records:
            # A joiner's admission rides on its request: judge it (once) before answering.
            self._roles.state.merge(self.pool, now, remote.records)
            remote = replace(remote, records=())
        if sender is None or not self._roles.gate.may_join(self.pool, sender.node_id, sender.meta):
            # Not (yet) admitted: it learns nothing of the pool or its state from us.
            self._count("drop_push_pull_not_admitted")
            return codec.PushPull(self.pool, self.region, remote.join, (), ())
        reply = self._local_push_pull(join=False)
        # Anti-entropy of the state store rides along: answer with what the asker lacks.
        missing = self._roles.state.missing(self.pool, remote.digest)
        if missing:
            reply = replace(reply, records=missing)
        self._merge(now, remote)
        self._push_refutation(now)
        if remote.join:
            self._push_pull_soon(now)
        return reply

    def _push_pull_soon(self, now: float) -> None:
        """Bring the next full exchange forward: the pool just changed shape (a join).

        In a small pool the retransmit limit is low and news can die out before it
        reaches everyone; one early exchange with a random member repairs that.
        """
        soon_s = now + self._rng.uniform(1.0, 3.0) * 5 * self.config.gossip_interval_s
        self._next_push_pull_s = min(self._next_push_pull_s, soon_s)

    def handle_stream_reply(self, now: float, request_id: int, reply: codec.PushPull | None) -> None:
        """The answer to a push-pull this pool opened (None: unreachable)."""
        entry = self._streams.pop(request_id, None)
        if entry is None:
            self._count("drop_stream_unknown")
            return
        dst, purpose = entry
        if purpose == "push":
            return  # the acknowledgement of records we pushed (None: they may come again later)
        if reply is None:
            self._count("stream_failures")
            return
        if purpose == "join":
            self._join_retry_s = None
            self._push_pull_soon(now)
        if reply.redirect:
            self._count("redirects_received")
            self._roles.directory.on_redirect(self.pool, now, reply)
            return
        self._merge(now, reply)
        self._push_refutation(now)
        # The other half of anti-entropy: push what the peer lacks of ours.
        missing = self._roles.state.missing(self.pool, reply.digest)
        if missing:
            self._open_stream(dst, codec.RecordPush(self.pool, missing), "push")

    def _merge(self, now: float, remote: codec.PushPull) -> None:
        # Records first: the admissions among them let the members below in.
        if remote.records:
            self._roles.state.merge(self.pool, now, remote.records)
        # Entries are tuples: unpacking one is cheaper than reading its fields by name, per member.
        for node_id, addr, meta, incarnation, state, signature in remote.states:
            if node_id == self.node_id and state != codec.STATE_ALIVE and incarnation > self.incarnation:
                self._recover_incarnation(incarnation, addr, meta, signature)
                continue
            if state == codec.STATE_ALIVE:
                self._alive(now, incarnation, node_id, addr, meta, signature, None)
            elif state == codec.STATE_LEFT:
                self._on_dead(now, codec.Dead(incarnation, node_id, node_id))
            else:
                # memberlist: prefer to suspect a node the peer thinks dead, not to kill it outright.
                if node_id not in self._members and node_id != self.node_id:
                    continue
                self._on_suspect(now, codec.Suspect(incarnation, node_id, self.node_id))
        self._roles.directory.merge_summaries(self.pool, now, remote.summaries)

    # --- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """The earliest time this pool needs handle_timer."""
        t = min(self._next_probe_s, self._next_push_pull_s, self._next_reconnect_s)
        if len(self._queue):  # the gossip tick only matters when there is something to say
            t = min(t, self._next_gossip_s)
        for probe in (self._probe, self._urgent):
            if probe is not None:
                t = min(t, probe.end_s if probe.indirect_sent else probe.direct_deadline_s)
        for f in self._forwards.values():
            t = min(t, f.deadline_s)
        for s in self._suspicions.values():
            t = min(t, max(s.deadline_s(), self._hold_expiry_until_s))
        if self._join_retry_s is not None:
            t = min(t, self._join_retry_s)
        return t

    def handle_timer(self, now: float) -> None:
        """Run everything that is due at `now`."""
        # The probe tick is always armed, so running far behind it means we were starved.
        # (The gossip tick is no measure: it sleeps while there is nothing to gossip.)
        late_s = now - self._next_probe_s
        if late_s > self.config.probe_timeout_s and not self.leaving:
            self._starved(now, late_s)
        if self._join_retry_s is not None and now >= self._join_retry_s:
            self._attempt_join(now)
        if self._probe is not None:
            self._probe = self._check_probe(now, self._probe)
        if self._urgent is not None:
            self._urgent = self._check_probe(now, self._urgent)
        if now >= self._next_probe_s:
            self._start_probe(now)
            if self._watches.enabled and not self.leaving:
                self._plan_watches(now)
        self._expire_forwards(now)
        self._expire_suspicions(now)
        if now >= self._next_gossip_s and len(self._queue):
            late = now - self._next_gossip_s >= self.config.gossip_interval_s
            self._next_gossip_s = (now if late else self._next_gossip_s) + self.config.gossip_interval_s
            self._gossip(now)
        if now >= self._next_push_pull_s:
            self._next_push_pull_s = now + self._push_pull_interval_s()
            self._push_pull(now)
        if now >= self._next_reconnect_s:
            self._next_reconnect_s = now + self.config.reconnect_interval_s
            self._reconnect(now)
        self._push_refutation(now)

    def _starved(self, now: float, late_s: float) -> None:
        """We are running far behind our own timers: our process or host was starved.

        Whatever answered us meanwhile is still unread (in the socket buffer, in
        the event loop's queue). Judge nothing on stale timers: drop the probe in
        flight without blame, hold suspicion expiries for one probe interval so
        pending refutations get read first, and raise our own health score
        (Lifeguard: a slow node should be slow to accuse).
        """
        self._count("starved_timer_runs")
        self._probe = None
        self._urgent = None
        self._hold_expiry_until_s = now + self.config.probe_interval_s
        self._awareness.apply_delta(1)

    def _next_probe_target(self) -> Member | None:
        checked = 0
        while checked < len(self._probe_order):
            if self._probe_index >= len(self._probe_order):
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
            node_id = self._probe_order[self._probe_index]
            self._probe_index += 1
            checked += 1
            m = self._members.get(node_id)
            if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return m
        return None

    def _ping_a_suspect(self, now: float) -> None:
        """Buddy-ping one suspect we have not pinged lately, with the suspicion attached.

        Round-robin probing reaches a given member only once per round (N
        intervals); a suspicion can run out before then. A suspect that is in
        fact alive answers an accusation straight to the accuser (_tell_alive).
        """
        for node_id in self._suspicions:
            last_s = self._buddy_pinged_s.get(node_id, -1e18)
            if now - last_s < SUSPECT_REPING_INTERVALS * self.config.probe_interval_s:
                continue
            m = self._members.get(node_id)
            if m is None or m.state != MemberState.SUSPECT:
                continue
            self._buddy_pinged_s[node_id] = now
            ping = codec.Ping(BUDDY_PING_SEQ, node_id, self.node_id)
            notice = codec.Suspect(m.incarnation, node_id, self.node_id)
            self._send(now, m.addr, [codec.encode_message(ping), codec.encode_message(notice)])
            return

    def _start_probe(self, now: float) -> None:
        interval_s = self._awareness.scale_timeout(self.config.probe_interval_s)
        self._next_probe_s = now + interval_s
        if self._suspicions and not self.leaving:
            self._ping_a_suspect(now)
        if self.leaving or self._probe is not None:
            return
        target = self._next_probe_target()
        if target is None:
            return
        self._seq += 1
        timeout_s = self._awareness.scale_timeout(self.config.probe_timeout_s)
        self._probe = _Probe(target.node_id, self._seq, now, now + timeout_s, now + interval_s)
        self._count("probes")
        msgs = [codec.encode_message(codec.Ping(self._seq, target.node_id, self.node_id))]
        if target.state == MemberState.SUSPECT:
            # Buddy system: tell the suspect directly so it can refute at once.
            msgs.append(codec.encode_message(codec.Suspect(target.incarnation, target.node_id, self.node_id)))
        self._send(now, target.addr, msgs)

    def _check_probe(self, now: float, probe: _Probe) -> _Probe | None:
        """Move a probe on at now; the probe if it is still running, else None."""
        if probe.acked:
            self._awareness.apply_delta(-1)
            return None
        if not probe.indirect_sent:
            if now < probe.direct_deadline_s:
                return probe
            self._send_indirect(now, probe)
        if now < probe.end_s:
            return probe
        self._end_unanswered(now, probe)
        return None

    def _end_unanswered(self, now: float, probe: _Probe) -> None:
        """A probe ended with no ack, direct or indirect: suspect its target, with our evidence."""
        # Lifeguard: missing nacks mean our own link or CPU may be the problem.
        if probe.nacks_expected > 0:
            self._awareness.apply_delta(max(0, probe.nacks_expected - probe.nacks))
        else:
            self._awareness.apply_delta(1)
        m = self._members.get(probe.target_id)
        if m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return
        if m.state == MemberState.ALIVE:
            self._count("probe_failures")
        # What our connection check saw goes with the accusation (timed out: nothing).
        refused_by = (self.node_id,) if probe.check == CheckResult.REFUSED else ()
        stalled = probe.check == CheckResult.ACCEPTED
        self._on_suspect(now, codec.Suspect(m.incarnation, m.node_id, self.node_id, refused_by, stalled))

    def _send_indirect(self, now: float, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target_id)
        if target is None:
            return
        helpers = self._random_members(
            self.config.indirect_checks, exclude=probe.target_id, states=(MemberState.ALIVE,)
        )
        probe.nacks_expected = len(helpers)
        for h in helpers:
            req = codec.IndirectPing(probe.seq, target.node_id, target.addr, self.node_id, True)
            self._send(now, h.addr, [codec.encode_message(req)])
        self._ask_check(target.addr, True, probe.seq)

    def _expire_forwards(self, now: float) -> None:
        due = [seq for seq, f in self._forwards.items() if now >= f.deadline_s]
        for seq in due:
            f = self._forwards.pop(seq)
            msgs = [codec.encode_message(codec.Nack(f.requester_seq))] if f.nack else []
            if f.check == CheckResult.REFUSED:
                # Our own ping went unanswered and nothing listens at its port: we are an
                # independent witness. Suspect it ourselves, and tell the requester at once
                # (its probe ends about now; gossip alone may reach it late).
                notice = self._helper_suspects(now, f)
                if notice is not None:
                    msgs.append(codec.encode_message(notice))
            if msgs:
                self._send(now, f.requester_addr, msgs)

    def _helper_suspects(self, now: float, f: _Forward) -> codec.Suspect | None:
        """Suspect the target of an indirect probe whose port refused us; the notice to send."""
        m = self._members.get(f.target_id)
        if m is None or m.addr != f.target_addr or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return None
        self._count("helper_refusals")
        self._on_suspect(now, codec.Suspect(m.incarnation, m.node_id, self.node_id, (self.node_id,)))
        timer = self._suspicions.get(m.node_id)
        if timer is None:
            return None
        return self._with_evidence(codec.Suspect(m.incarnation, m.node_id, self.node_id), timer)

    def _expire_suspicions(self, now: float) -> None:
        if now < self._hold_expiry_until_s:
            return
        due = [nid for nid, s in self._suspicions.items() if now >= s.deadline_s()]
        for node_id in due:
            refused = self._suspicions[node_id].refused_quorum
            self._clear_suspicion(node_id)
            m = self._members.get(node_id)
            if m is None or m.state != MemberState.SUSPECT:
                continue
            self._count("declared_dead")
            if refused:
                self._count("declared_dead_refused")
            self._on_dead(now, codec.Dead(m.incarnation, node_id, self.node_id))

    def _random_members(
        self, k: int, *, exclude: str, states: tuple[MemberState, ...], now: float | None = None
    ) -> list[Member]:
        """Up to k distinct random members in one of `states` (or dead within gossip-to-the-dead)."""
        ids = self._probe_order  # a list: deterministic order, no set iteration
        picked: list[Member] = []
        if not ids:
            return picked
        # Sample without building a filtered copy: try random indexes, bounded attempts.
        attempts = 0
        seen: dict[str, None] = {}
        while len(picked) < k and attempts < 3 * k + 8:
            attempts += 1
            node_id = ids[self._rng.randrange(len(ids))]
            if node_id == exclude or node_id in seen:
                continue
            seen[node_id] = None
            m = self._members[node_id]
            if m.state in states or (
                now is not None
                and m.state == MemberState.DEAD
                and now - m.state_change_s < self.config.gossip_to_the_dead_s
            ):
                picked.append(m)
        return picked

    def gossip_targets(self, k: int, now: float) -> list[Member]:
        return self._random_members(
            k, exclude=self.node_id, states=(MemberState.ALIVE, MemberState.SUSPECT), now=now
        )

    def _gossip(self, now: float) -> None:
        if not len(self._queue):
            return
        for m in self.gossip_targets(self.config.gossip_nodes, now):
            if not len(self._queue):
                break
            self._send(now, m.addr, [])

    def _push_pull(self, now: float) -> None:
        self._revivals_since_sync = 0
        if self.leaving:
            return
        picked = self._random_members(1, exclude=self.node_id, states=(MemberState.ALIVE,))
        if picked:
            self._open_stream(picked[0].addr, self._local_push_pull(join=False), "sync")

    def _reconnect(self, now: float) -> None:
        """Serf's reconnect: now and then, a push-pull with a member we hold dead.

        A dead member may only have been cut off. If it answers, the exchange
        tells each side the other is alive (and makes both refute), so a healed
        partition merges without waiting for the regular push-pull. The chance is
        dead / (alive + dead), so one crashed node in a big pool costs little.
        """
        if self.leaving:
            return
        dead = [m for m in self._members.values() if m.state == MemberState.DEAD]
        if not dead or self._rng.random() >= len(dead) / (self._alive_count - 1 + len(dead)):
            return
        target = self._rng.choice(dead)
        self._count("reconnect_attempts")
        self._open_stream(target.addr, self._local_push_pull(join=False), "sync")


def _claims_other_sender(msg: codec.Message, sender_id: str) -> bool:
    """Whether msg names a sender (a ping's source, an application message's author) other than sender_id."""
    if isinstance(msg, codec.Ping | codec.IndirectPing):
        return msg.src_id != sender_id
    if isinstance(msg, codec.AppMessage):
        return msg.from_id != sender_id
    return False
