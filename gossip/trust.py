"""Node keys learned from membership, layered over the mesh's configured trust (sans-IO).

A node id is the key id of the node's Ed25519 public key (the first 16 hex
characters of its sha256), so a member that announces its key in its metadata
proves nothing about being invited, but does bind its id to that key: nobody
else can sign records as that node. This layer lets a node verify its region
peers' own records (inventory, placement) with the keys they announced. Who
may be a member at all is decided elsewhere (the network key today, invites
next); revocations in the base trust and in the store still apply.
"""

from __future__ import annotations

from gossip.records import key_id
from gossip.state import Trust

PUBLIC_KEY_BYTES = 32
# Kinds a node may write, each keyed by its own id.
NODE_KINDS = ("inventory", "placement")


class MembershipTrust:
    """A Trust: the base (operators, configured nodes) plus node keys learned from members."""

    def __init__(self, base: Trust, *, learned_max: int) -> None:
        """Layer over base; remember at most learned_max node keys (the pool's member limit)."""
        self._base = base
        self._learned: dict[str, bytes] = {}
        self._learned_max = learned_max
        self.refused = 0

    def learn_node(self, node_id: str, public_key: bytes) -> bool:
        """Remember a member's announced key if it is the key its id was derived from."""
        if node_id in self._learned:
            return False
        if len(public_key) != PUBLIC_KEY_BYTES or key_id(public_key) != node_id:
            self.refused += 1
            return False
        if len(self._learned) >= self._learned_max:
            self.refused += 1
            return False
        self._learned[node_id] = public_key
        return True

    def public_key(self, author: str) -> bytes | None:
        """The author's key from the base trust, else as learned from membership."""
        return self._base.public_key(author) or self._learned.get(author)

    def is_revoked(self, author: str) -> bool:
        """Revoked in the base trust."""
        return self._base.is_revoked(author)

    def may_write(self, author: str, kind: str, key: str) -> bool:
        """What the base allows; a learned node writes only its own node records."""
        if self._base.may_write(author, kind, key):
            return True
        return author in self._learned and kind in NODE_KINDS and key == author
