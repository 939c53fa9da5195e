"""Who may hold an open connection: caps per source address and in total, room kept for members.

Both listeners of a node (the gossip port's streams, mesh/service/runtime.py, and
the HTTP API, mesh/service/httpguard.py) admit connections through a
`ConnectionTable`. The rules, in order:

- A connection from a member's address (a peer this node lists alive or
  suspect) is bounded by the total only: members may share an address (a NAT,
  several agents on one host) and must always get in.
- A connection from any other address (a stranger: a new node, an operator's
  CLI, an attacker with no key) may hold at most `per_host_max` connections
  from its address, and strangers together at most `strangers_max`; the rest
  of `total_max` is kept for members.
- When a share is full, a stranger's connection that is still waiting for
  its client is closed to make room: the one that has waited longest for a
  request head (an idle or slow one) first, else the one that has waited
  longest in the middle of a request body (a half-sent body; under such an
  attack a long upload may be cut too, and is retried). A prompt client's
  request arrives within one loop turn, so in practice only the idle and the
  slow are evicted. Members' connections, and connections that delivered
  their whole request, are never evicted; if none is waiting, the new
  connection is refused.

Every refusal and eviction is counted by reason (`count`), never logged per
connection: an attack costs a counter, never the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """Caps of one listener."""

    total_max: int
    per_host_max: int  # strangers only
    strangers_max: int  # at most total_max; total_max - strangers_max is kept for members

    def __post_init__(self) -> None:
        if not 0 < self.per_host_max <= self.strangers_max <= self.total_max:
            raise ValueError(
                f"need 0 < per_host_max ({self.per_host_max}) <= strangers_max ({self.strangers_max}) "
                f"<= total_max ({self.total_max})"
            )


class Slot:
    """One admitted connection; `close` aborts it (the table calls it to evict)."""

    __slots__ = ("close", "evicted", "host", "member", "released")

    def __init__(self, host: str, member: bool, close: Callable[[], None]) -> None:
        self.host = host
        self.member = member
        self.close = close
        self.evicted = False
        self.released = False


class ConnectionTable:
    """The open connections of one listener, admitted by the caps of `ConnectionCaps`."""

    def __init__(self, caps: ConnectionCaps, count: Callable[[str], None]) -> None:
        self.caps = caps
        self._count = count
        self._per_host: Counter[str] = Counter()  # strangers' open connections by address
        self._open = 0
        self._strangers = 0
        # Connections waiting for a request head, then those in the middle of a body,
        # oldest first (dicts keep insertion order): the eviction candidates in turn.
        self._waiting: dict[Slot, None] = {}
        self._receiving: dict[Slot, None] = {}

    @property
    def open(self) -> int:
        return self._open

    @property
    def strangers(self) -> int:
        return self._strangers

    def admit(self, host: str, *, member: bool, close: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from `host` (waiting for its request), or None: refused, counted."""
        if not member and self._per_host[host] >= self.caps.per_host_max:
            self._count("refused_per_host")
            return None
        full = self._open >= self.caps.total_max or (
            not member and self._strangers >= self.caps.strangers_max
        )
        if full and not self._evict_waiting_stranger():
            self._count("refused_full")
            return None
        slot = Slot(host, member, close)
        self._open += 1
        if not member:
            self._strangers += 1
            self._per_host[host] += 1
        self._waiting[slot] = None
        return slot

    def _evict_waiting_stranger(self) -> bool:
        """Close the stranger's connection that has waited longest for its request; False if none waits.

        Members are never evicted: a full share of strangers makes room among strangers.
        """
        for queue in (self._waiting, self._receiving):
            for slot in queue:
                if slot.member:
                    continue
                slot.evicted = True
                self._count("evicted")
                self.release(slot)
                slot.close()
                return True
        return False

    def served(self, slot: Slot) -> None:
        """`slot` delivered a complete request: it is no longer evicted to make room."""
        self._waiting.pop(slot, None)
        self._receiving.pop(slot, None)

    def receiving(self, slot: Slot) -> None:
        """`slot` delivered a request head and the server waits for its body: evicted after the idle."""
        if not slot.released and slot not in self._receiving:
            self._waiting.pop(slot, None)
            self._receiving[slot] = None

    def waiting(self, slot: Slot) -> None:
        """`slot` waits for its next request (an HTTP keep-alive): evictable again, as the newest."""
        if not slot.released:
            self.served(slot)
            self._waiting[slot] = None

    def release(self, slot: Slot) -> None:
        """`slot` closed (idempotent)."""
        if slot.released:
            return
        slot.released = True
        self.served(slot)
        self._open -= 1
        if not slot.member:
            self._strangers -= 1
            self._per_host[slot.host] -= 1
            if self._per_host[slot.host] <= 0:
                del self._per_host[slot.host]
