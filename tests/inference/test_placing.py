"""The placement core in the mesh (inference/placing.py): the leader publishes, every node applies
the newest valid placement, reports its replicas, takes over without a leader, drains new-before-old."""

from __future__ import annotations

from consensus.config import Era
from gossip.events import MemberState, RecordsAccepted
from gossip.kinds import PLACEMENT_KIND, REPLICAS_KIND
from gossip.records import sign_record
from inference import replica_states
from inference.assignments import ReplicaState
from inference.placement import PlacementOptions, place
from inference.placement_record import decode
from inference.placing import PLACEMENT_CHANNEL
from inference.placing_inputs import deployments_of, nodes_of, present_members
from inference.placing_ports import PlacementApplied, ReplicaDropped, ReplicaStateChanged
from inference.resources import NodeStatus
from node.channels import Channel
from tests.inference.placing import dep
from tests.inference.placing_harness import GI, IDS, KEYS, Cluster

A, B, C, D, E = IDS[:5]


def test_the_channel_is_the_placement_channel() -> None:
    assert PLACEMENT_CHANNEL == Channel.PLACEMENT


def test_the_leader_publishes_and_every_node_applies_it() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 2))
    cluster.elect(A)
    cluster.run(2.0)
    views = [cluster.placed(m.node_id) for m in cluster.members]
    assert views[0] == views[1] == views[2]
    assert len(views[0]) == 2 and len(set(views[0].values())) == 2
    stamps = {m.core.applied().stamp for m in cluster.members}  # type: ignore[union-attr]
    assert len(stamps) == 1
    stamp = stamps.pop()
    assert (stamp.era, stamp.term, stamp.epoch) == (Era(0, A), 1, 1)
    record = cluster.member(B).store.get(PLACEMENT_KIND, A)
    assert record is not None and decode(record.payload).certificate  # carries the leader's proof
    # Each holder reports its replica ready (the fake runtime is ready at once).
    assert cluster.holders("vib") == dict.fromkeys(views[0].values(), ReplicaState.READY)
    for holder in views[0].values():
        report = cluster.member(A).store.get(REPLICAS_KIND, holder)
        assert report is not None
        assert replica_states.decode(report.payload).state_of("vib") is ReplicaState.READY
    events = cluster.member(C).core.drain_events()
    applied = [e for e in events if isinstance(e, PlacementApplied)]
    assert len(applied) == 1 and applied[0].leader == A and len(applied[0].changes) == 2
    assert cluster.member(A).core.counters()["placements_published"] == 1


def test_nothing_changed_publishes_nothing_more() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 2))
    cluster.elect(A)
    cluster.run(2.0)
    cluster.run(20.0)  # several refresh rounds
    assert cluster.member(A).core.counters()["placements_published"] == 1
    assert cluster.member(B).core.applied().stamp.epoch == 1  # type: ignore[union-attr]


def test_a_follower_never_publishes() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.member(A).election.leading = False  # the lease lapsed: nobody may publish
    cluster.run(5.0)
    assert all(m.core.applied() is None for m in cluster.members)
    assert all(m.store.get(PLACEMENT_KIND, m.node_id) is None for m in cluster.members)


def test_a_dead_node_moves_only_its_replicas() -> None:
    cluster = Cluster(4)
    cluster.operator(dep("vib", 2))
    cluster.operator(dep("cam", 1))
    cluster.elect(A)
    cluster.run(2.0)
    before = cluster.placed(A)
    victim = next(n for n in before.values() if n != A)
    cluster.crash(victim)
    cluster.run(2.0)
    after = cluster.placed(A)
    assert victim not in after.values()
    assert {k: v for k, v in before.items() if v != victim} == {
        k: v for k, v in after.items() if k in before and before[k] != victim
    }
    assert len(after) == 3
    assert cluster.placed(B if victim != B else C) == after


def test_a_suspect_node_keeps_its_replicas() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 3))
    cluster.elect(A)
    cluster.run(2.0)
    before = cluster.placed(A)
    cluster.set_state(C, MemberState.SUSPECT)
    cluster.run(5.0)
    assert cluster.placed(A) == before


def test_unknown_application_messages_are_counted() -> None:
    cluster = Cluster(1)
    core = cluster.members[0].core
    core.handle_message(0.0, "region", B, b"\x00")
    assert core.counters()["drop_unknown_message"] == 1
    assert core.poll_messages() == []


def test_leaderless_takeover_is_the_same_on_every_node() -> None:
    cluster = Cluster(5)
    cluster.operator(dep("vib", 2))
    cluster.operator(dep("cam", 1))
    cluster.elect(A)
    cluster.run(2.0)
    placed = cluster.placed(B)
    holder = next(n for n in placed.values() if n != A)
    lost = sorted(k for k, n in placed.items() if n in (A, holder))
    # The leader and a replica holder die together: no leader can be named at once.
    cluster.crash(A)
    cluster.crash(holder)
    cluster.elect(None)
    cluster.run(2.0)
    survivors = [m for m in cluster.members if m.up]
    assert not any(v.provisional for m in survivors for v in m.core.own_replicas())  # not yet: < 3 s
    cluster.run(3.0)
    # What the function picks from the same inputs, computed here once.
    m0 = survivors[0]
    present = present_members(m0.mesh.region_members())
    deployments = deployments_of(m0.store.records("desired"), {})
    nodes = nodes_of("r", present, m0.store.records("inventory"), {})
    expected = place(
        "r",
        deployments.values(),
        nodes,
        m0.core.applied().record.assignments,
        options=PlacementOptions(provisional=True),
    )  # type: ignore[union-attr]
    want = sorted(
        (a.deployment, a.slot, a.node_id) for a in expected.assignments if a.state is ReplicaState.PROVISIONAL
    )
    got = sorted(
        (v.deployment, v.slot, m.node_id) for m in survivors for v in m.core.own_replicas() if v.provisional
    )
    assert got == want and len(got) == len(lost)
    for m in survivors:  # each node still serves its own assignments
        mine = {k[0] for k, n in placed.items() if n == m.node_id}
        assert mine <= {v.deployment for v in m.core.own_replicas()}
    # A new leader's placement supersedes the takeovers, moving nothing.
    new_leader = survivors[0].node_id
    cluster.elect(new_leader, term=2)
    cluster.run(2.0)
    final = cluster.placed(new_leader)
    assert sorted(
        (d, s, n) for (d, s), n in final.items() if n not in [m.node_id for m in cluster.members if not m.up]
    ) == sorted((d, s, n) for (d, s), n in final.items())
    for d, s, n in want:
        assert final[(d, s)] == n
    assert not any(v.provisional for m in survivors for v in m.core.own_replicas())


def test_no_takeover_while_a_leader_lives() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.run(2.0)
    cluster.member(A).election.leading = False  # a leader that cannot act (lease) is still a leader
    cluster.run(10.0)
    assert not any(v.provisional for m in cluster.members for v in m.core.own_replicas())


def test_a_heal_reduces_duplicates_keeping_the_serving_one() -> None:
    cluster = Cluster(4)
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.run(2.0)
    holder = cluster.placed(A)[("vib", 0)]
    others = [n for n in (A, B, C, D) if n != holder]
    leader = others[0]
    cluster.elect(leader, term=2)
    cluster.run(1.0)
    # Split: three nodes keep the leader; the holder's side (itself alone) sees them dead.
    big, small = others, [holder]
    for n in small:
        cluster.side[n] = 1
    for n in small:
        cluster.set_state(n, MemberState.DEAD, seen_by=big)
    for n in big:
        cluster.set_state(n, MemberState.DEAD, seen_by=small)
    for n in small:
        cluster.member(n).election.leader_id = None
    # The replacement on the big side loads slowly.
    for n in big:
        cluster.member(n).runtime.auto_ready = False
    cluster.run(6.0)
    holders = cluster.holders("vib")
    assert holder in holders and len(holders) == 2  # a duplicate on each side
    assert holders[holder] is ReplicaState.READY
    # Heal: every record crosses, every member is alive again everywhere.
    for n in small:
        cluster.side[n] = 0
    for m in cluster.members:
        for r in list(m.store.records()):
            cluster.publish(r)
    for n in (A, B, C, D):
        cluster.set_state(n, MemberState.ALIVE)
    cluster.elect(leader, term=2)
    cluster.run(10.0)
    assert cluster.holders("vib") == {holder: ReplicaState.READY}
    assert cluster.placed(leader) == {("vib", 0): holder}
    assert cluster.placed(holder) == {("vib", 0): holder}


def test_drain_moves_new_before_old() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.run(2.0)
    old = cluster.placed(A)[("vib", 0)]
    for m in cluster.members:
        m.runtime.auto_ready = False
    cluster.member(old).runtime.states["vib"] = ReplicaState.READY
    cluster.schedule(old, NodeStatus.DRAINING)
    cluster.run(2.0)
    placed = cluster.placed(A)
    new = placed[("vib", 0)]
    assert new != old and placed[("vib", 1)] == old  # the old one kept in an extra slot
    assert cluster.holders("vib") == {old: ReplicaState.READY, new: ReplicaState.ASSIGNED}
    cluster.run(10.0)
    assert cluster.holders("vib")[old] is ReplicaState.READY  # still serving: the new one is not ready
    cluster.member(new).runtime.states["vib"] = ReplicaState.READY
    cluster.run(5.0)
    assert cluster.placed(A) == {("vib", 0): new}
    assert cluster.holders("vib") == {new: ReplicaState.READY}
    dropped = [e for e in cluster.member(old).core.drain_events() if isinstance(e, ReplicaDropped)]
    assert [(e.deployment) for e in dropped] == ["vib"]


def test_cordon_keeps_what_a_node_has_and_gives_it_nothing_new() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 3))
    cluster.elect(A)
    cluster.run(2.0)
    cluster.schedule(C, NodeStatus.CORDONED)
    cluster.operator(dep("cam", 3))
    cluster.run(2.0)
    placed = cluster.placed(A)
    assert C in [n for (d, _s), n in placed.items() if d == "vib"]  # it keeps what it had
    assert C not in [n for (d, _s), n in placed.items() if d == "cam"]  # and gets nothing new
    assert [(u.deployment, u.reason) for u in cluster.member(B).core.unplaced()] == [
        ("cam", "only 2 nodes meet the requirements for 3 replicas (spread)")
    ]
    cluster.schedule(C, None)  # uncordon: a tombstone
    cluster.run(2.0)
    assert C in [n for (d, _s), n in cluster.placed(A).items() if d == "cam"]


def test_rebalance_runs_once_per_generation() -> None:
    cluster = Cluster(3)
    # C is dead at first, so everything lands on A and B.
    for m in cluster.members:
        m.mesh.members[C] = MemberState.DEAD
    cluster.operator(dep("a", 1, memory=GI))
    cluster.operator(dep("b", 1, memory=GI))
    cluster.operator(dep("c", 1, memory=GI))
    cluster.operator(dep("d", 1, memory=GI))
    cluster.elect(A)
    cluster.run(2.0)
    assert C not in cluster.placed(A).values()
    cluster.set_state(C, MemberState.ALIVE)
    cluster.run(5.0)
    assert C not in cluster.placed(A).values()  # a join moves nothing
    published = cluster.member(A).core.counters()["placements_published"]
    cluster.rebalance(1)
    cluster.run(5.0)
    assert C in cluster.placed(A).values()
    assert cluster.member(B).core.applied().record.rebalanced == 1  # type: ignore[union-attr]
    after_first = cluster.member(A).core.counters()["placements_published"]
    assert after_first > published
    cluster.run(10.0)
    assert cluster.member(A).core.counters()["placements_published"] == after_first  # once per generation
    cluster.rebalance(2)
    cluster.run(5.0)
    assert cluster.member(B).core.applied().record.rebalanced == 2  # type: ignore[union-attr]


def test_reads_for_the_api() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 2))
    cluster.operator(dep("big", 1, memory=100 * GI))
    cluster.elect(A)
    cluster.run(3.0)
    core = cluster.member(C).core
    views = core.replicas()
    assert sorted(v.deployment for v in views) == ["vib", "vib"]
    assert all(v.state is ReplicaState.READY for v in views)
    counts = {c.deployment: (c.ready, c.desired) for c in core.deployment_counts()}
    assert counts == {"big": (0, 1), "vib": (2, 2)}
    assert [(u.deployment, u.reason.startswith("needs 100Gi memory")) for u in core.unplaced()] == [
        ("big", True)
    ]
    holders = [v.node_id for v in views]
    for m in cluster.members:
        assert [v.deployment for v in m.core.own_replicas()] == (["vib"] if m.node_id in holders else [])
    events = cluster.member(holders[0]).core.drain_events()
    states = [e.state for e in events if isinstance(e, ReplicaStateChanged)]
    assert states == [ReplicaState.ASSIGNED, ReplicaState.READY]


def test_a_rebalance_is_not_undone_by_the_old_holders_report() -> None:
    cluster = Cluster(3)
    for m in cluster.members:
        m.mesh.members[C] = MemberState.DEAD
    for name in "abcd":
        cluster.operator(dep(name, 1, memory=GI))
    cluster.elect(A)
    cluster.run(2.0)
    before = cluster.placed(A)
    # The newcomer loads slowly: the old holders' ready replicas look better to `place`.
    cluster.member(C).runtime.auto_ready = False
    cluster.set_state(C, MemberState.ALIVE)
    cluster.rebalance(1)
    cluster.run(10.0)
    after = cluster.placed(A)
    moved = sorted(k for k, n in after.items() if n == C)
    assert moved
    for key in moved:  # the old holders let go once a newer placement confirmed it
        assert cluster.holders(key[0]) == {C: ReplicaState.ASSIGNED}, key
        assert before[key] != C
    assert cluster.member(B).core.applied().record.rebalanced == 1  # type: ignore[union-attr]


def test_a_serving_replica_waits_for_a_newer_placement_before_it_stops() -> None:
    cluster = Cluster(4)
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.run(2.0)
    holder = cluster.placed(A)[("vib", 0)]
    leader = next(n for n in (A, B, C, D) if n != holder)
    others = [n for n in (A, B, C, D) if n != holder]
    cluster.elect(leader, term=2)
    cluster.run(1.0)
    cluster.side[holder] = 1
    cluster.set_state(holder, MemberState.DEAD, seen_by=others)
    for n in others:
        cluster.set_state(n, MemberState.DEAD, seen_by=[holder])
        cluster.member(n).runtime.auto_ready = False
    cluster.member(holder).election.leader_id = None
    cluster.run(6.0)
    # The heal: members see each other again, and the leader's newer placement reaches the
    # holder before the holder's report reaches the leader: the holder must keep serving.
    for n in (A, B, C, D):
        cluster.set_state(n, MemberState.ALIVE)
    cluster.member(holder).election.leader_id = leader
    m = cluster.member(holder)
    for record in cluster.member(leader).store.records(PLACEMENT_KIND):
        new = m.store.merge(cluster.now, [record])
        m.core.observe(cluster.now, RecordsAccepted(tuple(new)))
    m.core.handle_timer(cluster.now)
    assert m.core.applied().leader == leader  # type: ignore[union-attr]
    assert cluster.holders("vib")[holder] is ReplicaState.READY
    assert not any(v.provisional for v in m.core.own_replicas())
    cluster.side[holder] = 0
    for member in cluster.members:
        for r in list(member.store.records()):
            cluster.publish(r)
    cluster.elect(leader, term=2)
    cluster.run(10.0)
    assert cluster.holders("vib") == {holder: ReplicaState.READY}
    assert not [e for e in m.core.drain_events() if isinstance(e, ReplicaDropped)]


def _suspect_holder_setup() -> tuple[Cluster, dict[tuple[str, int], str], str]:
    """4 nodes, `vib` x2 placed and ready; returns (cluster, placement, a holder other than the
    leader) with every runtime waiting (nothing becomes ready unless told)."""
    cluster = Cluster(4)
    cluster.operator(dep("vib", 2))
    cluster.elect(A)
    cluster.run(2.0)
    before = cluster.placed(A)
    victim = next(n for n in before.values() if n != A)
    for m in cluster.members:
        m.runtime.auto_ready = False
        if m.node_id in before.values():
            m.runtime.states["vib"] = ReplicaState.READY
    return cluster, before, victim


def test_a_holder_suspect_past_the_standby_delay_gets_a_standby_and_keeps_serving() -> None:
    cluster, before, victim = _suspect_holder_setup()
    slot = next(s for (_d, s), n in before.items() if n == victim)
    cluster.set_state(victim, MemberState.SUSPECT)
    cluster.run(0.5)  # shorter than standby_after_s: a stall that ends quickly moves nothing
    assert cluster.placed(A) == before
    cluster.run(1.0)
    placed = cluster.placed(A)
    spare = placed[("vib", slot)]  # the standby takes the suspect's slot
    assert spare not in before.values()
    assert placed[("vib", 2)] == victim  # the suspect's serving replica stays, in an extra slot
    assert cluster.holders("vib")[victim] is ReplicaState.READY
    assert cluster.member(A).core.counters()["standby_replicas"] == 1
    cluster.member(spare).runtime.states["vib"] = ReplicaState.READY
    cluster.run(3.0)
    placed = cluster.placed(A)
    assert victim not in placed.values() and len(placed) == 2  # the standby is ready: the old goes


def test_a_suspect_that_refutes_before_its_standby_is_ready_keeps_its_replica() -> None:
    cluster, before, victim = _suspect_holder_setup()
    cluster.set_state(victim, MemberState.SUSPECT)
    cluster.run(2.0)
    spare = next(n for n in cluster.placed(A).values() if n not in before.values())
    cluster.set_state(victim, MemberState.ALIVE)  # it refuted: it was slow, not gone
    cluster.run(2.0)
    assert cluster.placed(A) == before  # the standby, not ready yet, is the one that goes
    assert "vib" not in {v.deployment for v in cluster.member(spare).core.own_replicas()}


def test_a_suspect_with_no_node_for_a_standby_keeps_its_slot() -> None:
    cluster = Cluster(2)
    cluster.operator(dep("vib", 2))
    cluster.elect(A)
    cluster.run(2.0)
    before = cluster.placed(A)
    cluster.set_state(B, MemberState.SUSPECT)
    cluster.run(5.0)
    assert cluster.placed(A) == before
    assert cluster.member(A).core.counters().get("placements_published") == 1


def test_a_report_from_a_forgotten_life_is_answered_with_a_newer_one() -> None:
    """A node restored from an old backup signs above the versions it holds; its reports signed
    after the backup come back from peers with higher versions and outrank its new one. It
    reports again, above them, so the region never keeps the stale report."""
    cluster = Cluster(3)
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.run(2.0)
    holder = next(iter(cluster.holders("vib")))
    index = IDS.index(holder)
    now_report = cluster.member(A).store.get(REPLICAS_KIND, holder)
    assert now_report is not None
    stale = sign_record(
        KEYS[index],
        REPLICAS_KIND,
        holder,
        now_report.version + 1000,
        now_report.scope,
        replica_states.encode(replica_states.ReplicaReport((), None)),
    )
    cluster.publish(stale)  # anti-entropy brings the old life's report back everywhere
    cluster.run(2.0)
    for m in cluster.members:
        report = m.store.get(REPLICAS_KIND, holder)
        assert report is not None and report.version > stale.version
        assert replica_states.decode(report.payload).state_of("vib") is ReplicaState.READY
    assert cluster.member(holder).core.counters()["own_report_superseded"] == 1


def test_a_failed_replicas_error_reaches_every_node_of_the_region() -> None:
    cluster = Cluster(3)
    for m in cluster.members:
        m.runtime.states["vib"] = ReplicaState.FAILED
        m.runtime.errors["vib"] = "load failed:\n  [ONNXRuntimeError] : 10 : INVALID_GRAPH " + "x" * 80
    cluster.operator(dep("vib", 1))
    cluster.elect(A)
    cluster.run(2.0)
    (holder,) = cluster.placed(A).values()
    for m in cluster.members:
        (view,) = [v for v in m.core.replicas() if v.deployment == "vib"]
        assert view.node_id == holder and view.state is ReplicaState.FAILED
        # whitespace folded, cut to what the record carries
        assert view.error == ("load failed: [ONNXRuntimeError] : 10 : INVALID_GRAPH " + "x" * 80)[:64]
    healthy = cluster.member(holder)
    healthy.runtime.states["vib"] = ReplicaState.READY
    healthy.runtime.errors.clear()
    cluster.run(2.0)
    assert all(v.error is None for m in cluster.members for v in m.core.replicas())


def test_a_leader_adopting_a_started_takeover_says_nothing_new_about_it() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 1))
    cluster.elect(None)
    cluster.run(5.0)  # no leader for longer than a round: provisional takeovers start
    takers = [m for m in cluster.members if any(v.provisional for v in m.core.own_replicas())]
    assert takers
    for m in cluster.members:
        m.core.drain_events()
    cluster.elect(A)
    cluster.run(3.0)
    (holder,) = cluster.placed(A).values()
    states = [e for e in cluster.member(holder).core.drain_events() if isinstance(e, ReplicaStateChanged)]
    assert holder in {m.node_id for m in takers}  # the leader kept the takeover where it was
    assert states == []  # ready before, ready after: no second replica_ready
    assert cluster.holders("vib") == {holder: ReplicaState.READY}
