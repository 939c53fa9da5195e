"""Who may author records: the Trust protocol, keys registered explicitly (StaticTrust),
and node keys learned from membership layered over them (MembershipTrust). Sans-IO.

MembershipTrust:

A node id is the key id of the node's Ed25519 public key (the first 16 hex
characters of its sha256), so a member that announces its key in its metadata
proves nothing about being invited, but does bind its id to that key: nobody
else can sign records as that node. This layer lets a node verify its region
peers' own records (inventory, placement) with the keys they announced. Who
may be a member at all is decided elsewhere (the network key today, invites
next); revocations in the base trust and in the store still apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gossip.records import PUBLIC_KEY_BYTES, key_id


class Trust(Protocol):
    """Who may author records: the store asks it about every record it receives."""

    def public_key(self, author: str) -> bytes | None:
        """The author's Ed25519 public key, or None if the author is unknown."""
        ...

    def is_revoked(self, author: str) -> bool:
        """True if the author's records must be refused (on top of revocation records)."""
        ...

    def may_write(self, author: str, kind: str, key: str) -> bool:
        """True if the author may write the slot (kind, key).

        Must never let a revocation target an author that may itself write
        revocations: a revocation cycle would make the state depend on delivery order.
        """
        ...


class StaticTrust:
    """A Trust with keys registered explicitly: operators and nodes.

    Operators write desired state, trust records, and revocations of nodes (never of
    an operator: operator keys are managed by trust records, which mesh/ interprets).
    A node writes its own inventory and placement records, each keyed by its own id
    (readers pick the placement of the newest term; fencing comes with elections).
    """

    def __init__(
        self, operators: Iterable[bytes] = (), nodes: Iterable[bytes] = (), revoked: Iterable[str] = ()
    ) -> None:
        """Trust the given operator and node public keys; refuse the revoked author ids."""
        self._operators: dict[str, bytes] = {}
        self._nodes: dict[str, bytes] = {}
        self._revoked: dict[str, None] = {}
        for public_key in operators:
            self.add_operator(public_key)
        for public_key in nodes:
            self.add_node(public_key)
        for author in revoked:
            self.revoke(author)

    @staticmethod
    def _checked(public_key: bytes) -> bytes:
        if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {public_key!r}")
        return public_key

    def add_operator(self, public_key: bytes) -> str:
        """Trust an operator key; returns its author id."""
        author = key_id(self._checked(public_key))
        self._operators[author] = public_key
        return author

    def add_node(self, public_key: bytes) -> str:
        """Trust a node key (an admitted node); returns its id."""
        author = key_id(self._checked(public_key))
        self._nodes[author] = public_key
        return author

    def revoke(self, author: str) -> None:
        """Refuse the author's records from now on."""
        self._revoked[author] = None

    def is_operator(self, author: str) -> bool:
        """True if author is a trusted operator key."""
        return author in self._operators

    def public_key(self, author: str) -> bytes | None:
        """The author's public key, or None if unknown."""
        return self._operators.get(author) or self._nodes.get(author)

    def is_revoked(self, author: str) -> bool:
        """True if revoked here (revocation records are the store's business)."""
        return author in self._revoked

    def may_write(self, author: str, kind: str, key: str) -> bool:
        """Operators: desired, trust, revocation of non-operators. Nodes: own inventory and placement."""
        if author in self._operators:
            if kind == "revocation":
                return key not in self._operators
            return kind in ("desired", "trust")
        if author in self._nodes:
            return kind in ("inventory", "placement") and key == author
        return False


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
