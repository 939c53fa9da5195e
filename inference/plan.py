"""A dry run of one manifest in one region (`murmur plan`): where its replicas would go, what
would move, what could not be placed and why (pure).

`plan_region` runs the very function a region's leader runs (`place`, inference/placement.py)
on the region's live inputs twice: once as they are, once with the new manifest in place of
the deployment of its name. What the new manifest changes is what the second run does that
the first does not: a replica of another deployment it would displace, or leave unplaced,
shows up as well. Nothing is published; the caller shows the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from inference.assignments import Assignment
from inference.manifest import Deployment
from inference.placement import Change, Displaced, Unplaced, place
from inference.resources import NodeResources


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """What applying a manifest would do in one region; every tuple is sorted."""

    region: str
    wanted: int  # the replicas the manifest asks of this region
    replicas: tuple[Assignment, ...]  # where each of its replicas would run (state: as now, or assigned)
    changes: tuple[Change, ...]  # differences from the applied placement it would cause
    unplaced: tuple[Unplaced, ...]  # its replicas, or others it pushes out, that no node could take
    displaced: tuple[Displaced, ...]  # lower-priority replicas it would evict

    @property
    def fits(self) -> bool:
        """Whether every replica wanted here, and every one it displaces, would have a node."""
        return not self.unplaced


def plan_region(
    region: str,
    deployment: Deployment,
    desired: Iterable[Deployment],
    nodes: Iterable[NodeResources],
    current: Iterable[Assignment],
) -> RegionPlan:
    """The plan of `deployment` in `region`, given the deployments in force there, its live nodes
    and its current placement (the same inputs the leader's `place` takes)."""
    in_force = list(desired)
    node_list = list(nodes)
    now = list(current)
    before = place(region, in_force, node_list, now)
    trial = [d for d in in_force if d.name != deployment.name] + [deployment]
    after = place(region, trial, node_list, now)
    changes_before, unplaced_before = set(before.changes), set(before.unplaced)
    displaced_before = set(before.displaced)
    return RegionPlan(
        region=region,
        wanted=deployment.replicas.for_region(region),
        replicas=tuple(a for a in after.assignments if a.deployment == deployment.name),
        changes=tuple(c for c in after.changes if c not in changes_before),
        unplaced=tuple(
            u for u in after.unplaced if u.deployment == deployment.name or u not in unplaced_before
        ),
        displaced=tuple(d for d in after.displaced if d not in displaced_before),
    )
