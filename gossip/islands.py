"""Islands of one region: which members of our region to join, and when (sans-IO).

A site that boots at once, each node seeded only at another region's nodes and
without mDNS, starts as islands: every node is redirected, finds no gateway of
its region yet and becomes the gateway of a one-member region pool; they meet
in the fleet pool and nothing else joins them (issue 8, finding 9). So a node
that learns of a member of its own region that its region pool has never
listed (a fleet-pool member whose metadata names our region, a gateway named by
a published summary of our region or by a redirect) joins it. This module is
the rule: what is noted, how many are joined at a time, how often.
gossip/node.py hears the claims and runs the join; docs/design.md has the why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# Members joined at once, the least time between two merge joins (and after our own
# join, which usually finds the region by itself), and the members remembered meanwhile.
REGION_MERGE_SEEDS_MAX = 4
REGION_MERGE_INTERVAL_S = 5.0
REGION_MERGE_CANDIDATES_MAX = 64


class IslandMerge:
    """Members of our region heard of outside our region pool (in the order heard), to join."""

    # One per node: slots, not a dict per instance (a simulation holds thousands of nodes).
    __slots__ = ("_addr", "_count", "_next_s", "_node_id", "pending")

    def __init__(self, node_id: str, addr: str, count: Callable[[str], None]) -> None:
        self._node_id = node_id
        self._addr = addr
        self._count = count
        # node id -> address, oldest first; the node reads its truth after every input (cheap).
        self.pending: dict[str, str] = {}
        self._next_s = -1e18

    def wait(self, until_s: float) -> None:
        """Join nothing before until_s (our own join is under way)."""
        self._next_s = max(self._next_s, until_s)

    def due_s(self, now: float) -> float | None:
        """When take() should next run (None: nothing noted)."""
        return max(self._next_s, now) if self.pending else None

    def note(self, peers: Iterable[tuple[str, str]], listed: Callable[[str], bool]) -> None:
        """Members of our region (id, address) named outside our region pool.

        Only ids our region pool never listed (`listed` false) count: a region
        that is one pool notes nothing, and a member held dead is the
        reconnect's business. The newest REGION_MERGE_CANDIDATES_MAX are kept.
        """
        for node_id, addr in peers:
            if node_id == self._node_id or addr == self._addr or listed(node_id):
                continue
            again = self.pending.pop(node_id, None) is not None
            if not again and len(self.pending) >= REGION_MERGE_CANDIDATES_MAX:
                del self.pending[next(iter(self.pending))]
                self._count("region_merge_candidates_dropped")
            self.pending[node_id] = addr

    def take(self, now: float, listed: Callable[[str], bool]) -> list[str]:
        """The addresses to join now (at most REGION_MERGE_SEEDS_MAX, oldest noted first), or [].

        Members the pool has listed since they were noted are forgotten.
        """
        if now < self._next_s:
            return []
        seeds: list[str] = []
        for node_id, addr in list(self.pending.items()):
            if listed(node_id):
                del self.pending[node_id]
            elif len(seeds) < REGION_MERGE_SEEDS_MAX:
                del self.pending[node_id]
                if addr not in seeds:
                    seeds.append(addr)
        if seeds:
            self._next_s = now + REGION_MERGE_INTERVAL_S
            self._count("region_merge_joins")
        return seeds

    def clear(self) -> None:
        """Forget everything noted (we are leaving)."""
        self.pending.clear()
