"""The inference router: where a request is served, and the per-peer load it ranks by."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.assignments import ReplicaState
from inference.routing import (
    ATTEMPTS_MAX,
    Candidate,
    Forward,
    PeerLoad,
    Refuse,
    ServeHere,
    choose,
)

NODES = [f"n{i}" for i in range(6)]
_candidate = st.builds(
    Candidate,
    node_id=st.sampled_from(NODES),
    region=st.sampled_from(["a", "b"]),
    state=st.sampled_from(list(ReplicaState)),
    api_addr=st.sampled_from(["", "http://127.0.0.1:7800"]),
    in_flight=st.integers(0, 3),
    rtt_s=st.none() | st.floats(0, 1) | st.just(float("inf")),
)
_candidates = st.lists(_candidate, max_size=8, unique_by=lambda c: c.node_id)


def _ready(node_id: str, region: str = "a", in_flight: int = 0, rtt_s: float | None = None) -> Candidate:
    return Candidate(node_id, region, ReplicaState.READY, f"http://{node_id}", in_flight, rtt_s)


@settings(max_examples=300)
@given(
    candidates=_candidates,
    tried=st.lists(st.sampled_from(NODES), max_size=3),
    forwarded=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_never_a_node_that_is_not_ready_tried_or_unaddressable_and_order_does_not_matter(
    candidates: list[Candidate], tried: list[str], forwarded: bool, seed: int
) -> None:
    route = choose("m", node_id="n0", region="a", candidates=candidates, tried=tried, forwarded=forwarded)
    shuffled = list(candidates)
    random.Random(seed).shuffle(shuffled)
    assert (
        choose("m", node_id="n0", region="a", candidates=shuffled, tried=tried, forwarded=forwarded) == route
    )
    if isinstance(route, Forward):
        assert not forwarded, "a forwarded request is never forwarded again"
        chosen = next(c for c in candidates if c.node_id == route.node_id)
        assert chosen.state is ReplicaState.READY and chosen.api_addr == route.api_addr != ""
        assert route.node_id not in tried and route.node_id != "n0"
    elif isinstance(route, ServeHere):
        assert any(c.node_id == "n0" and c.state is ReplicaState.READY for c in candidates)
    else:
        assert route.status == 503 and "'m'" in route.reason


def test_a_ready_replica_here_serves_locally_even_when_others_are_closer() -> None:
    here = Candidate("n0", "a", ReplicaState.READY, "", 9)
    assert choose("m", node_id="n0", region="a", candidates=[_ready("n1"), here]) == ServeHere()


def test_same_region_first_then_queue_then_round_trip_then_id() -> None:
    far = _ready("n1", region="b")
    busy = _ready("n2", in_flight=2)
    slow = _ready("n3", in_flight=1, rtt_s=0.5)
    fast = _ready("n4", in_flight=1, rtt_s=0.1)
    unknown = _ready("n5", in_flight=1)
    pick = choose("m", node_id="n0", region="a", candidates=[far, busy, slow, fast, unknown])
    assert pick == Forward("n4", "http://n4")
    pick = choose("m", node_id="n0", region="a", candidates=[far, busy, slow, unknown])
    assert pick == Forward("n3", "http://n3")
    assert choose("m", node_id="n0", region="a", candidates=[far, busy]) == Forward("n2", "http://n2")
    assert choose("m", node_id="n0", region="a", candidates=[far]) == Forward("n1", "http://n1")
    tie = [_ready("n2"), _ready("n1")]
    assert choose("m", node_id="n0", region="a", candidates=tie) == Forward("n1", "http://n1")


def test_one_retry_goes_to_another_replica_then_the_request_is_refused() -> None:
    candidates = [_ready("n1"), _ready("n2"), _ready("n3")]
    tried: list[str] = []
    for _ in range(ATTEMPTS_MAX):
        route = choose("m", node_id="n0", region="a", candidates=candidates, tried=tried)
        assert isinstance(route, Forward)
        tried.append(route.node_id)
    assert tried == ["n1", "n2"]
    route = choose("m", node_id="n0", region="a", candidates=candidates[:2], tried=tried)
    assert isinstance(route, Refuse) and "no other ready replica" in route.reason


def test_a_forwarded_request_that_finds_no_replica_is_refused_not_forwarded() -> None:
    route = choose("m", node_id="n0", region="a", candidates=[_ready("n1")], forwarded=True)
    assert isinstance(route, Refuse) and "never forwarded again" in route.reason


def test_with_no_ready_replica_the_refusal_says_so() -> None:
    loading = Candidate("n1", "a", ReplicaState.LOADING, "http://n1")
    route = choose("m", node_id="n0", region="a", candidates=[loading])
    assert isinstance(route, Refuse) and route.status == 503 and "no ready replica" in route.reason


def test_peer_load_counts_in_flight_and_averages_round_trips() -> None:
    load = PeerLoad()
    load.started("n1")
    load.started("n1")
    assert load.of("n1").in_flight == 2 and load.of("n1").rtt_s is None
    load.finished("n1", 1.0)
    load.finished("n1", None)  # a failure leaves the average alone
    assert load.of("n1").in_flight == 0 and load.of("n1").rtt_s == 1.0
    load.started("n1")
    load.finished("n1", 0.0)
    assert load.of("n1").rtt_s == 0.8
    load.finished("n1", float("nan"))
    assert load.of("n1").in_flight == 0 and load.of("n1").rtt_s == 0.8


def test_peer_load_is_bounded_and_forgets_the_least_recent_peer() -> None:
    load = PeerLoad(peers_max=2)
    for node in ("n1", "n2", "n3"):
        load.started(node)
    assert load.of("n1").in_flight == 0
    assert load.of("n2").in_flight == load.of("n3").in_flight == 1
