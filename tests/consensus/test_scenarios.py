"""Election scenarios on the deterministic harness: crashes, partitions, founding, reset."""

from __future__ import annotations

import pytest

from consensus.config import Era
from tests.consensus.harness import Cluster, NetModel

FIVE = ["n1", "n2", "n3", "n4", "n5"]


def settle(c: Cluster, until_s: float) -> str:
    c.run_until(until_s)
    leaders = c.leaders()
    assert len(leaders) == 1, (leaders, c.believed())
    assert not c.checker.violations, c.checker.violations
    return leaders[0]


def wait_new_leader(c: Cluster, old: str, limit_s: float) -> str:
    end = c.now + limit_s
    while c.now < end:
        c.run_until(c.now + 0.05)
        leaders = [x for x in c.leaders() if x != old]
        if leaders:
            return leaders[0]
    raise AssertionError(f"no new leader: {c.believed()}")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_a_region_of_any_size_founds_one_leader_that_all_members_know(size: int) -> None:
    ids = FIVE[:size]
    c = Cluster(ids, seed=size, net=NetModel(loss=0.05))
    leader = settle(c, 15.0)
    assert leader == "n1"  # the lowest id founds
    assert all(b == leader for b in c.believed().values())
    cfg = c.cores[leader].config()
    assert cfg is not None and cfg.voters == tuple(ids)
    cert = c.cores["n1"].certificate()
    assert cert is not None


def test_simultaneous_boot_under_duplication_and_loss_founds_one_era() -> None:
    c = Cluster(FIVE, seed=7, net=NetModel(loss=0.2, dup=0.2, delay_max_s=0.05))
    settle(c, 30.0)
    eras = {core.hard_state.era for core in c.cores.values()}
    assert eras == {Era(0, "n1")}


def test_leader_crash_elects_a_new_leader_and_the_old_one_rejoins_as_follower() -> None:
    c = Cluster(FIVE, seed=3, net=NetModel(loss=0.05))
    old = settle(c, 15.0)
    c.crash(old)
    new = wait_new_leader(c, old, 5.0)
    c.start(old)
    c.run_until(c.now + 10.0)
    assert c.leaders() == [new]
    assert c.cores[old].leader() == new
    assert not c.checker.violations


def test_a_minority_partition_cannot_elect_and_the_majority_keeps_or_elects_one() -> None:
    c = Cluster(FIVE, seed=4)
    leader = settle(c, 15.0)
    minority = [leader, next(x for x in FIVE if x != leader)]
    majority = [x for x in FIVE if x not in minority]
    c.partition(minority, majority)
    new = wait_new_leader(c, leader, 6.0)
    assert new in majority
    c.run_until(c.now + 20.0)
    for i in minority:
        assert not c.cores[i].is_leader(c.now)
    assert c.cores[leader].counters().get("check_quorum_step_downs") == 1
    assert not c.checker.violations


def test_a_node_back_from_a_partition_does_not_depose_a_healthy_leader() -> None:
    c = Cluster(FIVE, seed=5)
    leader = settle(c, 15.0)
    loner = next(x for x in reversed(FIVE) if x != leader)
    others = [x for x in FIVE if x != loner]
    c.partition([loner], others)
    c.run_until(c.now + 20.0)  # the loner times out again and again (pre-votes only)
    term_before = c.cores[leader].hard_state.term
    assert c.cores[loner].hard_state.term == term_before  # pre-vote: its term never rose
    c.heal()
    c.run_until(c.now + 10.0)
    assert c.leaders() == [leader]
    assert c.cores[leader].hard_state.term == term_before
    assert c.cores[loner].leader() == leader


def test_a_dead_voter_is_replaced_by_a_stable_member_one_change_at_a_time() -> None:
    ids = [*FIVE, "n6", "n7"]
    c = Cluster(ids, seed=6)
    leader = settle(c, 20.0)
    cfg = c.cores[leader].config()
    assert cfg is not None and cfg.voters == tuple(FIVE)
    victim = "n4"
    c.crash(victim)
    c.run_until(c.now + 15.0)
    cfg = c.cores[leader].config()
    assert cfg is not None and cfg.voters == ("n1", "n2", "n3", "n5", "n6")
    for i in cfg.voters:
        assert c.cores[i].config() == cfg
    assert c.cores["n7"].config() == cfg  # a non-voter learns it from announcements
    assert not c.checker.violations


def test_a_region_grows_its_voters_as_members_arrive() -> None:
    c = Cluster(FIVE, seed=8, boot_s=lambda i: 0.0 if i in ("n1", "n2") else 20.0)
    c.run_until(19.0)
    assert c.cores["n1"].config() is not None
    assert c.cores["n1"].config().voters == ("n1", "n2")  # type: ignore[union-attr]
    c.run_until(50.0)
    cfg = c.cores["n1"].config()
    assert cfg is not None and cfg.voters == tuple(FIVE)
    assert len(c.leaders()) == 1 and not c.checker.violations


def test_disjoint_founding_then_merge_keeps_the_better_era() -> None:
    c = Cluster(FIVE, seed=9)
    c.partition(["n1", "n2"], ["n3", "n4", "n5"])
    c.checker.allow_disjoint_leases = True  # two groups that never heard of each other
    c.run_until(15.0)
    assert c.cores["n1"].hard_state.era == Era(0, "n1")
    assert c.cores["n3"].hard_state.era == Era(0, "n3")
    assert len(c.leaders()) == 2
    c.heal()
    c.run_until(c.now + 15.0)
    assert {core.hard_state.era for core in c.cores.values()} == {Era(0, "n1")}
    assert len(c.leaders()) == 1
    merged = sum(core.counters().get("eras_merged", 0) for core in c.cores.values())
    assert merged == 3
    assert not c.checker.violations


def test_reset_voters_after_losing_a_majority() -> None:
    c = Cluster(FIVE, seed=10)
    settle(c, 15.0)
    for i in ("n1", "n2", "n3"):
        c.crash(i)
    c.run_until(c.now + 20.0)
    assert c.leaders() == []  # two of five cannot elect
    live = ["n4", "n5"]
    for i in live:
        assert c.cores[i].reset(c.now, 1, live) is None
    c.run_until(c.now + 10.0)
    assert len(c.leaders()) == 1
    assert c.cores["n4"].hard_state.era == Era(1, "n4")
    # The old voters come back: the old configuration never wins again; they adopt the new era.
    for i in ("n1", "n2", "n3"):
        c.start(i)
    c.run_until(c.now + 30.0)
    assert {core.hard_state.era for core in c.cores.values()} == {Era(1, "n4")}
    assert len(c.leaders()) == 1 and not c.checker.violations
    assert c.cores["n4"].reset(c.now, 1, live) is not None  # an old generation is refused
