"""The composite node core: the gossip layer plus the cores hosted above it (sans-IO).

`Node` is what every driver builds and drives (docs/core-api.md): it implements
`gossip.io.Core`, so the asyncio runtime and the simulator drive it exactly as
they drove a bare gossip node. It hosts a `GossipNode` and any number of hosted
cores (node/hosted.py), each owning one application channel, and it merges
their deadlines, outgoing messages and events:

- inputs (datagrams, streams, timers, commands) go to the gossip node; the
  gossip events that follow are shown to every hosted core, and application
  messages are handed to the core that owns their channel;
- timers: each core's `handle_timer` runs when its own deadline is due, and
  `next_deadline` is the earliest of all;
- outputs: what hosted cores want sent goes out through the gossip node's
  sealed transport (`GossipNode.send_app`), so `poll_transmit` returns it with
  the gossip traffic; the records they make (`poll_records`) are published in
  the state store (`GossipNode.publish_record`); the driver sees gossip's events
  and the hosted cores' events.

With no hosted core the node adds nothing: every call is the gossip node's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from gossip.events import AppMessageReceived, Event
from gossip.io import CheckResult, Outbound
from gossip.node import GossipNode, MemberView, RegionSummary
from gossip.records import Record
from gossip.state import StateStore
from node.hosted import HostedCore

T = TypeVar("T")


class Node:
    """One node's protocol cores, driven as one (implements gossip.io.Core)."""

    def __init__(self, gossip: GossipNode, hosted: Sequence[HostedCore] = ()) -> None:
        self.gossip = gossip
        self._hosted: dict[int, HostedCore] = {}
        for core in hosted:
            if core.channel in self._hosted:
                raise ValueError(f"two hosted cores on channel {core.channel}")
            self._hosted[core.channel] = core
        # A list, not a deque: an empty deque takes ~700 bytes, in every node of a simulation,
        # and the few events of one input are taken at once.
        self._events: list[Event] = []
        self._counters: dict[str, int] = {}
        self._now = 0.0
        # Whether a hosted core was called since its output was last collected: a sans-IO
        # core has output only after a call, so a pump with nothing to show them skips the polls
        # (the simulator pumps every node after every input).
        self._touched = True
        # The earliest deadline of the hosted cores: it changes only when one is called, so it
        # is recomputed when their output is collected (the simulator asks after every input).
        self._hosted_due: float | None = None
        self._recompute_hosted_due()
        # Pure delegation: gossip holds everything to send (hosted cores send through it).
        self.poll_transmit = gossip.poll_transmit  # type: ignore[method-assign]
        if not self._hosted:
            # Nothing to merge: the driver's calls go straight to the gossip node, so a
            # node that hosts nothing costs nothing (the simulator calls these millions
            # of times).
            self.handle_datagram = gossip.handle_datagram  # type: ignore[method-assign]
            self.handle_stream_request = gossip.handle_stream_request  # type: ignore[method-assign]
            self.handle_stream_reply = gossip.handle_stream_reply  # type: ignore[method-assign]
            self.handle_conn_check = gossip.handle_conn_check  # type: ignore[method-assign]
            self.handle_watch_ended = gossip.handle_watch_ended  # type: ignore[method-assign]
            self.handle_timer = gossip.handle_timer  # type: ignore[method-assign]
            self.next_deadline = gossip.next_deadline  # type: ignore[method-assign]
            self.next_event = gossip.next_event  # type: ignore[method-assign]
            self.drain_events = gossip.drain_events  # type: ignore[method-assign]

    def hosted(self, channel: int) -> HostedCore:
        """The hosted core on `channel` (KeyError if none)."""
        return self._hosted[channel]

    # --- gossip.io.Core -----------------------------------------------------------------

    def handle_datagram(self, now: float, src: str, data: bytes, sender_id: str = "") -> None:
        """One datagram (plaintext) from src, sent by member sender_id ("" unproven); bad input is counted."""
        self.gossip.handle_datagram(now, src, data, sender_id)
        self._pump(now)

    def handle_stream_request(
        self, now: float, src: str, data: bytes, sender_id: str = "", claimed_id: str = ""
    ) -> bytes | None:
        """A peer opened a stream with one frame; returns our reply frame (None: refuse)."""
        reply = self.gossip.handle_stream_request(now, src, data, sender_id, claimed_id)
        self._pump(now)
        return reply

    def handle_stream_reply(self, now: float, request_id: int, data: bytes | None) -> None:
        """The reply to a stream this node opened; None when the peer was unreachable."""
        self.gossip.handle_stream_reply(now, request_id, data)
        self._pump(now)

    def handle_conn_check(self, now: float, request_id: int, result: CheckResult) -> None:
        """The answer to a connection check the node asked for (gossip.io.ConnCheck)."""
        self.gossip.handle_conn_check(now, request_id, result)
        self._pump(now)

    def handle_watch_ended(self, now: float, watch_id: int, peer_closed: bool) -> None:
        """The news that a watched connection the node holds ended (gossip.io.Watch)."""
        self.gossip.handle_watch_ended(now, watch_id, peer_closed)
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        """Run every core whose deadline is due at now."""
        due = self.gossip.next_deadline()
        if due is not None and due <= now:
            self.gossip.handle_timer(now)
            self._pump(now)
        due = self._hosted_due
        if due is not None and due <= now:
            for core in self._hosted.values():
                due = core.next_deadline()
                if due is not None and due <= now:
                    core.handle_timer(now)
            self._touched = True
            self._pump(now)

    def next_deadline(self) -> float | None:
        """The earliest deadline of every core."""
        t = self.gossip.next_deadline()
        h = self._hosted_due
        return h if h is not None and (t is None or h < t) else t

    def poll_transmit(self) -> list[Outbound]:  # replaced by gossip's own in __init__
        """Everything to send now, of every core (plaintext; the driver seals it)."""
        return self.gossip.poll_transmit()

    def next_event(self) -> Event | None:
        """The next event for the driver, or None."""
        if not self._events:
            self._pump(self._now)
        return self._events.pop(0) if self._events else None

    def drain_events(self) -> list[Event]:
        """Every pending event at once."""
        self._pump(self._now)
        out, self._events = self._events, []
        return out

    # --- commands (each goes through the node, so hosted cores see what follows) ----------

    def join(self, now: float, seeds: Sequence[str]) -> None:
        """Join the mesh through any known nodes ("host:port"), in any region."""
        self.gossip.join(now, seeds)
        self._pump(now)

    def leave(self, now: float) -> None:
        """Leave gracefully: every pool hears that we left, not that we died."""
        self.gossip.leave(now)
        self._pump(now)

    def broadcast(self, now: float, payload: bytes) -> tuple[str, int]:
        """Send payload to every node of the fleet; returns its (origin_id, seq)."""
        out = self.gossip.broadcast(now, payload)
        self._pump(now)
        return out

    def publish_record(self, now: float, record: Record, *, urgent: bool = False) -> bool:
        """Add a signed record made or received here (GossipNode.publish_record)."""
        new = self.gossip.publish_record(now, record, urgent=urgent)
        self._pump(now)
        return new

    def present_admission(self, now: float, record: Record) -> str | None:
        """Take record as this node's admission (GossipNode.present_admission)."""
        problem = self.gossip.present_admission(now, record)
        self._pump(now)
        return problem

    def command(self, now: float, action: Callable[[float], T]) -> T:
        """Run a hosted core's command (`action(now)`, e.g. a rotation given by an operator),
        then send what it asked for and queue its events, as after any other input."""
        out = action(now)
        self._touched = True
        self._pump(now)
        return out

    def restore_view(
        self, now: float, members: Sequence[MemberView], signatures: Mapping[str, bytes] | None = None
    ) -> None:
        """Install members known to be alive without broadcasting (warm start, restart)."""
        self.gossip.restore_view(now, members, signatures)
        self._pump(now)

    # --- reads (what drivers show: the API, the CLI, the simulator's observers) -------------

    @property
    def node_id(self) -> str:
        return self.gossip.node_id

    @property
    def addr(self) -> str:
        return self.gossip.addr

    @property
    def region(self) -> str:
        return self.gossip.region

    @property
    def state(self) -> StateStore:
        """The signed state store (read it; publish through publish_record)."""
        return self.gossip.state

    @property
    def incarnation(self) -> int:
        """This node's highest incarnation in any pool (persist it)."""
        return self.gossip.incarnation

    @property
    def is_gateway(self) -> bool:
        return self.gossip.is_gateway

    @property
    def admission_problem(self) -> str | None:
        """Why our own admission is refused by our own rules (None: admitted)."""
        return self.gossip.admission_problem

    @property
    def counters(self) -> dict[str, int]:
        """Every core's counters: gossip's as they are, the node's under "node."."""
        out = self.gossip.counters
        for k, v in self._counters.items():
            out["node." + k] = v
        return out

    def members(self, pool: str = "region") -> list[MemberView]:
        """This node's view of a pool ("region" or "fleet"), itself included, in id order."""
        return self.gossip.members(pool)

    def member(self, node_id: str, pool: str = "region") -> MemberView | None:
        """One member of a pool as `members` shows it, or None (a lookup, no list)."""
        return self.gossip.member(node_id, pool)

    @property
    def authenticated(self) -> bool:
        """Members' claims are signed and their frames sealed pairwise (admission mode)."""
        return self.gossip.admission_mode

    def peer_at(self, addr: str) -> str | None:
        """The member at addr, whom the driver seals to pairwise (gossip.envelope.PeerKeys)."""
        return self.gossip.peer_at(addr)

    def peer_key(self, node_id: str) -> bytes | None:
        """An admitted, unrevoked node's Ed25519 public key (gossip.envelope.PeerKeys)."""
        return self.gossip.member_key(node_id)

    def summaries(self) -> dict[str, RegionSummary]:
        """Every region this node knows of, its own included."""
        return self.gossip.summaries()

    # --- plumbing -------------------------------------------------------------------------------

    def _recompute_hosted_due(self) -> None:
        t: float | None = None
        for core in self._hosted.values():
            d = core.next_deadline()
            if d is not None and (t is None or d < t):
                t = d
        self._hosted_due = t

    def _count(self, key: str) -> None:
        self._counters[key] = self._counters.get(key, 0) + 1

    def _pump(self, now: float) -> None:
        """Show gossip's events to the hosted cores, route app messages, send what they ask."""
        self._now = now
        if not self._hosted:
            return  # the driver's calls go to gossip (see __init__): its events stay there
        events = self.gossip.drain_events()
        if not events and not self._touched:
            return  # the common case (the simulator pumps after every input): nothing to do
        # Hosted cores may answer an event with messages, whose sending makes more events: loop.
        for _round in range(4):
            if _round:
                events = self.gossip.drain_events()
            for e in events:
                if type(e) is AppMessageReceived:
                    core = self._hosted.get(e.channel)
                    if core is None:
                        self._count("drop_app_unknown_channel")
                    else:
                        core.handle_message(now, e.pool, e.from_id, e.payload)
                    continue
                for core in self._hosted.values():
                    core.observe(now, e)
                self._events.append(e)
            if events:
                self._touched = True
            elif not self._touched:
                return
            self._touched = False
            sent = False
            for core in self._hosted.values():
                for m in core.poll_messages():
                    sent = True
                    if not self.gossip.send_app(now, m.dst_id, core.channel, m.payload, pool=m.pool):
                        self._count("drop_app_unsent")
                for record, urgent in core.poll_records():
                    # Accepted records come back as events (RecordsAccepted): loop again.
                    sent = True
                    if not self.gossip.publish_record(now, record, urgent=urgent):
                        self._count("drop_record_refused")
                self._events.extend(core.drain_events())
            self._recompute_hosted_due()
            if not events and not sent:
                return
