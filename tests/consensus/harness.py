"""A small deterministic harness that runs N election cores over a faulty network.

One heap of (time, seq, action); a network that delays, loses, duplicates and
reorders messages and honours partitions; crashes that drop a core's volatile
state and rebuild it from its store; a membership oracle that tells the
cores (after `detect_s`) who is up and reachable, as SWIM would. Invariants
are checked from outside the cores on every step (`Checker`).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing

from consensus.config import Era
from consensus.election import ElectionCore
from consensus.events import LeaderChanged
from consensus.hardstate import MemoryStore
from consensus.messages import VoteReply, decode
from consensus.timing import ElectionConfig
from gossip.events import MemberChanged, MemberState

REGION = "r1"


def node_key(node_id: str) -> nacl.signing.SigningKey:
    seed = (node_id.encode() * 32)[:32]
    return nacl.signing.SigningKey(seed)


@dataclass(slots=True)
class NetModel:
    loss: float = 0.0
    dup: float = 0.0
    delay_min_s: float = 0.001
    delay_max_s: float = 0.010


class HarnessPeers:
    """ElectionPeers for one node: the harness's view of who is up and reachable."""

    def __init__(self, cluster: Cluster, node_id: str) -> None:
        self._cluster = cluster
        self._node_id = node_id
        self.view: list[str] = []

    def live_members(self) -> list[str]:
        return list(self.view)

    def member_key(self, node_id: str) -> bytes | None:
        return bytes(node_key(node_id).verify_key) if node_id in self._cluster.known else None


@dataclass
class Checker:
    """Safety invariants over every node's claims, votes and leases."""

    leaders: dict[tuple[Era | None, int], str] = field(default_factory=dict)
    votes: dict[tuple[str, Era, int], str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    allow_disjoint_leases: bool = False
    claims: list[tuple[float, str, Era | None, int]] = field(default_factory=list)

    def leader_claim(self, now: float, node_id: str, e: LeaderChanged) -> None:
        if e.leader_id != node_id:
            return
        self.claims.append((now, node_id, e.era, e.term))
        held = self.leaders.setdefault((e.era, e.term), node_id)
        if held != node_id:
            self.violations.append(f"two leaders of {e.era} term {e.term}: {held} and {node_id}")

    def vote(self, voter: str, m: VoteReply, candidate: str) -> None:
        if m.pre or not m.granted:
            return
        held = self.votes.setdefault((voter, m.era, m.term), candidate)
        if held != candidate:
            self.violations.append(f"{voter} voted twice in {m.era} term {m.term}: {held}, {candidate}")

    def leases(self, now: float, holders: list[str]) -> None:
        if len(holders) > 1 and not self.allow_disjoint_leases:
            self.violations.append(f"overlapping leases at {now:.3f}: {holders}")


class Cluster:
    """N election cores on one simulated network (see the module docstring)."""

    def __init__(
        self,
        ids: list[str],
        seed: int,
        *,
        net: NetModel | None = None,
        settings: ElectionConfig | None = None,
        detect_s: float = 1.5,
        boot_s: Callable[[str], float] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.net = net or NetModel()
        self.settings = settings or ElectionConfig()
        self.detect_s = detect_s
        self.now = 0.0
        self.known: list[str] = list(ids)
        self.up: dict[str, bool] = {i: False for i in ids}
        self.cores: dict[str, ElectionCore] = {}
        self.stores: dict[str, MemoryStore] = {i: MemoryStore() for i in ids}
        self.peers: dict[str, HarnessPeers] = {}
        self.groups: dict[str, int] = {i: 0 for i in ids}  # partition side
        self.checker = Checker()
        self.delivered = 0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._armed: dict[str, float] = {}
        for i in ids:
            self.at((boot_s or (lambda _i: 0.0))(i), lambda i=i: self.start(i))

    # --- the heap ---------------------------------------------------------------------------

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), action))

    def run_until(self, t_end: float) -> None:
        while self._heap and self._heap[0][0] <= t_end:
            t, _seq, action = heapq.heappop(self._heap)
            self.now = max(self.now, t)
            action()
            self._check()
        self.now = t_end

    # --- nodes ------------------------------------------------------------------------------

    def start(self, i: str) -> None:
        """Boot (or restart) node i from its store: volatile state is whatever the core rebuilds."""
        peers = self.peers.setdefault(i, HarnessPeers(self, i))
        peers.view = self._reachable(i)
        self.up[i] = True
        core = ElectionCore(
            i,
            REGION,
            random.Random(self.rng.random()),
            self.settings,
            self.stores[i],
            peers,
            node_key(i),
            now=self.now,
        )
        self.cores[i] = core
        self._armed.pop(i, None)
        self._after(i)
        self.at(self.now + self.detect_s, self.refresh_views)

    def crash(self, i: str) -> None:
        self.up[i] = False
        self.cores.pop(i, None)
        self.at(self.now + self.detect_s, self.refresh_views)

    def partition(self, *sides: list[str]) -> None:
        for n, side in enumerate(sides):
            for i in side:
                self.groups[i] = n
        self.at(self.now + self.detect_s, self.refresh_views)

    def heal(self) -> None:
        self.partition(self.known)

    def refresh_views(self) -> None:
        """Membership catches up: every live core sees who is up and reachable now."""
        for i, core in list(self.cores.items()):
            old = set(self.peers[i].view)
            new = self._reachable(i)
            self.peers[i].view = new
            for j in sorted(set(new) | old):
                if (j in new) != (j in old):
                    state = MemberState.ALIVE if j in new else MemberState.DEAD
                    core.observe(self.now, MemberChanged("region", j, j, state, 1))
            self._after(i)

    def _reachable(self, i: str) -> list[str]:
        return sorted(j for j in self.known if j != i and self.up[j] and self.groups[j] == self.groups[i])

    # --- the loop ---------------------------------------------------------------------------

    def _after(self, i: str) -> None:
        """Drain a core's output, record its claims, and re-arm its timer."""
        core = self.cores.get(i)
        if core is None:
            return
        for e in core.drain_events():
            if type(e) is LeaderChanged:
                self.checker.leader_claim(self.now, i, e)
        for m in core.poll_messages():
            msg = decode(m.payload)
            if type(msg) is VoteReply:
                self.checker.vote(i, msg, m.dst_id)
            self._transmit(i, m.dst_id, m.payload)
        deadline = core.next_deadline()
        if deadline is not None and self._armed.get(i) != deadline:
            self._armed[i] = deadline
            self.at(max(deadline, self.now), lambda: self._timer(i, core))

    def _timer(self, i: str, core: ElectionCore) -> None:
        if self.cores.get(i) is not core:
            return  # crashed since
        deadline = core.next_deadline()
        if deadline is not None and deadline <= self.now:
            self._armed.pop(i, None)
            core.handle_timer(self.now)
            self._after(i)

    def _transmit(self, src: str, dst: str, payload: bytes) -> None:
        copies = 1
        if self.rng.random() < self.net.loss:
            copies = 0
        elif self.rng.random() < self.net.dup:
            copies = 2
        for _ in range(copies):
            delay = self.rng.uniform(self.net.delay_min_s, self.net.delay_max_s)
            self.at(self.now + delay, lambda: self._deliver(src, dst, payload))

    def _deliver(self, src: str, dst: str, payload: bytes) -> None:
        core = self.cores.get(dst)
        if core is None or not self.up[src] or self.groups[src] != self.groups[dst]:
            return
        self.delivered += 1
        core.handle_message(self.now, "region", src, payload)
        self._after(dst)

    def _check(self) -> None:
        holders = [i for i, c in self.cores.items() if c.is_leader(self.now)]
        self.checker.leases(self.now, holders)

    # --- reads ------------------------------------------------------------------------------

    def leaders(self) -> list[str]:
        """Nodes that hold a valid lease now."""
        return sorted(i for i, c in self.cores.items() if c.is_leader(self.now))

    def believed(self) -> dict[str, str | None]:
        return {i: c.leader() for i, c in self.cores.items()}
