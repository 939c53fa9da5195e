"""The per-model request queue (priorities, bounds, Retry-After) and the dynamic batcher's policy,
driven on a virtual clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.batching import (
    NO_BATCHING,
    BatchingError,
    BatchPolicy,
    Idle,
    RunNow,
    WaitUntil,
    decide,
    policy_from_doc,
)
from inference.requestqueue import (
    RETRY_AFTER_MAX_S,
    Priority,
    RequestQueue,
    parse_priority,
)

_ops = st.lists(st.one_of(st.sampled_from(list(Priority)), st.integers(1, 3)), max_size=60)


@settings(max_examples=300)
@given(ops=_ops, capacity=st.integers(1, 6))
def test_service_order_bounds_and_displacement(ops: list[Priority | int], capacity: int) -> None:
    """Arrivals (a priority) and takes (a count) in any order: the queue never holds more than
    its capacity, hands out by priority then arrival, and refuses only when nothing of lower
    priority can make room."""
    queue: RequestQueue[int] = RequestQueue(capacity)
    model: list[tuple[Priority, int]] = []  # what should be queued, as (priority, arrival)
    for now, op in enumerate(ops):
        if isinstance(op, Priority):
            refused = queue.offer(float(now), now, op)
            lower = [entry for entry in model if entry[0] > op]
            if len(model) < capacity:
                assert refused is None
                model.append((op, now))
            elif not lower:
                assert refused is not None and refused.item == now and refused.retry_after_s >= 1
            else:
                victim = max(lower)  # the lowest priority, the newest of it
                assert refused is not None and refused.item == victim[1]
                model.remove(victim)
                model.append((op, now))
        else:
            taken = queue.take(op)
            model.sort()
            expected, model = model[:op], model[op:]
            assert [(q.priority, q.item) for q in taken] == expected
        assert len(queue) == len(model) <= capacity


def test_critical_is_served_before_bulk_and_fifo_within_a_priority() -> None:
    queue: RequestQueue[str] = RequestQueue(10)
    for now, (item, priority) in enumerate(
        [("b1", Priority.BULK), ("n1", Priority.NORMAL), ("c1", Priority.CRITICAL), ("c2", Priority.CRITICAL)]
    ):
        assert queue.offer(float(now), item, priority) is None
    assert [q.item for q in queue.take(10)] == ["c1", "c2", "n1", "b1"]


def test_a_full_queue_refuses_with_a_retry_after_that_follows_the_service_time() -> None:
    queue: RequestQueue[int] = RequestQueue(4, service_s=0.5)
    for i in range(4):
        assert queue.offer(0.0, i) is None
    refused = queue.offer(0.0, 99)
    assert refused is not None and refused.item == 99 and refused.retry_after_s == 2.0
    assert "holds 4 requests" in refused.reason
    for _ in range(50):
        queue.served(200.0, 2)  # 100 s per request: the estimate is capped
    refused = queue.offer(0.0, 100)
    assert refused is not None and refused.retry_after_s == RETRY_AFTER_MAX_S
    queue.served(float("nan"), 1)  # ignored
    queue.served(1.0, 0)  # ignored


def test_a_critical_request_displaces_the_newest_bulk_one() -> None:
    queue: RequestQueue[str] = RequestQueue(2)
    queue.offer(0.0, "b1", Priority.BULK)
    queue.offer(1.0, "b2", Priority.BULK)
    refused = queue.offer(2.0, "c", Priority.CRITICAL)
    assert refused is not None and refused.item == "b2" and "displaced by a critical" in refused.reason
    assert [q.item for q in queue.take(2)] == ["c", "b1"]


def test_a_request_whose_client_left_is_removed() -> None:
    queue: RequestQueue[object] = RequestQueue(3)
    a, b = object(), object()
    queue.offer(0.0, a)
    queue.offer(0.0, b)
    assert queue.remove(a) and not queue.remove(a)
    assert [q.item for q in queue.take(3)] == [b]


def test_bad_queue_settings_are_refused() -> None:
    for kwargs in ({"capacity": 0}, {"capacity": 1, "workers": 0}, {"capacity": 1, "service_s": 0.0}):
        with pytest.raises(ValueError, match="capacity >= 1"):
            RequestQueue(**kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Priority.NORMAL),
        ("critical", Priority.CRITICAL),
        (" Bulk ", Priority.BULK),
        ("normal", Priority.NORMAL),
    ],
)
def test_priorities_parse(value: object, expected: Priority) -> None:
    assert parse_priority(value) is expected


@pytest.mark.parametrize("value", ["urgent", 0, True, ["critical"], "x" * 1000])
def test_unknown_priorities_are_refused_by_name(value: object) -> None:
    with pytest.raises(ValueError, match="is not one of critical, normal, bulk") as caught:
        parse_priority(value)
    assert len(str(caught.value)) < 120


def test_without_batching_each_request_runs_at_once() -> None:
    queue: RequestQueue[int] = RequestQueue(8)
    assert decide(NO_BATCHING, 0.0, queue) == Idle()
    queue.offer(0.0, 1)
    queue.offer(0.0, 2)
    assert decide(NO_BATCHING, 0.0, queue) == RunNow(1)


def test_a_batch_runs_when_full_or_when_the_oldest_has_waited_max_delay() -> None:
    policy = BatchPolicy(max_batch=3, max_delay_s=0.002)
    queue: RequestQueue[int] = RequestQueue(8)
    queue.offer(10.0, 1)
    assert decide(policy, 10.0, queue) == WaitUntil(10.002)
    queue.offer(10.001, 2)
    assert decide(policy, 10.001, queue) == WaitUntil(10.002)
    assert decide(policy, 10.002, queue) == RunNow(2)
    queue.offer(10.0015, 3)
    queue.offer(10.0015, 4)
    assert decide(policy, 10.0015, queue) == RunNow(3)


def test_a_critical_request_does_not_wait_for_a_batch_to_fill() -> None:
    policy = BatchPolicy(max_batch=4, max_delay_s=1.0)
    queue: RequestQueue[int] = RequestQueue(8)
    queue.offer(0.0, 1, Priority.BULK)
    assert isinstance(decide(policy, 0.0, queue), WaitUntil)
    queue.offer(0.0, 2, Priority.CRITICAL)
    assert decide(policy, 0.0, queue) == RunNow(2)


def test_the_manifest_batching_section_parses() -> None:
    assert policy_from_doc(None) == NO_BATCHING
    assert policy_from_doc({"max_batch": 8, "max_delay_ms": 2}) == BatchPolicy(8, 0.002)
    assert policy_from_doc({"max_batch": 4}) == BatchPolicy(4, 0.0)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ([], "must be {max_batch"),
        ({"max_batch": 8, "extra": 1}, "must be {max_batch"),
        ({"max_batch": 0}, "max_batch: must be an integer 1..1024"),
        ({"max_batch": 10**30}, "max_batch"),
        ({"max_batch": True}, "max_batch"),
        ({"max_batch": 2, "max_delay_ms": -1}, "max_delay_ms"),
        ({"max_batch": 2, "max_delay_ms": "2"}, "max_delay_ms"),
    ],
)
def test_a_bad_batching_section_names_the_field(doc: object, needle: str) -> None:
    with pytest.raises(BatchingError) as caught:
        policy_from_doc(doc)
    assert needle in str(caught.value)
