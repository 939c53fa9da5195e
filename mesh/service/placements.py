"""The agent's side of placement: what GET /v1/placements shows of this node's region, what the
agent logs of the placement core's events, and what the replica runtime (the model host,
mesh/service/modelhost.py) reads of the artifact store.

The placement core (inference/placing.py) is read here, never changed; the API's handler
(mesh/service/placementapi.py) forwards a read about another region to one of its nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.placing import PlacementCore
from inference.placing_ports import (
    HeldArtifacts,
    PlacementApplied,
    ReplicaDropped,
    ReplicaStateChanged,
)
from inference.plan import RegionPlan
from mesh.service.artifacts import ArtifactError, ArtifactStore
from mesh.service.modelhost import ModelHost

log = logging.getLogger("murmur.placement")


def artifact_files(store: ArtifactStore) -> Callable[[str], Path | None]:
    """sha256 -> the held artifact's file, or None (an id that is not a sha256 is never held):
    what the model host loads from."""

    def path(sha256: str) -> Path | None:
        try:
            return store.path(sha256) if store.size(sha256) is not None else None
        except ArtifactError:
            return None

    return path


def held_artifacts(store: ArtifactStore) -> HeldArtifacts:
    """A replica runtime with no model runtime (tests of placement alone): a replica whose
    artifact is held here is ready (an id that is not a sha256 is never held)."""

    def held(sha256: str) -> bool:
        try:
            return store.size(sha256) is not None
        except ArtifactError:
            return False

    return HeldArtifacts(held)


def own_placement_json(
    core: PlacementCore,
    rebalance_generation: int,
    models: ModelHost | None = None,
    api_of: Callable[[str], str | None] = lambda _node: None,
) -> dict[str, Any]:
    """This node's region's applied placement as GET /v1/placements shows it (docs/api.md);
    `rebalance_generation`: the region's held `rebalance` record's (0: none); `models`: this
    node's model host (the error of a failed replica of this node, and its `models`);
    `api_of`: a node's API address as this node knows it (each replica's `api`)."""
    applied = core.applied()
    stamp: dict[str, Any] | None = None
    if applied is not None:
        era = applied.stamp.era
        stamp = {
            "era": {"generation": era.generation, "founder": era.founder},
            "term": applied.stamp.term,
            "epoch": applied.stamp.epoch,
            "leader": applied.leader,
        }
    replicas: list[dict[str, Any]] = []
    for v in core.replicas():
        row = {
            "deployment": v.deployment,
            "slot": v.slot,
            "node": v.node_id,
            "state": str(v.state),
            "provisional": v.provisional,
            "api": api_of(v.node_id) or "",
        }
        # This node's own failed replicas: the whole error; another node's: its record's start of it.
        own_error = models.error(v.deployment) if models is not None and v.node_id == core.node_id else None
        error = own_error or v.error
        if error is not None:
            row["error"] = error
        replicas.append(row)
    doc = {
        "region": core.region,
        "node": core.node_id,
        "stamp": stamp,
        "rebalance_generation": rebalance_generation,
        "replicas": replicas,
        "deployments": [
            {"deployment": c.deployment, "ready": c.ready, "desired": c.desired}
            for c in sorted(core.deployment_counts())
        ],
        "unplaced": [
            {"deployment": u.deployment, "slot": u.slot, "reason": u.reason} for u in core.unplaced()
        ],
    }
    if models is not None:
        doc["models"] = models.status()  # this node's sessions (an answer forwarded from another
        # region's node carries that node's)
    return doc


def region_plan_json(plan: RegionPlan, node_id: str) -> dict[str, Any]:
    """One region's dry run of a manifest as POST /v1/plan shows it (docs/api.md); `node_id`:
    the node that computed it."""
    return {
        "region": plan.region,
        "node": node_id,
        "wanted": plan.wanted,
        "fits": plan.fits,
        "replicas": [{"slot": a.slot, "node": a.node_id, "state": str(a.state)} for a in plan.replicas],
        "changes": [
            {
                "deployment": c.deployment,
                "slot": c.slot,
                "kind": str(c.kind),
                "from": c.from_node,
                "to": c.to_node,
                "reason": c.reason,
            }
            for c in plan.changes
        ],
        "unplaced": [{"deployment": u.deployment, "slot": u.slot, "reason": u.reason} for u in plan.unplaced],
        "displaced": [
            {"deployment": d.deployment, "slot": d.slot, "node": d.node_id, "by": d.by_deployment}
            for d in plan.displaced
        ],
    }


class MoveTally:
    """Replica changes of the placements this node applied, by kind (murmur_placement_moves)."""

    def __init__(self) -> None:
        self.moves: dict[str, int] = {"added": 0, "moved": 0, "removed": 0}

    def on_event(self, event: object) -> None:
        if isinstance(event, PlacementApplied):
            for change in event.changes:
                self.moves[str(change.kind)] = self.moves.get(str(change.kind), 0) + 1


def log_placement_event(event: object) -> None:
    """Log one of the placement core's events at info (each is emitted once per change)."""
    match event:
        case PlacementApplied(region=region, era=era, term=term, epoch=epoch, leader=leader, changes=changes):
            moves = ", ".join(
                f"{c.deployment}/{c.slot} {c.kind} {c.from_node or '-'} -> {c.to_node or '-'}"
                for c in changes[:8]
            )
            more = f" (+{len(changes) - 8} more)" if len(changes) > 8 else ""
            log.info(
                "region %s: placement term %d epoch %d (era %s) by %s applied: %s%s",
                region,
                term,
                epoch,
                era,
                leader,
                moves or "no replica moved",
                more,
            )
        case ReplicaStateChanged(deployment=deployment, slot=slot, state=state):
            log.info("replica %s/%d on this node is %s", deployment, slot, state)
        case ReplicaDropped(deployment=deployment, slot=slot):
            log.info("replica %s/%d left this node (a newer placement moved it)", deployment, slot)


def unload_dropped(models: ModelHost) -> Callable[[object], None]:
    """A runtime subscriber: a replica that left this node (ReplicaDropped) is unloaded."""

    def on_event(event: object) -> None:
        if isinstance(event, ReplicaDropped):
            models.drop(event.deployment)

    return on_event
