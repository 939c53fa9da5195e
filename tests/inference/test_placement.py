"""inference/placement.py by example: one test per rule, and every reason text an operator can see.
Properties over random inputs are in test_placement_properties.py."""

from __future__ import annotations

import pytest

from inference.assignments import ReplicaState
from inference.inventory import decode, encode
from inference.manifest import Deployment
from inference.placement import Change, ChangeKind, Displaced, PlacementOptions, Unplaced, place
from inference.resources import (
    NodeResources,
    NodeStatus,
    format_bytes,
    has_accelerator,
    node_from_inventory,
    reservation,
)
from tests.inference.placing import GI, MI, REGION, at, check_invariants, dep, node, where
from tests.inference.test_kinds import INVENTORY

READY = ReplicaState.READY
CORDONED = NodeStatus.CORDONED
DRAINING = NodeStatus.DRAINING


def test_new_replicas_go_to_the_most_free_node_then_the_emptiest_then_by_id() -> None:
    # n1 has twice the memory: after one replica it still has the largest free fraction;
    # after two, n1 and n2 tie on free fraction (0.6875) and n2 holds fewer replicas.
    nodes = [node("n3"), node("n2"), node("n1", 8 * GI)]
    p = place(REGION, [dep("c"), dep("b"), dep("a")], nodes, [])
    assert where(p) == {("a", 0): "n1", ("b", 0): "n2", ("c", 0): "n3"}
    assert p.changes == tuple(
        Change(name, 0, ChangeKind.ADDED, None, node_id, "new replica")
        for name, node_id in (("a", "n1"), ("b", "n2"), ("c", "n3"))
    )
    assert p.unplaced == () and p.displaced == ()


def test_nothing_changed_gives_the_same_placement() -> None:
    desired = [dep("a", 2), dep("b", 3, priority=5)]
    nodes = [node(f"n{i}") for i in range(4)]
    first = place(REGION, desired, nodes, [])
    again = place(REGION, desired, nodes, first.assignments)
    assert again.assignments == first.assignments
    assert again.changes == () and again.unplaced == ()


def test_requirements_accelerator_labels_and_minimum_memory() -> None:
    nodes = [
        node("n1", accelerators=["CPUExecutionProvider"], labels={"camera": "yes"}),
        node("n2", accelerators=["CUDAExecutionProvider", "CPUExecutionProvider"]),
        node("n3", accelerators=["CUDAExecutionProvider"], labels={"camera": "yes"}),
        node("n4", 16 * GI, labels={"camera": "no"}),
    ]
    desired = [
        dep("gpu", 2, accelerator="cuda"),
        dep("cam", 2, labels=[("camera", "yes")]),
        dep("big", 1, min_memory=8 * GI),
        dep("both", 1, accelerator="cuda", labels=[("camera", "yes")]),
    ]
    p = place(REGION, desired, nodes, [])
    got = where(p)
    assert {got[("gpu", 0)], got[("gpu", 1)]} == {"n2", "n3"}
    assert {got[("cam", 0)], got[("cam", 1)]} == {"n1", "n3"}
    assert got[("big", 0)] == "n4"
    assert got[("both", 0)] == "n3"
    check_invariants(p, desired, nodes, [])


def test_an_accelerator_matches_an_execution_provider_with_or_without_its_suffix() -> None:
    gpu = node("n1", accelerators=["CUDAExecutionProvider"])
    assert has_accelerator(gpu, "cuda") and has_accelerator(gpu, "CUDA")
    assert has_accelerator(gpu, "CUDAExecutionProvider")
    assert not has_accelerator(gpu, "cud") and not has_accelerator(gpu, "tensorrt")


def test_capacity_memory_budget_is_80_percent_of_total_and_cpu_is_the_cores() -> None:
    # 4Gi node: a 3.2Gi budget holds three 1Gi replicas, not four.
    p = place(REGION, [dep(x) for x in "abcd"], [node("n1")], [])
    assert [a.deployment for a in p.assignments] == ["a", "b", "c"]
    assert p.unplaced == (Unplaced("d", 0, "needs 1Gi memory, the largest free is 204.7Mi on n1"),)
    # 1 core: 1000 millicores.
    p = place(REGION, [dep("a", cpu=600), dep("b", cpu=600, memory=MI)], [node("n1", cpus=1)], [])
    assert p.unplaced == (Unplaced("b", 0, "needs 600m cpu, the most free is 400m on n1"),)
    # Another budget is an option (every node of a region must use the same).
    roomy = PlacementOptions(memory_budget_percent=100)
    assert len(place(REGION, [dep(x) for x in "abcd"], [node("n1")], [], options=roomy).assignments) == 4


def test_spread_never_two_replicas_of_one_deployment_on_one_node() -> None:
    p = place(REGION, [dep("a", 3, memory=MI)], [node("n1"), node("n2")], [])
    assert sorted(where(p).values()) == ["n1", "n2"]
    assert p.unplaced == (Unplaced("a", 2, "only 2 nodes meet the requirements for 3 replicas (spread)"),)
    p = place(REGION, [dep("a", 2)], [node("n1")], [])
    assert p.unplaced == (Unplaced("a", 1, "only 1 node meets the requirements for 2 replicas (spread)"),)


def test_spread_over_a_label_uses_every_value_before_doubling_one() -> None:
    nodes = [
        node("n1", labels={"zone": "a"}),
        node("n2", labels={"zone": "a"}),
        node("n3", labels={"zone": "b"}),
        node("n4"),  # no zone label: counts as the value ""
    ]
    spread = place(REGION, [dep("a", 3, spread="zone")], nodes, [])
    assert sorted(where(spread).values()) == ["n1", "n3", "n4"]
    plain = place(REGION, [dep("a", 3)], nodes, [])
    assert sorted(where(plain).values()) == ["n1", "n2", "n3"]
    four = place(REGION, [dep("a", 4, spread="zone")], nodes, [])
    assert sorted(where(four).values()) == ["n1", "n2", "n3", "n4"]


def test_higher_priority_displaces_lower_and_the_displaced_replica_moves_if_it_can() -> None:
    nodes = [node("n1", labels={"gpu": "yes"}), node("n2")]
    low = [dep("l", memory=2 * GI), dep("m")]
    current = [at("l", 0, "n1", READY), at("m", 0, "n1", READY)]
    high = dep("h", memory=2 * GI, priority=900, labels=[("gpu", "yes")])
    p = place(REGION, [*low, high], nodes, current)
    assert where(p) == {("h", 0): "n1", ("l", 0): "n2", ("m", 0): "n1"}
    assert p.displaced == (Displaced("l", 0, "n1", "h", 900),)
    assert Change("l", 0, ChangeKind.MOVED, "n1", "n2", "displaced by h (priority 900)") in p.changes
    check_invariants(p, [*low, high], nodes, current)


def test_a_displaced_replica_with_nowhere_to_go_is_unplaced_naming_the_displacer() -> None:
    current = [at(x, 0, "n1", READY) for x in ("l1", "l2", "l3")]
    desired = [dep("l1"), dep("l2"), dep("l3"), dep("h", priority=900)]
    p = place(REGION, desired, [node("n1")], current)
    assert where(p) == {("h", 0): "n1", ("l2", 0): "n1", ("l3", 0): "n1"}
    assert p.unplaced == (Unplaced("l1", 0, "displaced by h (priority 900)"),)
    assert Change("l1", 0, ChangeKind.REMOVED, "n1", None, "displaced by h (priority 900)") in p.changes


def test_equal_or_lower_priority_never_displaces() -> None:
    current = [at(x, 0, "n1", READY) for x in ("l1", "l2", "l3")]
    for priority in (0, 5):
        desired = [
            dep("l1", priority=5),
            dep("l2", priority=5),
            dep("l3", priority=5),
            dep("h", priority=priority),
        ]
        p = place(REGION, desired, [node("n1")], current)
        assert p.displaced == ()
        assert p.unplaced == (Unplaced("h", 0, "needs 1Gi memory, the largest free is 204.7Mi on n1"),)


def test_cordoned_node_keeps_what_it_has_and_gets_nothing_new() -> None:
    nodes = [node("n1", 16 * GI, status=CORDONED), node("n2")]
    p = place(REGION, [dep("a"), dep("b")], nodes, [at("a", 0, "n1", READY)])
    assert where(p) == {("a", 0): "n1", ("b", 0): "n2"}
    assert p.changes == (Change("b", 0, ChangeKind.ADDED, None, "n2", "new replica"),)


def test_draining_node_gets_nothing_new_and_its_replicas_move_away() -> None:
    nodes = [node("n1", 16 * GI, status=DRAINING), node("n2")]
    p = place(REGION, [dep("a"), dep("b")], nodes, [at("a", 0, "n1", READY)])
    assert where(p) == {("a", 0): "n2", ("b", 0): "n2"}
    assert Change("a", 0, ChangeKind.MOVED, "n1", "n2", "node n1 is draining") in p.changes


def test_a_node_that_disappears_moves_only_its_own_replicas() -> None:
    desired = [dep("a", 2), dep("b", 2), dep("c", 1)]
    nodes = [node(f"n{i}") for i in range(1, 5)]
    first = place(REGION, desired, nodes, [])
    lost = first.assignments[0].node_id
    p = place(REGION, desired, [n for n in nodes if n.node_id != lost], first.assignments)
    moved = {(c.deployment, c.slot) for c in p.changes}
    assert moved == {(a.deployment, a.slot) for a in first.assignments if a.node_id == lost}
    assert all(c.kind is ChangeKind.MOVED and c.reason == f"node {lost} is gone" for c in p.changes)
    for a in first.assignments:
        if a.node_id != lost:
            assert a in p.assignments


def test_a_node_that_joins_moves_nothing_unless_something_was_under_placed() -> None:
    desired = [dep("a", 3)]
    first = place(REGION, desired, [node("n1"), node("n2")], [])
    assert len(first.unplaced) == 1
    p = place(REGION, desired, [node("n1"), node("n2"), node("n3")], first.assignments)
    assert p.changes == (Change("a", 2, ChangeKind.ADDED, None, "n3", "new replica"),)
    full = place(REGION, desired, [node("n1"), node("n2"), node("n3"), node("n4")], p.assignments)
    assert full.assignments == p.assignments and full.changes == ()


def test_rebalance_moves_onto_new_capacity_as_few_as_it_takes() -> None:
    desired = [dep(x) for x in "abcd"]
    first = place(REGION, desired, [node("n1"), node("n2")], [])
    assert where(first) == {("a", 0): "n1", ("b", 0): "n2", ("c", 0): "n1", ("d", 0): "n2"}
    nodes = [node("n1"), node("n2"), node("n3")]
    assert place(REGION, desired, nodes, first.assignments).changes == ()
    p = place(REGION, desired, nodes, first.assignments, options=PlacementOptions(rebalance=True))
    assert p.changes == (
        Change("a", 0, ChangeKind.MOVED, "n1", "n3", "rebalance: n1 used 62% of its memory budget"),
    )
    again = place(REGION, desired, nodes, p.assignments, options=PlacementOptions(rebalance=True))
    assert again.changes == () and again.assignments == p.assignments


def test_room_a_rebalance_frees_goes_to_a_replica_that_had_none() -> None:
    # Only n2 has a camera. `d` fills n0, n1, n2 first (higher priority), so `b` does not fit on
    # n2; the rebalance moves d's replica from n2 to n3, and then `b` fits. Without that second
    # try, placing again would add `b`: the result would not be a fixed point.
    nodes = [
        node("n0", cpus=1),
        node("n1", cpus=1),
        node("n2", cpus=1, labels={"camera": "yes"}),
        node("n3", cpus=1),
    ]
    desired = [
        dep("a", memory=256 * MI, cpu=250, labels=[("camera", "yes")]),
        dep("b", memory=2 * GI, cpu=250, labels=[("camera", "yes")]),
        dep("d", 3, priority=10, cpu=250),
    ]
    assert place(REGION, desired, nodes, []).unplaced != ()
    p = place(REGION, desired, nodes, [], options=PlacementOptions(rebalance=True))
    assert p.unplaced == ()
    assert where(p) == {("a", 0): "n2", ("b", 0): "n2", ("d", 0): "n0", ("d", 1): "n1", ("d", 2): "n3"}
    again = place(REGION, desired, nodes, p.assignments, options=PlacementOptions(rebalance=True))
    assert again.assignments == p.assignments and again.changes == ()


def test_rebalance_reports_a_new_replica_once_where_it_ended_up() -> None:
    current = [at("a", 0, "n1"), at("b", 0, "n1")]
    nodes = [node("n1"), node("n2", 2 * GI)]
    p = place(
        REGION, [dep("a"), dep("b"), dep("c")], nodes, current, options=PlacementOptions(rebalance=True)
    )
    assert [c for c in p.changes if c.deployment == "c"] == [
        Change("c", 0, ChangeKind.ADDED, None, where(p)[("c", 0)], "new replica")
    ]


def test_rebalance_keeps_a_cordoned_node_as_it_is() -> None:
    current = [at("a", 0, "n1"), at("b", 0, "n1")]
    nodes = [node("n1", status=CORDONED), node("n2")]
    p = place(REGION, [dep("a"), dep("b")], nodes, current, options=PlacementOptions(rebalance=True))
    assert p.changes == ()


def test_duplicates_after_a_partition_keep_ready_ones_first_then_the_lowest_slot() -> None:
    current = [at("a", 0, "n1"), at("a", 0, "n2", READY)]
    p = place(REGION, [dep("a", 1)], [node("n1"), node("n2")], current)
    assert where(p) == {("a", 0): "n2"}
    assert p.changes == (Change("a", 0, ChangeKind.REMOVED, "n1", None, "over the desired count of 1"),)
    current = [at("a", 0, "n1", READY), at("a", 0, "n2", READY), at("a", 1, "n3"), at("a", 1, "n4")]
    nodes = [node(f"n{i}") for i in range(1, 5)]
    p = place(REGION, [dep("a", 2)], nodes, current)
    assert where(p) == {("a", 0): "n1", ("a", 1): "n2"}  # n2 keeps its node, takes the free slot
    assert {(c.from_node, c.reason) for c in p.changes} == {
        ("n3", "over the desired count of 2"),
        ("n4", "over the desired count of 2"),
    }


def test_a_second_replica_on_one_node_is_removed() -> None:
    current = [at("a", 0, "n1", READY), at("a", 1, "n1")]
    p = place(REGION, [dep("a", 2)], [node("n1"), node("n2")], current)
    assert where(p) == {("a", 0): "n1", ("a", 1): "n2"}
    assert Change("a", 1, ChangeKind.REMOVED, "n1", None, "a second replica on node n1 (spread)") in p.changes


def test_deleted_and_unwanted_deployments_are_removed() -> None:
    current = [at("gone", 0, "n1"), at("elsewhere", 0, "n1")]
    elsewhere = dep("elsewhere")
    elsewhere = Deployment(
        **{**_fields(elsewhere), "replicas": type(elsewhere.replicas)(by_region=(("x", 1),))}
    )
    p = place(REGION, [elsewhere], [node("n1")], current)
    assert p.assignments == ()
    assert set(p.changes) == {
        Change("gone", 0, ChangeKind.REMOVED, "n1", None, "deployment gone is no longer desired"),
        Change("elsewhere", 0, ChangeKind.REMOVED, "n1", None, "no replicas wanted in r"),
    }


def _fields(d: Deployment) -> dict[str, object]:
    return {name: getattr(d, name) for name in d.__slots__}  # type: ignore[attr-defined]


def test_a_node_that_no_longer_meets_the_requirements_loses_its_replica() -> None:
    nodes = [node("n1"), node("n2", labels={"camera": "yes"})]
    p = place(REGION, [dep("a", labels=[("camera", "yes")])], nodes, [at("a", 0, "n1", READY)])
    assert p.changes == (
        Change(
            "a",
            0,
            ChangeKind.MOVED,
            "n1",
            "n2",
            "node n1 no longer meets the requirements: no label camera=yes",
        ),
    )


def test_a_node_over_its_budget_sheds_its_lowest_priority_replicas() -> None:
    current = [at("a", 0, "n1"), at("b", 0, "n1"), at("c", 0, "n1")]
    desired = [dep("a", priority=5), dep("b"), dep("c")]
    p = place(REGION, desired, [node("n1", 2 * GI), node("n2", 16 * GI)], current)
    assert where(p) == {("a", 0): "n1", ("b", 0): "n2", ("c", 0): "n2"}
    assert {c.reason for c in p.changes} == {"node n1 is over capacity"}


def test_leaderless_takeover_marks_new_replicas_provisional_and_a_leader_adopts_them() -> None:
    desired = [dep("a", 2)]
    current = [at("a", 0, "n1", READY), at("a", 1, "n9", READY)]  # n9 is confirmed dead
    nodes = [node("n1"), node("n2")]
    taken = place(REGION, desired, nodes, current, options=PlacementOptions(provisional=True))
    assert set(taken.assignments) == {at("a", 0, "n1", READY), at("a", 1, "n2", ReplicaState.PROVISIONAL)}
    led = place(REGION, desired, nodes, taken.assignments)
    assert set(led.assignments) == {at("a", 0, "n1", READY), at("a", 1, "n2", ReplicaState.ASSIGNED)}
    assert led.changes == ()


def test_new_replicas_are_placed_highest_priority_first() -> None:
    p = place(REGION, [dep("a"), dep("b", priority=10)], [node("n1", 2 * GI)], [])
    assert where(p) == {("b", 0): "n1"}
    assert p.unplaced[0].deployment == "a"


@pytest.mark.parametrize(
    ("desired", "nodes", "reason"),
    [
        (dep("a"), [], "no node in region r"),
        (
            dep("a"),
            [node("n1", status=CORDONED), node("n2", status=DRAINING)],
            "no schedulable node in region r (1 cordoned, 1 draining)",
        ),
        (
            dep("a", accelerator="cuda"),
            [node("n1", accelerators=["CPUExecutionProvider"])],
            "no node has accelerator cuda",
        ),
        (
            dep("a", labels=[("camera", "yes")]),
            [node("n1", labels={"camera": "no"})],
            "no node has label camera=yes",
        ),
        (
            dep("a", accelerator="cuda", labels=[("camera", "yes")]),
            [node("n1", accelerators=["CUDAExecutionProvider"]), node("n2", labels={"camera": "yes"})],
            "no node with accelerator cuda has label camera=yes",
        ),
        (
            dep("a", min_memory=8 * GI),
            [node("n2", 2 * GI), node("n1"), node("n3")],
            "needs a node with at least 8Gi memory, the largest has 4Gi (n1)",
        ),
        (
            dep("a", 3, memory=MI),
            [node("n1"), node("n2")],
            "only 2 nodes meet the requirements for 3 replicas (spread)",
        ),
        (
            dep("a", memory=3 * GI),
            [node("n1", 2 * GI), node("n2", 3 * GI)],
            "needs 3Gi memory, the largest free is 2.3Gi on n2",
        ),
        (dep("a", cpu=1500), [node("n1", cpus=1)], "needs 1500m cpu, the most free is 1000m on n1"),
    ],
)
def test_every_reason_a_replica_is_unplaced(
    desired: Deployment, nodes: list[NodeResources], reason: str
) -> None:
    p = place(REGION, [desired], nodes, [])
    assert p.unplaced[-1].reason == reason


def test_resources_from_an_inventory_record() -> None:
    doc = decode(encode(INVENTORY))
    assert doc is not None
    n = node_from_inventory("abc", doc, CORDONED)
    assert n == NodeResources(
        node_id="abc",
        memory_bytes=8 << 30,  # total, not available
        cpu_count=4,
        accelerators=("CPUExecutionProvider",),
        labels=(("camera", "yes"), ("site", "a")),
        status=CORDONED,
    )
    assert node_from_inventory("abc", doc).status is NodeStatus.SCHEDULABLE


def test_the_resource_estimate_from_the_artifact_size() -> None:
    d = dep("a")
    estimated = Deployment(**{**_fields(d), "resources": type(d.resources)()})
    assert reservation(estimated).memory_bytes == 2 * MI + 64 * MI
    assert reservation(estimated).cpu_millicores == 250
    assert reservation(d).memory_bytes == GI


def test_sizes_read_plainly() -> None:
    assert [format_bytes(n) for n in (512, 2048, 300 * MI, 3 * GI // 2, 2 * GI, 5 << 40)] == [
        "512",
        "2Ki",
        "300Mi",
        "1.5Gi",
        "2Gi",
        "5Ti",
    ]


def test_two_deployments_or_nodes_with_one_name_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="deployment 'a' is given twice"):
        place(REGION, [dep("a"), dep("a")], [node("n1")], [])
    with pytest.raises(ValueError, match="two nodes share an id"):
        place(REGION, [dep("a")], [node("n1"), node("n1")], [])


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="memory_budget_percent"):
        PlacementOptions(memory_budget_percent=0)
