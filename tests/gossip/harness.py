"""A minimal in-memory link for core tests: a lost packet is a packet not delivered.

Deliberately tiny (the real simulator lives in sim/): one heap of deliveries and
timers, a fixed latency, and a `drop` predicate the test controls. It drives
composite nodes (node/core.py), as the runtime and the simulator do; `add`
returns a node's gossip layer (what most core tests inspect), `add_node` the
composite node with hosted cores.

It models the envelope as the drivers use it (gossip/envelope.py): a node with
authenticated members seals to a member whose key it knows pairwise, carrying
its own key too until that member has sent it a pairwise frame (introducing);
the receiver opens a pairwise frame only if it knows the sender's key, an
introducing one always, then hands the core the proven sender id; anything
else travels under the network key ("").
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence

import nacl.signing

from gossip.config import LOCAL, MembershipConfig
from gossip.events import Event, MemberState
from gossip.io import CheckResult, ConnCheck, Datagram, StreamOpen, Unwatch, Watch
from gossip.node import GossipNode
from gossip.records import Record
from gossip.trust import Trust
from node.core import Node
from node.hosted import HostedCore

LATENCY_S = 0.001

DropRule = Callable[[str, str], bool]  # (src_addr, dst_addr) -> drop?


class Link:
    """Nodes joined by a perfect (unless told otherwise) network on a virtual clock."""

    def __init__(self, seed: int = 1, config: MembershipConfig = LOCAL, trust: Trust | None = None) -> None:
        self.rng = random.Random(seed)
        self.trust = trust
        self.config = config
        self.now = 0.0
        self.nodes: dict[str, Node] = {}  # addr -> node
        self.down: dict[str, None] = {}  # crashed addrs
        self.drop: DropRule = lambda src, dst: False
        # How a connection check to an address ends, when the test says so; otherwise
        # timed out for a crashed node (its host is lost) and accepted for a live one.
        self.checks: dict[str, CheckResult] = {}
        self.checks_seen: list[tuple[float, str, str, CheckResult]] = []  # (now, from, to, result)
        # Watched connections held open: (watcher addr, watcher core id, watch id) -> watched addr.
        self.watches: dict[tuple[str, int, int], str] = {}
        self.events: list[tuple[float, str, Event]] = []
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self.sent_datagrams = 0
        self.unopened = 0  # pairwise frames the receiver could not open (it lacks the sender's key)
        self.frames = {"pairwise": 0, "intro": 0, "network_key": 0}  # datagrams delivered, by sealing
        self.proven: dict[str, set[str]] = {}  # addr -> senders whose pairwise frame opened there

    def add(
        self,
        name: str,
        region: str = "r1",
        *,
        incarnation: int = 0,
        fleet_config: MembershipConfig | None = None,
        admission: Record | None = None,
        node_key: nacl.signing.SigningKey | None = None,
    ) -> GossipNode:
        """A node named name; returns its gossip layer."""
        return self.add_node(
            name,
            region,
            incarnation=incarnation,
            fleet_config=fleet_config,
            admission=admission,
            node_key=node_key,
        ).gossip

    def add_node(
        self,
        name: str,
        region: str = "r1",
        *,
        incarnation: int = 0,
        fleet_config: MembershipConfig | None = None,
        admission: Record | None = None,
        hosted: Sequence[HostedCore] = (),
        node_key: nacl.signing.SigningKey | None = None,
    ) -> Node:
        """A composite node named name, hosting `hosted`."""
        addr = f"{name}:7946"
        gossip = GossipNode(
            admission.key if admission is not None else name,
            addr,
            region,
            random.Random(self.rng.getrandbits(64)),
            region_config=self.config,
            fleet_config=fleet_config or self.config,
            api_addr=f"{name}:7800",
            incarnation=incarnation,
            now=self.now,
            trust=self.trust,
            admission=admission,
            node_key=node_key,
        )
        node = Node(gossip, hosted)
        self.nodes[addr] = node
        self.down.pop(addr, None)
        self._flush(node)
        return node

    def replace(self, gossip: GossipNode) -> None:
        """Put gossip (a restarted node) at its address in place of what ran there."""
        node = Node(gossip)
        self.nodes[gossip.addr] = node
        self.down.pop(gossip.addr, None)
        self.proven.pop(gossip.addr, None)  # a restarted driver has met no one
        self._flush(node)

    def crash(self, node: GossipNode | Node) -> None:
        """The node's host is lost: silence (its watchers hear nothing)."""
        self.down[node.addr] = None

    def kill_process(self, node: GossipNode | Node) -> None:
        """Only the node's process dies: its port refuses connections and its kernel closes
        every connection it held, so its watchers hear the end one trip later."""
        self.crash(node)
        self.checks[node.addr] = CheckResult.REFUSED
        for key, dst in list(self.watches.items()):
            if dst == node.addr:
                del self.watches[key]
                self._push(self.now + LATENCY_S, "watch_end", key)

    def _push(self, t: float, kind: str, item: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, item))

    def _flush(self, core: GossipNode | Node) -> None:
        """Deliver what core has to send and record its events (a gossip layer: its node's)."""
        node = self.nodes[core.addr] if isinstance(core, GossipNode) else core
        for out in node.poll_transmit():
            if isinstance(out, Datagram):
                self.sent_datagrams += 1
                assert len(out.payload) <= node.gossip.region_config.packet_plaintext_max_bytes
                if not self.drop(node.addr, out.dst):
                    sealing = self._sealing(node, out.dst)
                    self._push(self.now + LATENCY_S, "dgram", (node.addr, out.dst, out.payload, sealing))
            elif isinstance(out, StreamOpen):
                self._push(self.now + 2 * LATENCY_S, "stream", (node.addr, out, self._sealing(node, out.dst)))
            elif isinstance(out, ConnCheck):
                result = self.check_result(out.dst)
                self.checks_seen.append((self.now, node.addr, out.dst, result))
                after_s = out.timeout_s if result == CheckResult.TIMED_OUT else 2 * LATENCY_S
                self._push(self.now + after_s, "check", (node.addr, id(node), out.request_id, result))
            elif isinstance(out, Watch):
                self.watches[(node.addr, id(node), out.watch_id)] = out.dst
            elif isinstance(out, Unwatch):
                self.watches.pop((node.addr, id(node), out.watch_id), None)
        while (ev := node.next_event()) is not None:
            self.events.append((self.now, node.node_id, ev))
        if node.addr not in self.down:
            deadline = node.next_deadline()
            if deadline is not None:
                self._push(max(deadline, self.now), "timer", (node.addr, id(node)))

    def run_until(self, t_end: float) -> None:
        while self._heap and self._heap[0][0] <= t_end:
            t, _, kind, item = heapq.heappop(self._heap)
            self.now = t
            if kind == "timer":
                addr, ident = item  # type: ignore[misc]
                node = self.nodes.get(addr)
                if node is None or id(node) != ident or addr in self.down:
                    continue
                deadline = node.next_deadline()
                if deadline is not None and deadline > t + 1e-9:
                    continue  # a stale timer entry; a fresher one is queued
                node.handle_timer(t)
                self._flush(node)
            elif kind == "watch_end":
                addr, ident, watch_id = item  # type: ignore[misc]
                node = self.nodes.get(addr)
                if node is None or id(node) != ident or addr in self.down:
                    continue
                node.handle_watch_ended(t, watch_id, True)
                self._flush(node)
            elif kind == "check":
                addr, ident, request_id, result = item  # type: ignore[misc]
                node = self.nodes.get(addr)
                if node is None or id(node) != ident or addr in self.down:
                    continue
                node.handle_conn_check(t, request_id, result)
                self._flush(node)
            elif kind == "dgram":
                src, dst, payload, sealing = item  # type: ignore[misc]
                node = self.nodes.get(dst)
                if node is None or dst in self.down:
                    continue
                sender = self._opened_from(node, sealing)
                if sender is None:
                    continue
                self.frames[sealing[0] if sealing else "network_key"] += 1
                node.handle_datagram(t, src, payload, sender)
                self._flush(node)
            else:
                src, req, sealing = item  # type: ignore[misc]
                client = self.nodes.get(src)
                server = self.nodes.get(req.dst)
                reply = None
                if (
                    server is not None
                    and req.dst not in self.down
                    and not self.drop(src, req.dst)
                    and (sender := self._opened_from(server, sealing)) is not None
                ):
                    claimed = (
                        client.node_id if client is not None and client.authenticated and not sender else ""
                    )
                    reply = server.handle_stream_request(t, src, req.payload, sender, claimed)
                    self._flush(server)
                if client is not None and src not in self.down:
                    client.handle_stream_reply(t, req.request_id, reply)
                    self._flush(client)
        self.now = t_end

    def _sealing(self, node: Node, dst: str) -> tuple[str, str] | None:
        """(how, sender id) node's driver seals to dst with: pairwise or intro; None: the network key."""
        if not node.authenticated:
            return None
        peer = node.peer_at(dst)
        if peer is None or node.peer_key(peer) is None:
            return None
        return ("pairwise" if peer in self.proven.get(node.addr, ()) else "intro", node.node_id)

    def _opened_from(self, receiver: Node, sealing: tuple[str, str] | None) -> str | None:
        """The sender id receiver's driver hands on ("": network-key frame); None if it cannot open it."""
        if sealing is None:
            return ""
        how, sender = sealing
        if not receiver.authenticated or (how == "pairwise" and receiver.peer_key(sender) is None):
            self.unopened += 1
            return None
        self.proven.setdefault(receiver.addr, set()).add(sender)
        return sender

    def check_result(self, dst: str) -> CheckResult:
        """How a connection check to dst ends now (the test's table, else the default)."""
        if dst in self.checks:
            return self.checks[dst]
        if dst in self.down or dst not in self.nodes:
            return CheckResult.TIMED_OUT
        return CheckResult.ACCEPTED

    def state_of(self, observer: GossipNode, subject: GossipNode, pool: str = "region") -> MemberState | None:
        for v in observer.members(pool):
            if v.node_id == subject.node_id:
                return v.state
        return None

    def live(self) -> list[GossipNode]:
        return [n.gossip for a, n in self.nodes.items() if a not in self.down]
