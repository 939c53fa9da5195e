"""Who may author records: the Trust protocol and keys registered explicitly (StaticTrust). Sans-IO.

The base trust holds what a node is configured with: its cluster's id and the
root operator key(s) from its join token. Everything else is learned from
records the store holds (gossip/state.py): operator keys granted by `trust`
records, and node keys proven by `admission` records (gossip/admission.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgpack

from gossip.kinds import DEFAULT_KINDS, REVOCATION_KIND, KindTable, Writer
from gossip.records import PUBLIC_KEY_BYTES, Record, key_id
from gossip.wire import DecodeError, unpack_versioned


class Trust(Protocol):
    """Who may author records: the store asks it about every record it receives."""

    @property
    def cluster_id(self) -> str:
        """The cluster this node belongs to (invites name it)."""
        ...

    def is_operator(self, author: str) -> bool:
        """True if author is a root operator key."""
        ...

    def is_root_operator(self, author: str) -> bool:
        """True if author is a root operator key (the same as is_operator for a base trust)."""
        ...

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

    Who writes which kind is the kind table's (gossip/kinds.py): operators write the
    operator kinds (desired state, trust records, and revocations of nodes, never of
    an operator: operator keys are managed by trust records, which mesh/ interprets);
    a node writes the node kinds (inventory, placement), each keyed by its own id.
    Admissions are self-certifying: the store never asks the trust about them.
    """

    def __init__(
        self,
        operators: Iterable[bytes] = (),
        nodes: Iterable[bytes] = (),
        revoked: Iterable[str] = (),
        *,
        cluster_id: str = "",
        kinds: KindTable = DEFAULT_KINDS,
    ) -> None:
        """Trust the given operator and node public keys, for the given kinds; refuse the revoked ids."""
        self._cluster_id = cluster_id
        self._kinds = kinds
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

    @property
    def cluster_id(self) -> str:
        """The cluster this node belongs to ("" if not configured: then no invite is valid)."""
        return self._cluster_id

    def is_operator(self, author: str) -> bool:
        """True if author is a trusted operator key."""
        return author in self._operators

    def is_root_operator(self, author: str) -> bool:
        """The same: every operator key configured here is a root key."""
        return author in self._operators

    def operator_keys(self) -> list[bytes]:
        """The operator public keys, in the order they were added."""
        return list(self._operators.values())

    def public_key(self, author: str) -> bytes | None:
        """The author's public key, or None if unknown."""
        return self._operators.get(author) or self._nodes.get(author)

    def is_revoked(self, author: str) -> bool:
        """True if revoked here (revocation records are the store's business)."""
        return author in self._revoked

    def may_write(self, author: str, kind: str, key: str) -> bool:
        """By the kind's writer: operators write operator kinds (revocations of non-operators
        only), nodes write node kinds, keyed by their own id."""
        policy = self._kinds.get(kind)
        if policy is None:
            return False
        if author in self._operators:
            if kind == REVOCATION_KIND:
                return key not in self._operators
            return policy.writer is not Writer.NODE
        if author in self._nodes:
            return policy.writer is Writer.NODE and key == author
        return False


# --- trust records: operator keys granted by operators ------------------------------------

GRANT_FORMAT = 1


def encode_grant(public_key: bytes, active: bool, cutoff_version: int = 0) -> bytes:
    """The payload of a `trust` record (keyed by the key's id): the operator key, whether it
    may still act, and, for a removal, the cutoff: the key's `desired` records above this
    version (operator versions are unix ms) are refused and dropped everywhere."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    if type(cutoff_version) is not int or not 0 <= cutoff_version < 2**63:
        raise ValueError("cutoff_version must be an integer 0..2^63-1")
    packed: bytes = msgpack.packb([public_key, bool(active), cutoff_version], use_bin_type=True)
    return bytes([GRANT_FORMAT]) + packed


def decode_grant(payload: bytes) -> tuple[bytes, bool, int]:
    """(public key, active, cutoff version) from a `trust` record's payload; raises DecodeError only."""
    fields = unpack_versioned(payload, GRANT_FORMAT, 80, max_array_len=4)
    if type(fields) is not list or len(fields) != 3:
        raise DecodeError("bad_arity")
    public_key, active, cutoff = fields
    if (
        type(public_key) is not bytes
        or len(public_key) != PUBLIC_KEY_BYTES
        or type(active) is not bool
        or type(cutoff) is not int
        or not 0 <= cutoff < 2**63
    ):
        raise DecodeError("bad_field")
    return public_key, active, cutoff


def grant_problem(r: Record) -> bool:
    """True if a `trust` record's payload is not a grant of the key its slot names."""
    try:
        public_key, _active, _cutoff = decode_grant(r.payload)
    except DecodeError:
        return True
    return key_id(public_key) != r.key
