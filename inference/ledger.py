"""What every node of a region holds during one placement run, and what it has left.

A scratch pad for inference/placement.py and inference/rebalance.py: built from
the nodes, it tracks the replicas on each node, the memory and CPU they reserve
against the node's budget, and which nodes hold which deployment. Every read is
ordered by name so a run never depends on the order its inputs came in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from inference.assignments import ReplicaState
from inference.manifest import Deployment
from inference.resources import NodeResources, NodeStatus, Reservation, requirement_problem

FRACTION_SCALE = 10**9  # fractions of a budget are compared as integers in parts per billion


@dataclass(frozen=True, slots=True)
class Held:
    """One replica on one node, with what the placement needs to know about it."""

    deployment: str
    slot: int
    node_id: str
    state: ReplicaState
    priority: int
    reservation: Reservation


class Ledger:
    """The replicas of one run, by node and by deployment, with each node's usage."""

    def __init__(self, nodes: Iterable[NodeResources], memory_budget_percent: int, cpu_budget_percent: int):
        self.nodes: dict[str, NodeResources] = {n.node_id: n for n in sorted(nodes, key=lambda n: n.node_id)}
        self._memory_budget = {
            i: n.memory_bytes * memory_budget_percent // 100 for i, n in self.nodes.items()
        }
        self._cpu_budget = {i: n.cpu_count * 10 * cpu_budget_percent for i, n in self.nodes.items()}
        self._memory_used = dict.fromkeys(self.nodes, 0)
        self._cpu_used = dict.fromkeys(self.nodes, 0)
        self._on_node: dict[str, dict[tuple[str, int], Held]] = {i: {} for i in self.nodes}
        self._slots: dict[str, dict[int, Held]] = {}
        self._hosting: dict[str, dict[str, int]] = {}  # deployment -> node -> replicas there
        self._eligible: dict[str, list[NodeResources]] = {}

    def schedulable(self) -> list[NodeResources]:
        """The nodes that take new replicas, by id."""
        return [n for n in self.nodes.values() if n.status is NodeStatus.SCHEDULABLE]

    def eligible(self, deployment: Deployment) -> list[NodeResources]:
        """The schedulable nodes that meet the deployment's requirements, by id (nodes and
        requirements do not change during a run, so this is worked out once)."""
        found = self._eligible.get(deployment.name)
        if found is None:
            found = [n for n in self.schedulable() if requirement_problem(n, deployment.requirements) is None]
            self._eligible[deployment.name] = found
        return found

    def add(self, held: Held) -> None:
        self._on_node[held.node_id][(held.deployment, held.slot)] = held
        self._slots.setdefault(held.deployment, {})[held.slot] = held
        hosting = self._hosting.setdefault(held.deployment, {})
        hosting[held.node_id] = hosting.get(held.node_id, 0) + 1
        self._memory_used[held.node_id] += held.reservation.memory_bytes
        self._cpu_used[held.node_id] += held.reservation.cpu_millicores

    def remove(self, held: Held) -> None:
        del self._on_node[held.node_id][(held.deployment, held.slot)]
        del self._slots[held.deployment][held.slot]
        hosting = self._hosting[held.deployment]
        hosting[held.node_id] -= 1
        if not hosting[held.node_id]:
            del hosting[held.node_id]
        self._memory_used[held.node_id] -= held.reservation.memory_bytes
        self._cpu_used[held.node_id] -= held.reservation.cpu_millicores

    def on_node(self, node_id: str) -> list[Held]:
        """The replicas on the node, by (deployment, slot)."""
        return sorted(self._on_node[node_id].values(), key=lambda h: (h.deployment, h.slot))

    def of_deployment(self, deployment: str) -> list[Held]:
        """The replicas of the deployment, by slot."""
        return [held for _, held in sorted(self._slots.get(deployment, {}).items())]

    def slot(self, deployment: str, slot: int) -> Held | None:
        return self._slots.get(deployment, {}).get(slot)

    def hosts(self, node_id: str, deployment: str) -> bool:
        """True if the node holds a replica of the deployment."""
        return node_id in self._hosting.get(deployment, {})

    def everything(self) -> list[Held]:
        """Every replica, by (deployment, slot)."""
        return [held for name in sorted(self._slots) for held in self.of_deployment(name)]

    def count(self, node_id: str) -> int:
        return len(self._on_node[node_id])

    def memory_budget(self, node_id: str) -> int:
        return self._memory_budget[node_id]

    def memory_used(self, node_id: str) -> int:
        return self._memory_used[node_id]

    def memory_free(self, node_id: str) -> int:
        return self._memory_budget[node_id] - self._memory_used[node_id]

    def cpu_free(self, node_id: str) -> int:
        return self._cpu_budget[node_id] - self._cpu_used[node_id]

    def fits(self, node_id: str, reservation: Reservation) -> bool:
        """True if the reservation fits in what the node has left of both budgets."""
        return reservation.memory_bytes <= self.memory_free(
            node_id
        ) and reservation.cpu_millicores <= self.cpu_free(node_id)

    def over_budget(self, node_id: str) -> bool:
        return self.memory_free(node_id) < 0 or self.cpu_free(node_id) < 0

    def used_fraction(self, node_id: str, extra_bytes: int = 0) -> int:
        """The share of the node's memory budget in use (plus `extra_bytes`), in parts per billion;
        a node with no budget counts as full."""
        budget = self._memory_budget[node_id]
        if budget <= 0:
            return FRACTION_SCALE
        return (self._memory_used[node_id] + extra_bytes) * FRACTION_SCALE // budget
