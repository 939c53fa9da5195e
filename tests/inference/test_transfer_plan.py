"""The transfer plan: chunks round-robin over holders within the limits, failures go elsewhere,
a hash mismatch rechecks from other holders and names the holder whose chunk was wrong."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from inference.transfer_plan import (
    ChunkRequest,
    Holder,
    Outcome,
    Received,
    TransferLimits,
    TransferPlan,
    restored,
    snapshot,
)

A = Holder("node-a", "127.0.0.1:1")
B = Holder("node-b", "127.0.0.1:2")
C = Holder("node-c", "127.0.0.1:3")
LIMITS = TransferLimits(chunk_bytes=10, in_flight_max=4, per_peer_in_flight_max=2, peer_failures_max=2)


def digest(index: int, bad: bool = False) -> str:
    return hashlib.sha256(f"{index}{'bad' if bad else ''}".encode()).hexdigest()


def plan(size: int = 95, holders: tuple[Holder, ...] = (A, B)) -> TransferPlan:
    p = TransferPlan("ab" * 32, size, LIMITS)
    p.set_holders(holders)
    return p


def serve(p: TransferPlan, bad: dict[str, set[int]] | None = None) -> list[ChunkRequest]:
    """Answer every request until the plan is complete; chunks in bad[node] come back wrong."""
    asked: list[ChunkRequest] = []
    while not p.complete:
        requests = p.next_requests()
        assert requests, "stuck"
        for r in requests:
            asked.append(r)
            wrong = r.index in (bad or {}).get(r.holder.node_id, set())
            p.chunk_done(r.index, r.holder.node_id, digest(r.index, wrong))
    return asked


def verify(p: TransferPlan) -> Outcome:
    return p.verified(all(r.digest == digest(i) for i, r in p.received.items()))


def test_chunks_cover_the_file_and_alternate_over_holders_within_the_limits() -> None:
    p = plan()
    first = p.next_requests()
    assert [(r.index, r.holder.node_id) for r in first] == [
        (0, "node-a"),
        (1, "node-b"),
        (2, "node-a"),
        (3, "node-b"),
    ]
    assert p.next_requests() == []  # 4 in flight at most
    for r in first:
        p.chunk_done(r.index, r.holder.node_id, digest(r.index))
    asked = first + serve(p)
    assert sorted(r.index for r in asked) == list(range(10))
    assert asked[-1].offset == 90 and asked[-1].length == 5
    assert verify(p) is Outcome.DONE
    assert p.peers["node-a"].bytes + p.peers["node-b"].bytes == 95


def test_a_failed_chunk_goes_to_another_holder_and_a_failing_holder_rests() -> None:
    p = plan()
    requests = p.next_requests()
    on_b = [r for r in requests if r.holder == B]
    for r in on_b:
        p.chunk_failed(r.index, "node-b", "stalled")
    assert p.peers["node-b"].resting  # 2 failures in a row
    for r in requests:
        if r.holder == A:
            p.chunk_done(r.index, "node-a", digest(r.index))
    again = p.next_requests()
    assert [r.index for r in again] == [1, 3]
    assert all(r.holder == A for r in again)
    p.chunk_done(on_b[0].index, "node-b", digest(0))  # a late answer: ignored
    assert on_b[0].index not in p.received or p.received[on_b[0].index].node_id == "node-a"
    p.set_holders([A, B])  # a refresh gives it a second chance
    assert not p.peers["node-b"].resting


def test_a_corrupt_chunk_is_refetched_from_another_holder_and_its_sender_counted_bad() -> None:
    p = plan(holders=(A, B, C))
    serve(p, bad={"node-b": {1}})
    assert p.received[1].node_id == "node-b"
    assert verify(p) is Outcome.RECHECK
    assert p.received == {}
    asked = serve(p, bad={"node-b": {1}})
    assert next(r for r in asked if r.index == 1).holder != B
    assert verify(p) is Outcome.DONE
    assert p.bad_peers == ["node-b"] and p.peers["node-b"].bad == 1
    assert p.peers["node-a"].bad == 0 and p.peers["node-c"].bad == 0


def test_a_wholly_bad_holder_is_found_by_single_holder_rounds() -> None:
    p = plan(holders=(B, A))
    everything = {"node-b": set(range(10))}
    serve(p, bad=everything)
    assert verify(p) is Outcome.RECHECK  # round 2: each chunk from the other holder: still mixed
    serve(p, bad=everything)
    assert verify(p) is Outcome.RECHECK  # round 3: all from node-b
    assert {r.holder for r in serve(p, bad=everything)} == {B}
    assert verify(p) is Outcome.RECHECK  # round 4: all from node-a
    assert {r.holder for r in serve(p, bad=everything)} == {A}
    assert verify(p) is Outcome.DONE
    assert p.bad_peers == ["node-b"]


def test_every_copy_bad_fails_within_the_rounds() -> None:
    p = plan(holders=(A,))
    outcomes = []
    for _ in range(10):
        serve(p, bad={"node-a": {3}})
        outcomes.append(verify(p))
        if outcomes[-1] is Outcome.FAILED:
            break
    assert outcomes[-1] is Outcome.FAILED and len(outcomes) <= LIMITS.rounds_max


def test_no_holder_no_request_and_a_gone_holder_is_not_waited_for() -> None:
    p = plan(holders=())
    assert p.next_requests() == [] and not p.usable()


def test_resume_fetches_only_missing_chunks_and_snapshots_round_trip() -> None:
    p = plan()
    serve(p)
    doc = snapshot(p)
    back = restored(doc, p.sha256, 95, 10)
    assert back == p.received
    q = plan()
    q.restore({i: r for i, r in back.items() if i % 2 == 0})
    assert q.resumed_bytes == 50
    assert sorted(r.index for r in serve(q)) == [1, 3, 5, 7, 9]


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=70),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=13), c, max_size=3),
        max_leaves=12,
    )
)
def test_a_malformed_snapshot_is_refused_never_raises(doc: object) -> None:
    assert restored(doc, "ab" * 32, 95, 10) is None or isinstance(restored(doc, "ab" * 32, 95, 10), dict)


def test_a_snapshot_of_another_transfer_is_refused() -> None:
    p = plan()
    serve(p)
    doc = snapshot(p)
    assert restored(doc, "cd" * 32, 95, 10) is None
    assert restored(doc, p.sha256, 96, 10) is None
    assert restored(doc, p.sha256, 95, 20) is None
    doc["received"]["99"] = ["node-a", digest(1)]
    assert restored(doc, p.sha256, 95, 10) is None
    assert restored({**snapshot(p), "received": {"1": ["node-a", "zz"]}}, p.sha256, 95, 10) is None


@given(
    size=st.integers(1, 300),
    failures=st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from(["node-a", "node-b", "node-c"])), max_size=30
    ),
)
def test_property_limits_hold_and_every_chunk_arrives_once_holders_answer(
    size: int, failures: list[tuple[int, str]]
) -> None:
    p = TransferPlan("ab" * 32, size, LIMITS)
    p.set_holders([A, B, C])
    fail = list(failures)
    steps = 0
    while not p.complete:
        steps += 1
        assert steps < 1000
        requests = p.next_requests()
        if not requests:
            p.set_holders([A, B, C])
            continue
        assert len(p.in_flight) <= LIMITS.in_flight_max
        for node in ("node-a", "node-b", "node-c"):
            assert sum(1 for n in p.in_flight.values() if n == node) <= LIMITS.per_peer_in_flight_max
        for r in requests:
            if fail and fail[0] == (r.index, r.holder.node_id):
                fail.pop(0)
                p.chunk_failed(r.index, r.holder.node_id, "error")
            else:
                p.chunk_done(r.index, r.holder.node_id, digest(r.index))
    assert sorted(p.received) == list(range(p.chunk_count))
    assert sum(p.chunk_length(i) for i in p.received) == size
    assert verify(p) is Outcome.DONE and p.bad_peers == []


def test_received_is_a_value() -> None:
    assert Received("n", digest(0)) == Received("n", digest(0))
