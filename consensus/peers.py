"""What the election core reads of the mesh, and the adapter over the gossip layer."""

from __future__ import annotations

from typing import Protocol

from gossip.events import MemberState
from gossip.node import GossipNode


class ElectionPeers(Protocol):
    """The region pool as the election sees it (read-only)."""

    def live_members(self) -> list[str]:
        """Ids of the other members alive in this node's region pool, in id order."""
        ...

    def member_key(self, node_id: str) -> bytes | None:
        """An admitted member's Ed25519 public key, or None (its votes cannot be checked)."""
        ...


class GossipElectionPeers:
    """ElectionPeers over a GossipNode (the drivers' adapter)."""

    def __init__(self, gossip: GossipNode) -> None:
        self._gossip = gossip

    def live_members(self) -> list[str]:
        # Straight from the pool's table: GossipNode.members builds a view of every member
        # (its region, gateway flag, API address), which the election reads many times a second.
        alive = MemberState.ALIVE
        return sorted([m.node_id for m in self._gossip.region_pool.members_unordered() if m.state == alive])

    def member_key(self, node_id: str) -> bytes | None:
        return self._gossip.member_key(node_id)
