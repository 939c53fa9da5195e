"""Watched connections: which members a node holds an idle connection to, and when.

Round-robin probing reaches a given member about once per probe interval, from
whichever member's turn it is, so a crashed process is first noticed only
when some probe happens to reach it (0.5 s on average in `lan`, up to 3 s in
the tail of a fleet of 1,000). But a process that dies leaves evidence at
once: its kernel closes every connection it held, and the other end hears a
FIN or a reset within a one-way trip. So each node holds one idle TCP
connection to each of a few members (`watch_count`: its successors in the
ring of live member ids, so every member is watched by as many others), and
probes a watched member at once when its connection ends (membership.py's
urgent probe). A lost host or a partition closes nothing (silence: the usual
SWIM path), and a stalled process keeps its connections open.

This module is bookkeeping only: the targets, the open watches, the retry
times. It returns `gossip.io.Watch` / `Unwatch` effects; the driver holds the
connections (mesh/service/runtime.py) or models them (sim/watches.py).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from gossip.io import Outbound, Unwatch, Watch

# Watches a node holds at most, whatever watch_count says: each is a socket.
WATCH_COUNT_MAX = 4


@dataclass(slots=True)
class _Open:
    node_id: str
    addr: str


class Watches:
    """The watches of one pool: plan() keeps them on the ring successors, ended() reads an end."""

    def __init__(self, *, pool: int, count: int, retry_s: float) -> None:
        self._pool = pool  # the low bit of every watch id: which pool a driver's answer is for
        self._count = min(max(count, 0), WATCH_COUNT_MAX)
        self._retry_s = retry_s
        self._seq = 0
        self._open: dict[int, _Open] = {}  # watch id -> target
        self._by_target: dict[str, int] = {}  # target id -> watch id
        self._retry_at_s: dict[str, float] = {}  # target id -> not watched again before this
        self.counters: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self._count > 0

    def watched(self) -> list[str]:
        """Ids of the members watched now, in id order."""
        return sorted(self._by_target)

    def _count_up(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def plan(self, now: float, self_id: str, live: Sequence[tuple[str, str]]) -> list[Outbound]:
        """Open and close watches so that the `count` ring successors of self_id are watched.

        live: (id, address) of the other live members, sorted by id. A target whose
        last watch ended less than retry_s ago is skipped for now (a peer that
        declines or drops watches costs one attempt per retry_s, never a loop).
        """
        out: list[Outbound] = []
        wanted = self._successors(self_id, live)
        for watch_id, target in list(self._open.items()):
            if wanted.get(target.node_id) != target.addr:
                del self._open[watch_id]
                del self._by_target[target.node_id]
                out.append(Unwatch(watch_id))
        for node_id, addr in wanted.items():
            if node_id in self._by_target or now < self._retry_at_s.get(node_id, -1.0):
                continue
            self._seq += 1
            watch_id = (self._seq << 1) | self._pool
            self._open[watch_id] = _Open(node_id, addr)
            self._by_target[node_id] = watch_id
            self._count_up("watches_opened")
            out.append(Watch(addr, watch_id))
        if len(self._retry_at_s) > 4 * WATCH_COUNT_MAX:
            # Forget retry times of members that are no longer targets.
            self._retry_at_s = {k: v for k, v in self._retry_at_s.items() if k in wanted}
        return out

    def _successors(self, self_id: str, live: Sequence[tuple[str, str]]) -> dict[str, str]:
        n = min(self._count, len(live))
        if n == 0:
            return {}
        start = bisect_right(live, (self_id, "\U0010ffff"))
        return dict(live[(start + i) % len(live)] for i in range(n))

    def ended(self, now: float, watch_id: int, peer_closed: bool) -> tuple[str, str] | None:
        """The driver's news that a watch ended; the (id, address) to probe now, if any.

        Only an end the peer's host made (peer_closed) is evidence; the watch is
        opened again after retry_s either way, if its member is still a target.
        """
        target = self._open.pop(watch_id, None)
        if target is None:
            self._count_up("drop_watch_unknown")
            return None
        del self._by_target[target.node_id]
        self._retry_at_s[target.node_id] = now + self._retry_s
        if not peer_closed:
            self._count_up("watches_failed")
            return None
        self._count_up("watches_closed_by_peer")
        return target.node_id, target.addr

    def close_all(self) -> list[Outbound]:
        """Unwatch everything (leaving the pool)."""
        out: list[Outbound] = [Unwatch(w) for w in self._open]
        self._open.clear()
        self._by_target.clear()
        return out
