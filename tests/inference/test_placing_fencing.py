"""Which placement records a node applies (inference/placement_check.py, inference/stamps.py): only
a leader's, proven by its certificate, and only the newest; every refusal is counted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.config import Era
from gossip.events import MemberState, RecordsAccepted
from gossip.kinds import PLACEMENT_KIND
from gossip.records import Record, sign_record
from inference.assignments import Assignment
from inference.placement_record import PlacementRecord, encode
from inference.placing import PlacementCore
from inference.placing_ports import PlacementConfig
from inference.stamps import Stamp, newer
from tests.inference.placing import dep
from tests.inference.placing_harness import (
    IDS,
    KEYS,
    PUBLIC,
    REGION,
    Cluster,
    FakeElection,
    FakeMesh,
    FakeRuntime,
    certificate,
    new_store,
)

A, B, C = IDS[:3]
ERA = Era(0, A)


def placement(
    author: int,
    term: int,
    epoch: int,
    *,
    on: str = A,
    cert: bytes | None = None,
    era: Era = ERA,
    version: int | None = None,
    region: str = REGION,
) -> Record:
    """A placement record by node `author` that puts one replica of `vib` on `on`."""
    leader = IDS[author]
    proof = certificate(leader, term, era) if cert is None else cert
    record = PlacementRecord(region, (era.generation, term), epoch, (Assignment("vib", 0, on),), proof)
    return sign_record(
        KEYS[author],
        PLACEMENT_KIND,
        leader,
        version or term * 1000 + epoch,
        "region:" + region,
        encode(record),
    )


def follower(keys_known: bool = True) -> tuple[PlacementCore, FakeMesh]:
    mesh = FakeMesh(new_store(), dict.fromkeys(IDS[:5], MemberState.ALIVE))
    if not keys_known:
        mesh.member_key = lambda node_id: None  # type: ignore[method-assign]
    core = PlacementCore(IDS[4], REGION, KEYS[4], mesh, FakeElection(leader_id=A), FakeRuntime())
    return core, mesh


def deliver(core: PlacementCore, *records: Record, now: float = 1.0) -> None:
    core.observe(now, RecordsAccepted(records))
    core.handle_timer(now)


def stamp_of(core: PlacementCore) -> tuple[Era, int, int] | None:
    applied = core.applied()
    return None if applied is None else (applied.stamp.era, applied.stamp.term, applied.stamp.epoch)


def test_a_leaders_placement_is_applied() -> None:
    core, _ = follower()
    deliver(core, placement(0, 1, 1))
    assert stamp_of(core) == (ERA, 1, 1)
    assert core.applied().leader == A  # type: ignore[union-attr]


def test_a_forged_certificate_is_refused() -> None:
    core, _ = follower()
    good = certificate(A, 1)
    forged = good[:-10] + bytes(10)  # the last signature broken
    deliver(core, placement(0, 1, 1, cert=forged), placement(0, 1, 2, cert=b"\xc1garbage"))
    assert core.applied() is None
    assert core.counters()["drop_forged_placement"] == 2


def test_a_placement_without_a_certificate_is_refused() -> None:
    core, _ = follower()
    record = PlacementRecord(REGION, (0, 1), 1, (Assignment("vib", 0, A),))
    deliver(core, sign_record(KEYS[0], PLACEMENT_KIND, A, 1, "region:" + REGION, encode(record)))
    assert core.applied() is None and core.counters()["drop_forged_placement"] == 1


def test_a_certificate_of_another_region_is_refused() -> None:
    core, _ = follower()
    deliver(core, placement(0, 1, 1, cert=certificate(A, 1, region="elsewhere")))
    assert core.applied() is None and core.counters()["drop_forged_placement"] == 1


def test_a_placement_of_another_region_is_refused() -> None:
    core, _ = follower()
    deliver(core, placement(0, 1, 1, region="elsewhere", cert=certificate(A, 1, region="elsewhere")))
    assert core.applied() is None and core.counters()["drop_bad_placement"] == 1


def test_a_certificate_of_another_term_is_refused() -> None:
    core, _ = follower()
    deliver(core, placement(0, 2, 1, cert=certificate(A, 1)))  # claims term 2 with a term-1 proof
    assert core.applied() is None and core.counters()["drop_forged_placement"] == 1


def test_a_record_by_a_node_that_is_not_the_leader_is_refused() -> None:
    core, _ = follower()
    deliver(core, placement(1, 1, 1, cert=certificate(A, 1)))  # B replays A's certificate
    assert core.applied() is None and core.counters()["drop_forged_placement"] == 1


def test_a_stale_epoch_is_ignored_and_counted() -> None:
    core, _ = follower()
    deliver(core, placement(0, 1, 2, on=B))
    deliver(core, placement(0, 1, 1, on=C, version=99_999))
    assert stamp_of(core) == (ERA, 1, 2) and core.applied().record.assignments[0].node_id == B  # type: ignore[union-attr]
    assert core.counters()["drop_stale_placement"] == 1


def test_a_deposed_leader_is_fenced_also_after_a_heal() -> None:
    core, _ = follower()
    deliver(core, placement(1, 2, 1, on=B))  # B won term 2
    # A led term 1 and kept publishing on its side of a partition; the heal brings its records.
    deliver(core, placement(0, 1, 7, on=C), placement(0, 1, 9, on=C, version=5000), now=30.0)
    assert stamp_of(core) == (ERA, 2, 1)
    assert core.counters()["drop_stale_placement"] == 2


def test_a_better_era_wins_over_a_higher_term() -> None:
    core, _ = follower()
    deliver(core, placement(0, 9, 3, on=A))
    reset = Era(1, C)  # an operator's reset-voters: a higher generation
    deliver(core, placement(1, 1, 1, on=B, era=reset))
    assert stamp_of(core) == (reset, 1, 1)
    deliver(core, placement(0, 10, 1, on=C))  # the old era never comes back
    assert stamp_of(core) == (reset, 1, 1)
    # Within one generation, the lower founder id is the better era.
    low, high = sorted([A, B])
    assert newer(Stamp(Era(0, low), 1, 1), Stamp(Era(0, high), 5, 5))
    assert not newer(Stamp(Era(0, high), 5, 5), Stamp(Era(0, low), 1, 1))


def test_a_placement_waits_for_its_voters_keys_and_is_counted_once() -> None:
    core, mesh = follower(keys_known=False)
    deliver(core, placement(0, 1, 1))
    assert core.applied() is None and core.counters()["drop_forged_placement"] == 1
    mesh.member_key = PUBLIC.get  # type: ignore[method-assign]
    core.handle_timer(2.0)
    assert core.applied() is None  # re-checked only every retry_unproven_s
    core.handle_timer(10.0)
    assert stamp_of(core) == (ERA, 1, 1)
    assert core.counters()["drop_forged_placement"] == 1


def test_a_placement_too_large_for_a_record_is_not_published() -> None:
    cluster = Cluster(3)
    long = "x" * 50
    for i in range(200):
        cluster.operator(dep(f"{long}-{i:03d}", 3, memory=1 << 20, cpu=1))
    cluster.elect(A)
    cluster.run(2.0)
    assert cluster.member(A).core.counters()["drop_oversized_placement"] >= 1
    assert all(m.core.applied() is None for m in cluster.members)


RECORDS = [
    placement(0, 1, 1, on=A),
    placement(0, 1, 2, on=B),
    placement(1, 2, 1, on=C),
    placement(1, 2, 3, on=A),
    placement(2, 1, 1, on=B, era=Era(1, C)),
    placement(0, 5, 1, on=C, cert=b"\xc1forged"),
    placement(1, 1, 4, on=A, cert=certificate(A, 1)),
]


@settings(max_examples=60, deadline=None)
@given(
    st.permutations(range(len(RECORDS))),
    st.lists(st.booleans(), min_size=len(RECORDS), max_size=len(RECORDS)),
)
def test_any_order_of_delivery_ends_with_the_same_placement(
    order: list[int], timer_after: list[bool]
) -> None:
    core, _ = follower()
    now = 1.0
    for i, tick in zip(order, timer_after, strict=True):
        core.observe(now, RecordsAccepted((RECORDS[i],)))
        if tick:
            core.handle_timer(now)
        now += 0.1
    core.handle_timer(now)
    applied = core.applied()
    assert applied is not None
    assert applied.stamp == Stamp(Era(1, C), 1, 1)
    assert applied.record.assignments == (Assignment("vib", 0, B),)
    assert core.counters()["drop_forged_placement"] == 2


def test_config_is_checked() -> None:
    import pytest

    with pytest.raises(ValueError):
        PlacementConfig(state_poll_s=0)
    with pytest.raises(ValueError):
        PlacementConfig(leaderless_after_s=-1)
