"""Why a replica could not be placed, in words an operator can act on (sans-IO).

Asked once placement has failed, it walks the rules in the order a node is
filtered by them, and names the first one that leaves no node: nothing
schedulable, the accelerator, the labels, the minimum memory, spread (fewer
suitable nodes than replicas), then capacity (the largest free memory, or CPU).
docs/placement.md lists every text.
"""

from __future__ import annotations

from inference.ledger import Ledger
from inference.manifest import Deployment
from inference.resources import (
    NodeResources,
    NodeStatus,
    format_bytes,
    format_cpu,
    format_labels,
    has_accelerator,
    has_labels,
    reservation,
)


def why_unplaced(region: str, ledger: Ledger, deployment: Deployment) -> str:
    """The first rule that leaves no node for one more replica of `deployment`."""
    req = deployment.requirements
    nodes = ledger.schedulable()
    if not nodes:
        return _nothing_schedulable(region, list(ledger.nodes.values()))
    if req.accelerator is not None:
        nodes = [n for n in nodes if has_accelerator(n, req.accelerator)]
        if not nodes:
            return f"no node has accelerator {req.accelerator}"
    if req.labels:
        nodes = [n for n in nodes if has_labels(n, req.labels)]
        if not nodes:
            also = f" with accelerator {req.accelerator}" if req.accelerator is not None else ""
            return f"no node{also} has label {format_labels(req.labels)}"
    largest = min(nodes, key=lambda n: (-n.memory_bytes, n.node_id))
    if largest.memory_bytes < req.min_memory_bytes:
        return (
            f"needs a node with at least {format_bytes(req.min_memory_bytes)} memory, "
            f"the largest has {format_bytes(largest.memory_bytes)} ({largest.node_id})"
        )
    count = deployment.replicas.for_region(region)
    holders = {h.node_id for h in ledger.of_deployment(deployment.name)}
    free = [n for n in nodes if n.node_id not in holders]
    if not free:
        suitable = len({n.node_id for n in nodes} | holders)
        verb = "node meets" if suitable == 1 else "nodes meet"
        return f"only {suitable} {verb} the requirements for {count} replicas (spread)"
    need = reservation(deployment)
    roomy = [n for n in free if ledger.memory_free(n.node_id) >= need.memory_bytes]
    if not roomy:
        best = min(free, key=lambda n: (-ledger.memory_free(n.node_id), n.node_id))
        return (
            f"needs {format_bytes(need.memory_bytes)} memory, the largest free is "
            f"{format_bytes(max(ledger.memory_free(best.node_id), 0))} on {best.node_id}"
        )
    best = min(roomy, key=lambda n: (-ledger.cpu_free(n.node_id), n.node_id))
    return (
        f"needs {format_cpu(need.cpu_millicores)} cpu, the most free is "
        f"{format_cpu(max(ledger.cpu_free(best.node_id), 0))} on {best.node_id}"
    )


def _nothing_schedulable(region: str, nodes: list[NodeResources]) -> str:
    if not nodes:
        return f"no node in region {region}"
    cordoned = sum(1 for n in nodes if n.status is NodeStatus.CORDONED)
    draining = sum(1 for n in nodes if n.status is NodeStatus.DRAINING)
    unresponsive = sum(1 for n in nodes if n.status is NodeStatus.UNRESPONSIVE)
    also = f", {unresponsive} unresponsive" if unresponsive else ""
    return f"no schedulable node in region {region} ({cordoned} cordoned, {draining} draining{also})"
