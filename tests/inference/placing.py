"""Builders and checks shared by the placement tests: deployments and nodes in one line each,
and the invariants every placement must hold."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from inference.assignments import Assignment, ReplicaState
from inference.manifest import Deployment, Replicas, Requirements, Resources
from inference.placement import DEFAULT_OPTIONS, Placement, PlacementOptions
from inference.resources import NodeResources, NodeStatus, requirement_problem, reservation

GI = 1 << 30
MI = 1 << 20
SHA = "ab" * 32
REGION = "r"


def dep(
    name: str,
    count: int = 1,
    *,
    priority: int = 0,
    memory: int = GI,
    cpu: int = 500,
    accelerator: str | None = None,
    labels: Sequence[tuple[str, str]] = (),
    min_memory: int = 0,
    spread: str | None = None,
) -> Deployment:
    """A deployment of `count` replicas per region, each reserving `memory` bytes and `cpu` millicores."""
    return Deployment(
        name=name,
        model_name="m",
        model_version="1",
        artifact_sha256=SHA,
        artifact_size_bytes=MI,
        replicas=Replicas(per_region=count),
        requirements=Requirements(
            min_memory_bytes=min_memory, accelerator=accelerator, labels=tuple(sorted(labels))
        ),
        priority=priority,
        resources=Resources(memory_bytes=memory, cpu_millicores=cpu),
        spread_label=spread,
    )


def node(
    node_id: str,
    memory: int = 4 * GI,
    cpus: int = 4,
    *,
    accelerators: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    status: NodeStatus = NodeStatus.SCHEDULABLE,
) -> NodeResources:
    """A node with `memory` bytes in total (80% of it is its budget) and `cpus` cores."""
    return NodeResources(
        node_id=node_id,
        memory_bytes=memory,
        cpu_count=cpus,
        accelerators=tuple(sorted(accelerators)),
        labels=tuple(sorted((labels or {}).items())),
        status=status,
    )


def at(deployment: str, slot: int, node_id: str, state: ReplicaState = ReplicaState.ASSIGNED) -> Assignment:
    return Assignment(deployment, slot, node_id, state)


def where(p: Placement) -> dict[tuple[str, int], str]:
    """(deployment, slot) -> node."""
    return {(a.deployment, a.slot): a.node_id for a in p.assignments}


def check_invariants(
    p: Placement,
    deployments: Iterable[Deployment],
    nodes: Iterable[NodeResources],
    current: Iterable[Assignment],
    options: PlacementOptions = DEFAULT_OPTIONS,
) -> None:
    """What every placement must hold, whatever its inputs."""
    by_name = {d.name: d for d in deployments}
    by_id = {n.node_id: n for n in nodes}
    before = {(a.deployment, a.node_id) for a in current}
    memory: dict[str, int] = dict.fromkeys(by_id, 0)
    cpu: dict[str, int] = dict.fromkeys(by_id, 0)
    assert list(p.assignments) == sorted(p.assignments)
    for a in p.assignments:
        d = by_name[a.deployment]
        n = by_id[a.node_id]  # on a live node
        assert requirement_problem(n, d.requirements) is None, a
        assert n.status is not NodeStatus.DRAINING, a
        if n.status is NodeStatus.CORDONED:  # nothing new on a cordoned node
            assert (a.deployment, a.node_id) in before, a
        memory[a.node_id] += reservation(d).memory_bytes
        cpu[a.node_id] += reservation(d).cpu_millicores
    for node_id, n in by_id.items():
        assert memory[node_id] <= n.memory_bytes * options.memory_budget_percent // 100, node_id
        assert cpu[node_id] <= n.cpu_count * 10 * options.cpu_budget_percent, node_id
    for name, d in by_name.items():
        count = d.replicas.for_region(REGION)
        mine = [a for a in p.assignments if a.deployment == name]
        assert len({a.node_id for a in mine}) == len(mine), f"two replicas of {name} on one node"
        placed = [a.slot for a in mine]
        missing = [u.slot for u in p.unplaced if u.deployment == name]
        assert sorted(placed + missing) == list(range(count)), (name, placed, missing)
    assert all(a.deployment in by_name for a in p.assignments)
