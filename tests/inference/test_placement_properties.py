"""Properties of inference/placement.py over random regions (Hypothesis): constraints and
capacity always hold, the result depends on the inputs and never on their order, placing
again from a placement changes nothing, a dead node moves only its own replicas, a new node
moves none, and duplicates are reduced."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.assignments import Assignment, ReplicaState
from inference.manifest import Deployment
from inference.placement import ChangeKind, Placement, PlacementOptions, place
from inference.resources import NodeResources, NodeStatus
from tests.inference.placing import GI, MI, REGION, check_invariants, dep, node

NODE_IDS = [f"n{i}" for i in range(10)]


@st.composite
def nodes(draw: st.DrawFn, min_size: int = 1) -> list[NodeResources]:
    ids = draw(st.lists(st.sampled_from(NODE_IDS[:8]), min_size=min_size, max_size=8, unique=True))
    return [
        node(
            node_id,
            draw(st.sampled_from([1 * GI, 2 * GI, 4 * GI, 8 * GI])),
            draw(st.integers(1, 4)),
            accelerators=draw(st.sampled_from([(), ("CUDAExecutionProvider",)])),
            labels=draw(st.sampled_from([{}, {"zone": "a"}, {"zone": "b"}, {"zone": "a", "camera": "yes"}])),
            status=draw(
                st.sampled_from([NodeStatus.SCHEDULABLE] * 4 + [NodeStatus.CORDONED, NodeStatus.DRAINING])
            ),
        )
        for node_id in ids
    ]


@st.composite
def deployments(draw: st.DrawFn) -> list[Deployment]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5, unique=True))
    return [
        dep(
            name,
            draw(st.integers(0, 4)),
            priority=draw(st.sampled_from([0, 10, 100])),
            memory=draw(st.sampled_from([256 * MI, 512 * MI, GI, 2 * GI])),
            cpu=draw(st.sampled_from([250, 500, 1000])),
            accelerator=draw(st.sampled_from([None, None, "cuda"])),
            labels=draw(st.sampled_from([(), (), (("camera", "yes"),)])),
            min_memory=draw(st.sampled_from([0, 0, 2 * GI])),
            spread=draw(st.sampled_from([None, "zone"])),
        )
        for name in names
    ]


def currents() -> st.SearchStrategy[list[Assignment]]:
    """Anything a placement record may have held: gone nodes, unknown deployments, duplicates."""
    return st.lists(
        st.builds(
            Assignment,
            st.sampled_from(["a", "b", "c", "d", "e", "z"]),
            st.integers(0, 5),
            st.sampled_from(NODE_IDS),
            st.sampled_from(list(ReplicaState)),
        ),
        max_size=25,
    )


def shuffled(items: list[object], seed: int) -> list[object]:
    copy = list(items)
    random.Random(seed).shuffle(copy)
    return copy


@settings(max_examples=300, deadline=None)
@given(deployments(), nodes(min_size=0), currents(), st.booleans(), st.booleans())
def test_constraints_and_capacity_always_hold(
    desired: list[Deployment],
    region: list[NodeResources],
    current: list[Assignment],
    rebalance: bool,
    prov: bool,
) -> None:
    options = PlacementOptions(rebalance=rebalance, provisional=prov)
    p = place(REGION, desired, region, current, options=options)
    check_invariants(p, desired, region, current, options)
    new = ReplicaState.PROVISIONAL if prov else ReplicaState.ASSIGNED
    before = {(a.deployment, a.node_id) for a in current}
    for a in p.assignments:
        if (a.deployment, a.node_id) not in before:
            assert a.state is new


@settings(max_examples=200, deadline=None)
@given(deployments(), nodes(), currents(), st.booleans(), st.integers(0, 2**32))
def test_the_order_of_the_inputs_never_changes_the_result(
    desired: list[Deployment],
    region: list[NodeResources],
    current: list[Assignment],
    rebalance: bool,
    seed: int,
) -> None:
    options = PlacementOptions(rebalance=rebalance)
    p = place(REGION, desired, region, current, options=options)
    q = place(
        REGION,
        shuffled(desired, seed),  # type: ignore[arg-type]
        shuffled(region, seed + 1),  # type: ignore[arg-type]
        shuffled(current, seed + 2),  # type: ignore[arg-type]
        options=options,
    )
    assert p == q
    assert p == place(REGION, desired, region, current, options=options)  # and no hidden state


def settled(desired: list[Deployment], region: list[NodeResources], current: list[Assignment]) -> Placement:
    """A placement as a leader would hold it: the result of placing, applied."""
    return place(REGION, desired, region, current)


@settings(max_examples=300, deadline=None)
@given(deployments(), nodes(), currents(), st.booleans())
def test_placing_again_from_a_placement_changes_nothing(
    desired: list[Deployment], region: list[NodeResources], current: list[Assignment], rebalance: bool
) -> None:
    """Same assignments, no change; the same slots unplaced (a displaced replica's reason
    becomes the capacity reason: it is no longer being displaced)."""
    options = PlacementOptions(rebalance=rebalance)
    p = place(REGION, desired, region, current, options=options)
    q = place(REGION, desired, region, p.assignments, options=options)
    assert q.assignments == p.assignments
    assert q.changes == () and q.displaced == ()
    assert [(u.deployment, u.slot) for u in q.unplaced] == [(u.deployment, u.slot) for u in p.unplaced]


@settings(max_examples=300, deadline=None)
@given(deployments(), nodes(min_size=2), currents(), st.data())
def test_a_dead_node_moves_only_its_own_replicas(
    desired: list[Deployment], region: list[NodeResources], current: list[Assignment], data: st.DataObject
) -> None:
    """From a settled placement, losing one node: every replica on another node stays where it
    is, unless a higher-priority replica of the dead node displaced it (then it is listed in
    `displaced`); every change is a replica of the dead node or a displaced one."""
    before = settled(desired, region, current)
    dead = data.draw(st.sampled_from([n.node_id for n in region]))
    after = place(REGION, desired, [n for n in region if n.node_id != dead], before.assignments)
    displaced = {(d.deployment, d.slot) for d in after.displaced}
    for a in before.assignments:
        if a.node_id != dead and (a.deployment, a.slot) not in displaced:
            assert a in after.assignments, a
    lost = {(a.deployment, a.slot) for a in before.assignments if a.node_id == dead}
    was_unplaced = {(u.deployment, u.slot) for u in before.unplaced}
    for c in after.changes:
        key = (c.deployment, c.slot)
        assert key in lost or key in displaced or (c.kind is ChangeKind.ADDED and key in was_unplaced), c


@settings(max_examples=300, deadline=None)
@given(deployments(), nodes(), currents(), st.sampled_from(NODE_IDS[8:]), st.sampled_from([2 * GI, 8 * GI]))
def test_a_new_node_moves_nothing_without_rebalance(
    desired: list[Deployment],
    region: list[NodeResources],
    current: list[Assignment],
    new_id: str,
    memory: int,
) -> None:
    """From a settled placement, a node joins: every replica stays; the only changes are
    replicas that were unplaced now being added."""
    before = settled(desired, region, current)
    grown = [*region, node(new_id, memory, 4, labels={"zone": "b", "camera": "yes"})]
    after = place(REGION, desired, grown, before.assignments)
    assert set(before.assignments) <= set(after.assignments)
    was_unplaced = {(u.deployment, u.slot) for u in before.unplaced}
    assert all(c.kind is ChangeKind.ADDED and (c.deployment, c.slot) in was_unplaced for c in after.changes)
    assert after.displaced == ()


@settings(max_examples=200, deadline=None)
@given(deployments(), nodes(), st.data())
def test_duplicates_are_reduced_keeping_ready_replicas(
    desired: list[Deployment], region: list[NodeResources], data: st.DataObject
) -> None:
    """Two sides of a partition each placed every replica: the result holds each deployment's
    count at most, and keeps a ready replica wherever one could stay."""
    left = place(REGION, desired, region, [])
    right = place(REGION, desired, list(reversed(region)), [], options=PlacementOptions(provisional=True))
    ready = [Assignment(a.deployment, a.slot, a.node_id, ReplicaState.READY) for a in left.assignments]
    both = ready + data.draw(st.permutations(list(right.assignments)))
    p = place(REGION, desired, region, both)
    check_invariants(p, desired, region, both)
    # `left` fits on its own, so every ready replica can stay.
    assert set(ready) <= set(p.assignments)
