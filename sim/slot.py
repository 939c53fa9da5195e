"""A simulated node's driver state, and the interfaces the engine talks to."""

from __future__ import annotations

from typing import Any, Protocol

from gossip.envelope import PeerKeys
from gossip.events import Event
from gossip.io import Core

Entry = tuple[float, int, int, int, Any, Any, Any]
"""One heap entry: (time_s, seq, kind, node index, a, b, c); see sim/engine.py for the kinds."""


class Listener(Protocol):
    """Receives what the engine observes: core events and broken invariants."""

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None: ...
    def on_violation(self, now: float, kind: str, detail: str) -> None: ...


class NodeSlot:
    """One simulated node: its core and the state its driver keeps."""

    __slots__ = (
        "addr",
        "backlog",
        "core",
        "epoch",
        "host_up",
        "idx",
        "incarnation",
        "node_id",
        "peers",
        "proven",
        "region",
        "stall_until_s",
        "stalled",
        "streams",
        "timer_at",
        "timer_gen",
        "timer_spin",
        "tx_bytes",
        "tx_msgs",
        "up",
        "up_since_s",
        "uptime_s",
    )

    def __init__(self, idx: int, node_id: str, addr: str, region: int, core: Core, now: float) -> None:
        self.idx = idx
        self.node_id = node_id
        self.addr = addr
        self.region = region
        self.core: Core | None = core
        # The core's member keys when it seals pairwise (sim/engine.py sets it), else None.
        self.peers: PeerKeys | None = None
        # Peers whose pairwise frame opened here: frames to them no longer introduce our key.
        self.proven: set[str] = set()
        self.up = True
        # While the node is down: whether its host still answers at its address (a dead
        # process: connections refused) or is lost too (silence). See Engine.crash.
        self.host_up = True
        # Bumped on crash and restart: events addressed to an earlier life are dropped.
        self.epoch = 0
        self.timer_at: float | None = None
        self.timer_gen = 0
        self.timer_spin = 0
        self.stalled = False
        self.stall_until_s = 0.0
        self.backlog: list[Entry] = []
        # request id -> server idx, for the streams this node has open.
        self.streams: dict[int, int] = {}
        self.tx_bytes = 0
        self.tx_msgs = 0
        # The last incarnation the node persisted (IncarnationChanged): a restart starts there.
        self.incarnation = 0
        self.up_since_s = now
        self.uptime_s = 0.0

    def uptime_until(self, now: float) -> float:
        """Seconds this node has been up from its creation until `now`."""
        return self.uptime_s + (now - self.up_since_s if self.up else 0.0)
