"""Rebalancing: move replicas onto spare capacity, as few as it takes (sans-IO).

Placement never moves a replica that may stay, so capacity that joins later stays
idle until an operator asks (`murmur rebalance REGION`, PlacementOptions.rebalance).
Then, one move at a time: take the busiest node (the largest share of its memory
budget in use) that has a replica which some other schedulable node can take,
and move that replica to the node that would be least loaded after taking it,
but only if that node ends up strictly less loaded than the source was. Every
move lowers the busiest of the two nodes it touches, so the sorted list of node
loads falls at each step and the pass ends; it stops at the first point where no
single move helps, so running it again moves nothing. A cordoned node keeps what
it has; a move never breaks a requirement, the one-per-node rule, a budget, or
makes a deployment's spread over its label less even.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from inference.assignments import ReplicaState
from inference.ledger import FRACTION_SCALE, Held, Ledger
from inference.manifest import Deployment
from inference.resources import NodeResources, NodeStatus

MOVES_MAX = 10_000  # a safety stop; the pass ends on its own well before it


@dataclass(frozen=True, slots=True)
class Move:
    """Replica `slot` of `deployment` left `from_node` for `to_node`."""

    deployment: str
    slot: int
    from_node: str
    to_node: str
    reason: str


def rebalance(
    ledger: Ledger, deployments: Mapping[str, Deployment], new_state: ReplicaState = ReplicaState.ASSIGNED
) -> list[Move]:
    """Move replicas in `ledger` while a move lowers the busiest node it touches; the moves made."""
    moves: list[Move] = []
    while len(moves) < MOVES_MAX:
        found = _one_move(ledger, deployments)
        if found is None:
            break
        held, target, reason = found
        ledger.remove(held)
        ledger.add(replace(held, node_id=target, state=new_state))
        moves.append(Move(held.deployment, held.slot, held.node_id, target, reason))
    return moves


def _one_move(ledger: Ledger, deployments: Mapping[str, Deployment]) -> tuple[Held, str, str] | None:
    sources = [n.node_id for n in ledger.nodes.values() if n.status is not NodeStatus.CORDONED]
    for source in sorted(sources, key=lambda s: (-ledger.used_fraction(s), s)):
        load = ledger.used_fraction(source)
        for held in sorted(ledger.on_node(source), key=lambda h: (h.priority, h.deployment, h.slot)):
            memory = held.reservation.memory_bytes
            if memory <= 0:
                continue
            deployment = deployments[held.deployment]
            may_take = _spread_check(ledger, held, deployment.spread_label)
            targets = [
                t
                for t in ledger.eligible(deployment)
                if not ledger.hosts(t.node_id, held.deployment)  # the source hosts it: never a target
                and ledger.fits(t.node_id, held.reservation)
                and may_take(t)
            ]
            if not targets:
                continue
            best = min(
                targets,
                key=lambda t: (ledger.used_fraction(t.node_id, memory), ledger.count(t.node_id), t.node_id),
            )
            if ledger.used_fraction(best.node_id, memory) < load:
                percent = load * 100 // FRACTION_SCALE
                return held, best.node_id, f"rebalance: {source} used {percent}% of its memory budget"
    return None


def _spread_check(ledger: Ledger, held: Held, label: str | None) -> Callable[[NodeResources], bool]:
    """Whether moving the replica to a node keeps its deployment's spread over `label` at least
    as even: a node with the same value, or one whose value holds fewer of its replicas."""
    if label is None:
        return lambda node: True
    counts: dict[str, int] = {}
    for h in ledger.of_deployment(held.deployment):
        value = ledger.nodes[h.node_id].label(label) or ""
        counts[value] = counts.get(value, 0) + 1
    here = ledger.nodes[held.node_id].label(label) or ""
    return lambda node: (there := node.label(label) or "") == here or counts.get(there, 0) < counts[here]
