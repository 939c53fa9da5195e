"""The transmit-limited queue of piggybacked gossip (memberlist queue.go), sans-IO.

Membership updates and user broadcasts ride on probes and gossip packets. Each
item is sent a bounded number of times (retransmit_limit, which grows with log N
so that an update reaches the whole pool with high probability), fresher items
first, packed greedily into whatever room a packet has left. An item may carry
its own, lower limit (region-scoped node records, which their author has
already sent to every member: see docs/state.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class _Item:
    """One queued broadcast; seq orders items by age (higher is newer)."""

    seq: int
    payload: bytes
    size_bytes: int
    key: str | None
    transmits: int = 0
    # This item's own retransmit limit (None: the pool's); the lower of the two applies.
    limit: int | None = None


class BroadcastQueue:
    """Broadcasts waiting to be piggybacked, each sent up to retransmit_limit times."""

    __slots__ = ("_buckets", "_by_key", "_dropped", "_len", "_max_items", "_next_seq")

    def __init__(self, max_items: int) -> None:
        """An empty queue that holds at most max_items broadcasts."""
        if max_items < 1:
            raise ValueError(f"broadcast queue max_items must be at least 1, got {max_items}")
        self._max_items = max_items
        # Items bucketed by transmit count, each bucket keyed by seq in ascending order
        # (oldest first). take() walks a few buckets instead of sorting every item, and
        # invalidation and drops delete one entry in O(1).
        self._buckets: dict[int, dict[int, _Item]] = {}
        self._by_key: dict[str, _Item] = {}
        self._len = 0
        self._next_seq = 0
        self._dropped = 0

    def __len__(self) -> int:
        """Number of queued broadcasts."""
        return self._len

    @property
    def dropped(self) -> int:
        """Broadcasts discarded before their last transmit because the queue was full or pruned."""
        return self._dropped

    def queue(self, payload: bytes, key: str | None = None, limit: int | None = None) -> None:
        """Queue payload; it replaces a queued item with the same non-None key.

        limit, if given, caps this item's transmissions below the retransmit
        limit that take() is given (at least one transmission, like take's).
        """
        if limit is not None and limit < 1:
            raise ValueError(f"broadcast item limit must be at least 1, got {limit}")
        if key is not None:
            old = self._by_key.get(key)
            if old is not None:
                # A newer update about the same subject makes the old one wrong, not just
                # stale: it is removed, not counted as a drop.
                self._remove(old)
        if self._len >= self._max_items:
            self._drop_one()
        self._next_seq += 1
        item = _Item(self._next_seq, payload, len(payload), key, 0, limit)
        # The new seq is the highest ever issued, so appending keeps bucket 0 in seq order.
        self._buckets.setdefault(0, {})[item.seq] = item
        if key is not None:
            self._by_key[key] = item
        self._len += 1

    def take(
        self, limit_bytes: int, overhead_bytes: int, retransmit_limit: int, max_count: int | None = None
    ) -> list[bytes]:
        """Payloads to piggyback within limit_bytes (each costs len + overhead_bytes); at most max_count."""
        if overhead_bytes < 0:
            raise ValueError(f"take overhead_bytes must not be negative, got {overhead_bytes}")
        if not self._len:
            return []
        # A limit below one would strand items forever: every broadcast goes out at least once.
        limit = max(1, retransmit_limit)
        remaining_bytes = limit_bytes
        remaining_count = self._len if max_count is None else max_count
        out: list[bytes] = []
        taken_by_bucket: list[tuple[int, list[_Item]]] = []
        for transmits in sorted(self._buckets):
            if remaining_bytes < overhead_bytes or remaining_count <= 0:
                break
            taken: list[_Item] = []
            # Newest first within a tier: a fresher update is the likelier to be news.
            for item in reversed(self._buckets[transmits].values()):
                cost_bytes = item.size_bytes + overhead_bytes
                if cost_bytes <= remaining_bytes:
                    remaining_bytes -= cost_bytes
                    remaining_count -= 1
                    out.append(item.payload)
                    taken.append(item)
                    if remaining_bytes < overhead_bytes or remaining_count <= 0:
                        break
            if taken:
                taken_by_bucket.append((transmits, taken))
        # Items move up a tier only after the walk, so none is sent twice in one take.
        # Going from the highest tier down, tier t + 1 has already lost its own taken
        # items when tier t's arrive.
        for transmits, taken in reversed(taken_by_bucket):
            bucket = self._buckets[transmits]
            for item in taken:
                del bucket[item.seq]
            if not bucket:
                del self._buckets[transmits]
            if transmits + 1 >= limit:
                done, kept = taken, []
            else:
                # Items with their own lower limit may be done before the rest of their tier.
                done = [i for i in taken if i.limit is not None and transmits + 1 >= i.limit]
                kept = [i for i in taken if i.limit is None or transmits + 1 < i.limit] if done else taken
            self._len -= len(done)
            for item in done:
                if item.key is not None:
                    del self._by_key[item.key]
            if kept:
                self._promote(transmits + 1, kept)
        return out

    def prune(self, max_retained: int) -> None:
        """Drop the most transmitted items (oldest first among equals) until max_retained remain."""
        if max_retained < 0:
            raise ValueError(f"prune max_retained must not be negative, got {max_retained}")
        while self._len > max_retained:
            self._drop_one()

    def reset(self) -> None:
        """Forget every queued item; the dropped counter keeps counting (it is a metric)."""
        self._buckets.clear()
        self._by_key.clear()
        self._len = 0

    def _promote(self, transmits: int, taken: list[_Item]) -> None:
        """Put items (newest first, as take() collected them) into tier transmits, in seq order."""
        for item in taken:
            item.transmits = transmits
        target = self._buckets.get(transmits)
        if target is None:
            self._buckets[transmits] = {item.seq: item for item in reversed(taken)}
        elif next(reversed(target)) < taken[-1].seq:
            # The usual case: what moves up is newer than everything already in the tier.
            for item in reversed(taken):
                target[item.seq] = item
        else:
            for item in taken:
                target[item.seq] = item
            # Two sorted runs: Timsort merges them in linear time.
            self._buckets[transmits] = dict(sorted(target.items()))

    def _remove(self, item: _Item) -> None:
        """Unlink one queued item."""
        bucket = self._buckets[item.transmits]
        del bucket[item.seq]
        if not bucket:
            del self._buckets[item.transmits]
        if item.key is not None:
            del self._by_key[item.key]
        self._len -= 1

    def _drop_one(self) -> None:
        """Discard the most transmitted item (oldest among equals): it has spread the furthest."""
        bucket = self._buckets[max(self._buckets)]
        self._remove(next(iter(bucket.values())))
        self._dropped += 1
