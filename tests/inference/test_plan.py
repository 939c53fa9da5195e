"""`murmur plan`'s pure part (inference/plan.py): where a manifest's replicas would go, what it
would move, what it cannot place, on a region's live inputs; and the placement core's inputs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.assignments import ReplicaState
from inference.placement import Change, ChangeKind, Displaced, Unplaced, place
from inference.plan import plan_region
from tests.inference.placing import GI, REGION, at, dep, node
from tests.inference.placing_harness import IDS, Cluster

READY = ReplicaState.READY
A, B, C = IDS[:3]


def test_a_new_deployment_that_fits_places_every_replica_and_moves_nothing_else() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    current = [at("old", 0, "n1", READY)]
    plan = plan_region(REGION, dep("new", 2), [dep("old")], nodes, current)
    assert plan.wanted == 2 and plan.fits
    assert [(a.slot, a.node_id, a.state) for a in plan.replicas] == [
        (0, "n2", ReplicaState.ASSIGNED),
        (1, "n3", ReplicaState.ASSIGNED),
    ]
    assert plan.changes == (
        Change("new", 0, ChangeKind.ADDED, None, "n2", "new replica"),
        Change("new", 1, ChangeKind.ADDED, None, "n3", "new replica"),
    )
    assert plan.unplaced == () and plan.displaced == ()


def test_scaling_an_existing_deployment_keeps_its_replicas_and_adds_the_rest() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    current = [at("vib", 0, "n1", READY)]
    plan = plan_region(REGION, dep("vib", 3), [dep("vib", 1)], nodes, current)
    assert (plan.replicas[0].node_id, plan.replicas[0].state) == ("n1", READY)  # it stays
    assert [c.kind for c in plan.changes] == [ChangeKind.ADDED, ChangeKind.ADDED]
    shrink = plan_region(REGION, dep("vib", 0), [dep("vib", 1)], nodes, current)
    assert shrink.wanted == 0 and shrink.replicas == () and shrink.fits
    assert shrink.changes == (
        Change("vib", 0, ChangeKind.REMOVED, "n1", None, f"no replicas wanted in {REGION}"),
    )


def test_what_cannot_be_placed_is_reported_with_why() -> None:
    plan = plan_region(REGION, dep("big", 2, memory=100 * GI), [], [node("n1"), node("n2")], [])
    assert not plan.fits and plan.replicas == ()
    assert [u.slot for u in plan.unplaced] == [0, 1]
    assert all(u.deployment == "big" and "memory" in u.reason for u in plan.unplaced)
    gpu = plan_region(REGION, dep("g", 1, accelerator="cuda"), [], [node("n1")], [])
    assert not gpu.fits and "cuda" in gpu.unplaced[0].reason


def test_a_displacement_shows_as_a_move_and_a_replica_pushed_out_as_unplaced() -> None:
    current = [at(x, 0, "n1", READY) for x in ("l1", "l2", "l3")]
    low = [dep("l1"), dep("l2"), dep("l3")]
    plan = plan_region(REGION, dep("h", priority=900), low, [node("n1")], current)
    assert [(a.node_id) for a in plan.replicas] == ["n1"]
    assert plan.displaced == (Displaced("l1", 0, "n1", "h", 900),)
    assert plan.unplaced == (Unplaced("l1", 0, "displaced by h (priority 900)"),)  # not h's own
    assert not plan.fits


def test_what_is_unplaced_anyway_is_not_blamed_on_the_manifest() -> None:
    # "big" cannot be placed with or without the new manifest: only the manifest's own count.
    desired = [dep("big", 1, memory=100 * GI)]
    plan = plan_region(REGION, dep("small", 1), desired, [node("n1")], [])
    assert plan.fits and plan.unplaced == ()
    assert place(REGION, desired, [node("n1")], []).unplaced  # it is unplaced all the same


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(0, 5),
    nodes=st.integers(0, 4),
    memory_gi=st.integers(1, 6),
)
def test_a_plan_is_what_place_would_do_with_the_manifest_in_force(
    count: int, nodes: int, memory_gi: int
) -> None:
    region_nodes = [node(f"n{i}") for i in range(nodes)]
    current = [at("other", 0, "n0", READY)] if nodes else []
    in_force = [dep("other"), dep("vib", 1)]
    manifest = dep("vib", count, memory=memory_gi * GI)
    plan = plan_region(REGION, manifest, in_force, region_nodes, current)
    after = place(REGION, [dep("other"), manifest], region_nodes, current)
    assert plan.replicas == tuple(a for a in after.assignments if a.deployment == "vib")
    assert len(plan.replicas) + len([u for u in plan.unplaced if u.deployment == "vib"]) == count
    assert plan.fits == (not plan.unplaced)
    assert set(plan.changes) <= set(after.changes)


def test_the_core_gives_plan_the_inputs_its_leader_places_with() -> None:
    cluster = Cluster(3)
    cluster.operator(dep("vib", 2))
    cluster.elect(A)
    cluster.run(3.0)
    core = cluster.member(C).core
    desired, nodes, current = core.place_inputs()
    assert [d.name for d in desired] == ["vib"]
    assert sorted(n.node_id for n in nodes) == sorted([A, B, C])
    assert sorted((a.deployment, a.node_id) for a in current) == sorted(
        ("vib", v.node_id) for v in core.replicas()
    )
    assert all(a.state is READY for a in current)  # as the holders report them
    plan = plan_region(core.region, dep("vib", 3), desired, nodes, current)
    assert plan.fits and len(plan.replicas) == 3
    assert [c.kind for c in plan.changes] == [ChangeKind.ADDED]
    too_many = plan_region(core.region, dep("vib", 4), desired, nodes, current)
    assert [u.slot for u in too_many.unplaced] == [3] and "spread" in too_many.unplaced[0].reason
