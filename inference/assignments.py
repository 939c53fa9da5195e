"""The vocabulary of placement: a replica assigned to a node, and the state it is in.

Shared by the placement function (inference/placement.py), its record
(inference/placement_record.py) and whatever reconciles a node with its
assignments, so that all three speak of the same `(deployment, slot, node, state)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReplicaState(StrEnum):
    """Where a replica stands on its node (docs/placement.md, "Replica states")."""

    ASSIGNED = "assigned"  # placed; the node has not started loading it
    LOADING = "loading"  # fetching the artifact or loading the model
    READY = "ready"  # serving
    FAILED = "failed"  # the node could not load it
    PROVISIONAL = "provisional"  # taken over without a leader; a leader's placement supersedes it


# When more replicas exist than wanted (both sides of a healed partition placed), the
# first in this order are kept: serving ones before those still on their way.
KEEP_ORDER: dict[ReplicaState, int] = {
    ReplicaState.READY: 0,
    ReplicaState.LOADING: 1,
    ReplicaState.ASSIGNED: 2,
    ReplicaState.PROVISIONAL: 3,
    ReplicaState.FAILED: 4,
}


@dataclass(frozen=True, slots=True, order=True)
class Assignment:
    """Replica `slot` (0..count-1) of `deployment` runs on `node_id`."""

    deployment: str
    slot: int
    node_id: str
    state: ReplicaState = ReplicaState.ASSIGNED
