"""State-store anti-entropy as the pools carry it: opaque bytes in push-pull (sans-IO).

The `StateExchange` role of both pools (gossip/roles.py): our digest, the
encoded records a peer's digest says it lacks, and merging what a peer sent.
The fleet pool carries fleet-wide records only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gossip import codec
from gossip.records import Record, decode_digest, encode_digest, encode_record
from gossip.state import StateStore

# Authors a digest on the wire may name.
DIGEST_AUTHORS_MAX = 16_384


class StoreExchange:
    """Anti-entropy of one node's state store."""

    # One per node: slots, not a dict per instance (a simulation holds thousands of nodes).
    __slots__ = ("_count", "_on_new", "_state")

    def __init__(
        self,
        state: StateStore,
        *,
        on_new: Callable[[float, list[Record]], None],
        count: Callable[[str], None],
    ) -> None:
        self._state = state
        self._on_new = on_new
        self._count = count

    def digest(self, pool: int) -> bytes:
        """Our state digest for a push-pull in `pool` (the fleet pool sees fleet records only)."""
        return encode_digest(self._state.digest(fleet_only=pool == codec.POOL_FLEET))

    def missing(self, pool: int, remote_digest: bytes) -> tuple[bytes, ...]:
        """Encoded records a peer lacks, by its digest (bounded by the store's delta budget)."""
        if not remote_digest:
            return ()  # a peer that does not run the state store (or an empty redirect)
        try:
            digest = decode_digest(remote_digest, authors_max=DIGEST_AUTHORS_MAX)
        except codec.DecodeError as exc:
            self._count("drop_digest_" + exc.reason)
            return ()
        missing = self._state.missing_for(
            digest, self._state.limits.delta_max_bytes, fleet_only=pool == codec.POOL_FLEET
        )
        return tuple(encode_record(r) for r in missing)

    def merge(self, pool: int, now: float, blobs: Sequence[bytes]) -> None:
        """Records from a peer: the store verifies each once; what is new is passed on."""
        new = self._state.merge_encoded(now, blobs)
        if new:
            self._on_new(now, new)
