"""What a core hosted by the composite node implements, and what it may send.

A hosted core (the election, placement and rollout cores) has the same shape as
the gossip core: it takes `now` and inputs, and returns messages, a deadline and
events; it never does I/O. It talks to other members only through application
messages on its own channel (node/channels.py), which the node sends sealed over
the gossip transport; it learns of the mesh from the gossip events the node
shows it (members joining, suspected, dead; records accepted).
"""

from __future__ import annotations

from typing import Protocol

from gossip.events import Event, HostedEvent
from gossip.io import AppSend
from gossip.records import Record

__all__ = ["AppSend", "HostedCore"]  # AppSend lives in gossip/io.py, so cores below node/ can use it


class HostedCore(Protocol):
    """A core the composite node hosts (election, placement, rollout, test cores)."""

    @property
    def channel(self) -> int:
        """The channel this core owns (node/channels.py)."""
        ...

    def handle_message(self, now: float, pool: str, from_id: str, payload: bytes) -> None:
        """An application message on our channel from a live member of `pool`."""
        ...

    def observe(self, now: float, event: Event) -> None:
        """A gossip event (membership change, records accepted, ...), for cores that track the mesh."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run what is due at now."""
        ...

    def next_deadline(self) -> float | None:
        """When handle_timer must next run (None: nothing scheduled)."""
        ...

    def poll_messages(self) -> list[AppSend]:
        """Application messages to send now."""
        ...

    def drain_events(self) -> list[HostedEvent]:
        """Events for the driver (leader elected, placement changed, ...)."""
        ...

    def poll_records(self) -> list[tuple[Record, bool]]:
        """Signed records to publish now, each with `urgent` (GossipNode.publish_record's flag).

        The node publishes each through the gossip layer (a refused one is counted,
        `node.drop_record_refused`); a core that publishes nothing returns []."""
        ...
