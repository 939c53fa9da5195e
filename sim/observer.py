"""What the fleet tells those who watch it: the Observer hooks, and the admission scenario's log.

sim/fleet.py keeps a list of observers, registered before any node exists, and
calls each hook on every one of them in registration order (its own `Views`
first, so every other observer reads views that already include the event).
An observer overrides only the hooks it needs; a new one is one registration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gossip.events import Event
from gossip.node import MemberView
from sim.slot import NodeSlot


class Observer:
    """The fleet's observer hooks; each does nothing unless overridden."""

    def on_spawn(self, idx: int, node_id: str, region: int, views: Sequence[MemberView]) -> None:
        """Node idx is being created (before its first output); `views` is its restored region view."""

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        """A core reported an event."""

    def on_violation(self, now: float, kind: str, detail: str) -> None:
        """The engine saw a broken invariant (a core exception, an oversized packet, ...)."""

    def on_crash(self, now: float, idx: int) -> None:
        """Node idx is about to crash (it is still up)."""

    def on_down(self, now: float, idx: int) -> None:
        """Node idx stopped (a crash, a retirement after a leave, or a revoked node exiting)."""

    def on_restart(self, now: float, slot: NodeSlot) -> None:
        """A stopped node is about to come back (slot.incarnation is the one it persisted)."""

    def on_stall(self, now: float, idx: int, duration_s: float) -> None:
        """Node idx is about to stall for duration_s."""

    def on_partition(self, groups: list[int]) -> None:
        """The network split; groups[idx] is each node's side."""

    def on_heal(self, now: float) -> None:
        """The network is whole again."""


class AdmissionLog(Protocol):
    """What the admission scenario tells its watch (sim/admission.py's AdmissionWatch)."""

    def joiner(self, node_id: str, now: float) -> None: ...
    def intruder(self, node_id: str, kind: str) -> None: ...
    def revoking(self, node_id: str, now: float) -> None: ...
