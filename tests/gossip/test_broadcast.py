"""Tests for gossip.broadcast: the transmit-limited queue of piggybacked gossip."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gossip.broadcast import BroadcastQueue


def test_empty_queue_takes_nothing() -> None:
    q = BroadcastQueue(4)
    assert len(q) == 0
    assert q.take(1400, 2, 3) == []
    assert q.dropped == 0


def test_fewest_transmits_first_then_newest_first() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a")
    q.queue(b"b")
    assert q.take(1400, 0, 5) == [b"b", b"a"]
    q.queue(b"c")
    # c has never been sent, so it goes before a and b; they keep newest-first order.
    assert q.take(1400, 0, 5) == [b"c", b"b", b"a"]


def test_budget_counts_overhead_and_skips_what_does_not_fit() -> None:
    q = BroadcastQueue(8)
    q.queue(b"x" * 10)  # oldest, small
    q.queue(b"y" * 50)  # too big for what is left after z
    q.queue(b"z" * 20)  # newest
    # Budget 40 with 2 bytes of overhead each: z costs 22, y (52) does not fit, x (12) does.
    assert q.take(40, 2, 5) == [b"z" * 20, b"x" * 10]
    # Items that fit exactly are taken.
    assert q.take(52, 2, 5) == [b"y" * 50]


def test_budget_smaller_than_overhead_takes_nothing() -> None:
    q = BroadcastQueue(8)
    q.queue(b"")
    assert q.take(1, 2, 5) == []
    assert q.take(2, 2, 5) == [b""]


def test_items_leave_after_retransmit_limit() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a")
    assert q.take(100, 0, 3) == [b"a"]
    assert q.take(100, 0, 3) == [b"a"]
    assert len(q) == 1
    assert q.take(100, 0, 3) == [b"a"]
    assert len(q) == 0
    assert q.take(100, 0, 3) == []


def test_an_item_limit_caps_its_transmits_below_the_pools() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a", limit=1)
    q.queue(b"b")
    assert q.take(100, 0, 3) == [b"b", b"a"]
    assert len(q) == 1  # a is done after its one transmission; b goes on
    assert q.take(100, 0, 3) == [b"b"]
    assert q.take(100, 0, 3) == [b"b"]
    assert q.take(100, 0, 3) == []
    assert len(q) == 0 and q.dropped == 0


def test_an_item_limit_above_the_pools_changes_nothing() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a", key="k", limit=10)
    assert q.take(100, 0, 2) == [b"a"]
    assert q.take(100, 0, 2) == [b"a"]
    assert q.take(100, 0, 2) == []
    q.queue(b"b", key="k")  # the key was released when a was done


def test_an_item_limit_goes_with_the_item_not_its_key() -> None:
    q = BroadcastQueue(8)
    q.queue(b"old", key="k", limit=1)
    q.queue(b"new", key="k")  # replaces old, with the pool's limit
    assert [q.take(100, 0, 3) for _ in range(4)] == [[b"new"], [b"new"], [b"new"], []]


def test_an_item_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BroadcastQueue(4).queue(b"a", limit=0)


def test_retransmit_limit_below_one_still_sends_once() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a")
    assert q.take(100, 0, 0) == [b"a"]
    assert len(q) == 0


def test_an_item_is_sent_at_most_once_per_take() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a")
    assert q.take(10_000, 0, 10) == [b"a"]


def test_same_key_replaces_the_older_item() -> None:
    q = BroadcastQueue(8)
    q.queue(b"alive n1 inc 1", key="n1")
    q.queue(b"other")
    q.take(1400, 0, 5)
    q.queue(b"suspect n1 inc 1", key="n1")
    assert len(q) == 2
    assert q.dropped == 0  # invalidation is not a drop
    assert q.take(1400, 0, 5) == [b"suspect n1 inc 1", b"other"]


def test_none_key_never_invalidates() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a")
    q.queue(b"a")
    assert len(q) == 2


def test_full_queue_drops_the_most_transmitted_then_oldest() -> None:
    q = BroadcastQueue(3)
    q.queue(b"a")
    q.queue(b"b")
    q.take(1400, 0, 10)  # a and b now have one transmit each
    q.queue(b"c")
    q.queue(b"d")  # full: a and b tie on transmits; a is older
    assert q.dropped == 1
    assert len(q) == 3
    assert q.take(1400, 0, 10) == [b"d", b"c", b"b"]


def test_full_queue_drop_clears_the_key() -> None:
    q = BroadcastQueue(1)
    q.queue(b"a", key="n1")
    q.queue(b"b", key="n2")  # drops a
    q.queue(b"c", key="n1")  # a is gone, so this drops b rather than replacing a
    assert q.dropped == 2
    assert q.take(1400, 0, 5) == [b"c"]


def test_replacing_in_a_full_queue_drops_nothing() -> None:
    q = BroadcastQueue(2)
    q.queue(b"a", key="n1")
    q.queue(b"b", key="n2")
    q.queue(b"a2", key="n1")
    assert q.dropped == 0
    assert q.take(1400, 0, 5) == [b"a2", b"b"]


def test_prune_keeps_the_least_transmitted() -> None:
    q = BroadcastQueue(8)
    q.queue(b"a")
    q.queue(b"b")
    q.take(1400, 0, 10)
    q.queue(b"c")
    q.prune(2)
    assert len(q) == 2
    assert q.dropped == 1
    assert q.take(1400, 0, 10) == [b"c", b"b"]
    q.prune(5)
    assert len(q) == 2


def test_reset_empties_and_keeps_the_drop_counter() -> None:
    q = BroadcastQueue(1)
    q.queue(b"a", key="n1")
    q.queue(b"b")
    q.reset()
    assert len(q) == 0
    assert q.dropped == 1
    assert q.take(1400, 0, 5) == []
    q.queue(b"c", key="n1")
    assert q.take(1400, 0, 5) == [b"c"]


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_items"):
        BroadcastQueue(0)
    q = BroadcastQueue(2)
    with pytest.raises(ValueError, match="overhead_bytes"):
        q.take(100, -1, 3)
    with pytest.raises(ValueError, match="max_retained"):
        q.prune(-1)


@dataclass
class _RefItem:
    seq: int
    key: str | None
    payload: bytes
    transmits: int = 0


class _Reference:
    """The spec written as plainly as possible (quadratic), to check the real queue against."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.items: list[_RefItem] = []
        self.dropped = 0
        self.seq = 0
        self.lost: list[bytes] = []  # payloads invalidated or dropped before their last transmit

    def _drop_one(self) -> None:
        victim = max(self.items, key=lambda i: (i.transmits, -i.seq))
        self.items.remove(victim)
        self.lost.append(victim.payload)
        self.dropped += 1

    def queue(self, payload: bytes, key: str | None) -> None:
        if key is not None:
            for old in [i for i in self.items if i.key == key]:
                self.items.remove(old)
                self.lost.append(old.payload)
        if len(self.items) >= self.max_items:
            self._drop_one()
        self.seq += 1
        self.items.append(_RefItem(self.seq, key, payload))

    def take(self, limit_bytes: int, overhead_bytes: int, retransmit_limit: int) -> list[bytes]:
        out: list[bytes] = []
        remaining = limit_bytes
        for item in sorted(self.items, key=lambda i: (i.transmits, -i.seq)):
            cost = len(item.payload) + overhead_bytes
            if cost <= remaining:
                remaining -= cost
                out.append(item.payload)
                item.transmits += 1
        self.items = [i for i in self.items if i.transmits < max(1, retransmit_limit)]
        return out

    def prune(self, max_retained: int) -> None:
        while len(self.items) > max_retained:
            self._drop_one()


class BroadcastQueueMachine(RuleBasedStateMachine):
    """Random interleavings of every operation, compared step by step with the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.sent: dict[bytes, int] = {}
        self.retransmit_limit = 3

    @initialize(
        max_items=st.integers(min_value=1, max_value=12),
        retransmit_limit=st.integers(min_value=1, max_value=5),
    )
    def start(self, max_items: int, retransmit_limit: int) -> None:
        self.real = BroadcastQueue(max_items)
        self.ref = _Reference(max_items)
        self.max_items = max_items
        self.retransmit_limit = retransmit_limit

    @rule(key=st.none() | st.sampled_from(["n1", "n2", "n3", "n4"]), size=st.integers(0, 60))
    def queue(self, key: str | None, size: int) -> None:
        # A unique prefix makes every payload distinct, so transmissions can be counted per item.
        self.counter += 1
        payload = self.counter.to_bytes(4, "big") + b"p" * size
        self.real.queue(payload, key)
        self.ref.queue(payload, key)
        self.sent[payload] = 0

    @rule(limit_bytes=st.integers(0, 300), overhead_bytes=st.integers(0, 8))
    def take(self, limit_bytes: int, overhead_bytes: int) -> None:
        got = self.real.take(limit_bytes, overhead_bytes, self.retransmit_limit)
        assert got == self.ref.take(limit_bytes, overhead_bytes, self.retransmit_limit)
        assert sum(len(p) + overhead_bytes for p in got) <= limit_bytes
        assert len(got) == len(dict.fromkeys(got))  # no item twice in one take
        for payload in got:
            self.sent[payload] += 1

    @rule(max_retained=st.integers(0, 12))
    def prune(self, max_retained: int) -> None:
        self.real.prune(max_retained)
        self.ref.prune(max_retained)
        assert len(self.real) <= max_retained

    @rule()
    def drain(self) -> None:
        # Budget big enough for everything: each remaining item goes out until its limit.
        for _ in range(self.retransmit_limit):
            self.take(10_000, 0)
        assert len(self.real) == 0
        lost = self.ref.lost
        for payload, count in self.sent.items():
            if payload in lost:
                assert count < self.retransmit_limit
            else:
                assert count == self.retransmit_limit

    @invariant()
    def matches_reference(self) -> None:
        if not hasattr(self, "real"):
            return
        assert len(self.real) == len(self.ref.items) <= self.max_items
        assert self.real.dropped == self.ref.dropped
        assert all(count <= self.retransmit_limit for count in self.sent.values())


TestBroadcastQueueMachine = BroadcastQueueMachine.TestCase
TestBroadcastQueueMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


@settings(deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200), max_size=40),
    limit_bytes=st.integers(0, 1400),
    overhead_bytes=st.integers(0, 16),
    retransmit_limit=st.integers(1, 6),
)
def test_every_item_is_sent_exactly_retransmit_limit_times(
    sizes: list[int], limit_bytes: int, overhead_bytes: int, retransmit_limit: int
) -> None:
    q = BroadcastQueue(max(1, len(sizes)))
    payloads = [i.to_bytes(2, "big") + b"x" * size for i, size in enumerate(sizes)]
    for payload in payloads:
        q.queue(payload)
    sent = dict.fromkeys(payloads, 0)
    fits = [p for p in payloads if len(p) + overhead_bytes <= limit_bytes]
    # Every take sends at least one item while any fitting item remains, so this bounds the loop.
    for _ in range(len(payloads) * retransmit_limit + 1):
        got = q.take(limit_bytes, overhead_bytes, retransmit_limit)
        assert sum(len(p) + overhead_bytes for p in got) <= limit_bytes
        for payload in got:
            sent[payload] += 1
        if not got:
            break
    for payload in payloads:
        assert sent[payload] == (retransmit_limit if payload in fits else 0)
    assert len(q) == len(payloads) - len(fits)


def test_take_respects_a_message_count_cap() -> None:
    q = BroadcastQueue(max_items=200)
    for i in range(100):
        q.queue(bytes([i]) * 5, key=f"k{i}")
    assert len(q.take(10_000, 0, 3, max_count=64)) == 64
    assert len(q.take(10_000, 0, 3)) == 100
