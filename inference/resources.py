"""What a node offers placement and what one replica takes from it (sans-IO).

`NodeResources` is the part of a node's inventory record placement reads, plus its
schedulable status (cordon and drain are operator records, not inventory).
`node_from_inventory` builds it from `inference.inventory.decode`'s dict.

Memory is the node's TOTAL memory, never its available memory: available memory
already counts the replicas the node runs (so subtracting their reservations again
would count them twice), and it moves with every inventory refresh (so placement
would change when nothing did). A node's budget is a fixed share of its total
(PlacementOptions), the rest left to the OS and the agent.

A replica reserves `reservation(deployment)`: the manifest's `resources` when set,
otherwise an estimate from the artifact size (docs/placement.md, "The estimate").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inference.manifest import Deployment, Requirements

# The estimate when a manifest states no `resources`: onnxruntime holds the weights
# once in the session and, while it optimises the graph at load time, a second copy;
# the runtime itself, its arenas and the request buffers add a few tens of MiB.
ESTIMATE_MEMORY_FACTOR = 2
ESTIMATE_MEMORY_OVERHEAD_BYTES = 64 << 20
# A quarter core: edge inference is bursty; four idle-most-of-the-time replicas share a core.
ESTIMATE_CPU_MILLICORES = 250
_PROVIDER_SUFFIX = "executionprovider"


class NodeStatus(StrEnum):
    """Whether a node takes new replicas (docs/placement.md, "Cordon and drain")."""

    SCHEDULABLE = "schedulable"
    CORDONED = "cordoned"  # gets nothing new, keeps what it has
    DRAINING = "draining"  # gets nothing new, its replicas move away
    # Never an operator's: the leader's view of a member suspect for `standby_after_s`. It gets
    # nothing new, and its replicas get standbys elsewhere, kept until they are ready (placing.py).
    UNRESPONSIVE = "unresponsive"


# The statuses whose replicas move away, each kept serving until its replacement is ready.
LEAVING = (NodeStatus.DRAINING, NodeStatus.UNRESPONSIVE)


@dataclass(frozen=True, slots=True)
class NodeResources:
    """One live node of the region, as placement sees it."""

    node_id: str
    memory_bytes: int  # total memory (see the module docstring for why not available)
    cpu_count: int
    accelerators: tuple[str, ...] = ()  # onnxruntime execution providers, e.g. CUDAExecutionProvider
    labels: tuple[tuple[str, str], ...] = ()  # sorted (name, value)
    status: NodeStatus = NodeStatus.SCHEDULABLE

    def label(self, name: str) -> str | None:
        """The value of the label `name`, or None if the node has no such label."""
        return next((value for key, value in self.labels if key == name), None)


def node_from_inventory(
    node_id: str, doc: Mapping[str, Any], status: NodeStatus = NodeStatus.SCHEDULABLE
) -> NodeResources:
    """The NodeResources of a node from its inventory record, as `inventory.decode` returns it
    (a dict whose schema is already checked)."""
    labels = doc.get("labels") or {}
    return NodeResources(
        node_id=node_id,
        memory_bytes=int(doc["memory_total_bytes"]),
        cpu_count=int(doc["cpu_count"]),
        accelerators=tuple(sorted(str(a) for a in doc.get("accelerators") or ())),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        status=status,
    )


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one replica reserves on its node."""

    memory_bytes: int
    cpu_millicores: int


def reservation(deployment: Deployment) -> Reservation:
    """The manifest's `resources`, each field absent filled in by the estimate
    (memory = 2 x artifact size + 64 MiB; cpu = 250 millicores)."""
    memory = deployment.resources.memory_bytes
    cpu = deployment.resources.cpu_millicores
    return Reservation(
        memory_bytes=memory
        if memory is not None
        else ESTIMATE_MEMORY_FACTOR * deployment.artifact_size_bytes + ESTIMATE_MEMORY_OVERHEAD_BYTES,
        cpu_millicores=cpu if cpu is not None else ESTIMATE_CPU_MILLICORES,
    )


def has_accelerator(node: NodeResources, name: str) -> bool:
    """True if the node offers the accelerator `name` (provides_accelerator)."""
    return provides_accelerator(node.accelerators, name)


def provides_accelerator(providers: Iterable[str], name: str) -> bool:
    """True if one of an inventory's execution providers is `name`: case-insensitive, with or
    without its `ExecutionProvider` suffix (`cuda` matches `CUDAExecutionProvider`). The one
    rule for placement and for the warnings of `murmur deploy` (inference/deploywarn.py)."""
    wanted = name.lower()
    for provider in providers:
        lower = provider.lower()
        if wanted in (lower, lower.removesuffix(_PROVIDER_SUFFIX)):
            return True
    return False


def has_labels(node: NodeResources, labels: tuple[tuple[str, str], ...]) -> bool:
    """True if the node carries every label with exactly that value."""
    own = dict(node.labels)
    return all(own.get(key) == value for key, value in labels)


def requirement_problem(node: NodeResources, requirements: Requirements) -> str | None:
    """What the node lacks that `requirements` asks for, or None if it meets them all."""
    if requirements.accelerator is not None and not has_accelerator(node, requirements.accelerator):
        return f"no accelerator {requirements.accelerator}"
    if not has_labels(node, requirements.labels):
        return f"no label {format_labels(requirements.labels)}"
    if node.memory_bytes < requirements.min_memory_bytes:
        return (
            f"{format_bytes(node.memory_bytes)} memory, needs {format_bytes(requirements.min_memory_bytes)}"
        )
    return None


def format_labels(labels: tuple[tuple[str, str], ...]) -> str:
    """`camera=yes, zone=a`."""
    return ", ".join(f"{key}={value}" for key, value in labels)


_BINARY_UNITS = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))


def format_bytes(size_bytes: int) -> str:
    """A size for a reader: `1.5Gi`, `300Mi`, `512` (one decimal at most, exact integer math)."""
    for unit, scale in _BINARY_UNITS:
        if size_bytes >= scale:
            tenths = size_bytes * 10 // scale
            whole, tenth = divmod(tenths, 10)
            return f"{whole}{unit}" if tenth == 0 else f"{whole}.{tenth}{unit}"
    return str(size_bytes)


def format_cpu(millicores: int) -> str:
    """`250m`: thousandths of a core, the manifest's unit."""
    return f"{millicores}m"
