"""The inputs of `place` in the mesh, read from the records a node holds (pure).

Every node of a region computes these from the same records, so a leaderless
region's nodes agree on a takeover without a word (docs/placement.md,
"Placement in the mesh"):

- the deployments: the `desired` records (fleet scope, operator-signed);
- the nodes: the members of the region pool that are alive or suspect (a
  suspect member keeps its replicas: a stall must not move them), with an
  inventory record, and the status its `scheduling` record gives;
- the current placement: for a leader, the applied placement with the state
  each node reports, plus the replicas nodes report that the placement lacks
  (the other side's after a partition heals, provisional takeovers), unless the
  leader itself moved them away and the report predates that move.

`keep_draining` adds the new-before-old rule of a drain to what `place` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from gossip.events import MemberState
from gossip.kinds import REGION_SCOPE_PREFIX
from gossip.records import Record
from inference import inventory
from inference.assignments import Assignment, ReplicaState
from inference.manifest import Deployment, ManifestError, decode_payload
from inference.replica_states import ReplicaReport, ReplicaStatesError
from inference.replica_states import decode as decode_report
from inference.resources import LEAVING, NodeResources, NodeStatus, node_from_inventory
from inference.stamps import Stamp, newer

PRESENT = (MemberState.ALIVE, MemberState.SUSPECT)


@dataclass(frozen=True, slots=True)
class Inputs:
    """What `place` needs, read once."""

    deployments: dict[str, Deployment]
    nodes: list[NodeResources]
    statuses: dict[str, NodeStatus]
    reports: dict[str, ReplicaReport]  # live member -> its replicas record


@dataclass(slots=True)
class DecodeCache:
    """A node's decoded payloads of the records it reads at every wake-up, by payload."""

    desired: dict[bytes, Deployment] = field(default_factory=dict)
    inventories: dict[tuple[str, bytes], NodeResources | None] = field(default_factory=dict)
    reports: dict[bytes, ReplicaReport | None] = field(default_factory=dict)
    all_reports: dict[bytes, ReplicaReport | None] = field(default_factory=dict)


def present_members(members: Iterable[tuple[str, MemberState]]) -> list[str]:
    """Members alive or suspect, by id: the nodes that keep their replicas."""
    return sorted(node_id for node_id, state in members if state in PRESENT)


def deployments_of(records: Iterable[Record], cache: dict[bytes, Deployment]) -> dict[str, Deployment]:
    """name -> deployment of the held `desired` records (undecodable ones left out). `cache` maps
    payloads decoded before to their deployment; it is trimmed to the payloads held."""
    out: dict[str, Deployment] = {}
    seen: dict[bytes, Deployment] = {}
    for record in records:
        deployment = cache.get(record.payload)
        if deployment is None:
            try:
                deployment = decode_payload(record.payload)
            except ManifestError:
                continue
        seen[record.payload] = deployment
        out.setdefault(deployment.name, deployment)
    cache.clear()
    cache.update(seen)
    return dict(sorted(out.items()))


def nodes_of(
    region: str,
    present: Iterable[str],
    inventories: Iterable[Record],
    statuses: Mapping[str, NodeStatus],
    cache: dict[tuple[str, bytes], NodeResources | None] | None = None,
) -> list[NodeResources]:
    """The present members of `region` that published a valid inventory, with their status.

    `cache` maps (node, payload) read before to the node it describes (None: invalid); a node
    reads these on every wake-up, and decoding every record of the region each time would cost
    more than everything else it does. It is trimmed to the records read."""
    live = set(present)
    scope = REGION_SCOPE_PREFIX + region
    seen: dict[tuple[str, bytes], NodeResources | None] = {}
    nodes: list[NodeResources] = []
    for record in inventories:
        if record.key not in live or record.scope != scope or record.key != record.author:
            continue
        slot = (record.key, record.payload)
        if cache is not None and slot in cache:
            node = cache[slot]
        else:
            doc = inventory.decode(record.payload)
            node = node_from_inventory(record.key, doc) if doc is not None else None
        seen[slot] = node
        if node is None:
            continue
        status = statuses.get(record.key, NodeStatus.SCHEDULABLE)
        nodes.append(node if node.status is status else replace(node, status=status))
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return sorted(nodes, key=lambda n: n.node_id)


def reports_of(
    region: str,
    present: Iterable[str],
    records: Iterable[Record],
    cache: dict[bytes, ReplicaReport | None] | None = None,
) -> dict[str, ReplicaReport]:
    """Present member -> its `replicas` record (undecodable ones left out); `cache` as nodes_of's."""
    live = set(present)
    scope = REGION_SCOPE_PREFIX + region
    seen: dict[bytes, ReplicaReport | None] = {}
    out: dict[str, ReplicaReport] = {}
    for record in records:
        if record.key not in live or record.scope != scope:
            continue
        payload = record.payload
        report: ReplicaReport | None
        if cache is not None and payload in cache:
            report = cache[payload]
        else:
            try:
                report = decode_report(payload)
            except ReplicaStatesError:
                report = None
        seen[payload] = report
        if report is not None:
            out[record.key] = report
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return dict(sorted(out.items()))


def leader_current(
    applied: Iterable[Assignment],
    reports: Mapping[str, ReplicaReport],
    moved_away: Mapping[tuple[str, str], Stamp],
) -> list[Assignment]:
    """The current placement a leader gives `place`.

    The applied placement's replicas, each in the state its node reports (assigned
    if it reports none), plus every replica a node reports that the applied
    placement lacks: `place` keeps the best of them (ready first), so duplicates
    after a heal keep the serving ones. A reported replica the leader moved away
    itself (`moved_away`: (deployment, node) -> the stamp of that move) is left
    out while its report is not newer than the move: the node has not applied it
    yet, or keeps serving it until a newer placement confirms the drop.
    """
    out: dict[tuple[str, str], Assignment] = {}
    for a in applied:
        report = reports.get(a.node_id)
        state = report.state_of(a.deployment) if report is not None else None
        out[(a.deployment, a.node_id)] = Assignment(
            a.deployment, a.slot, a.node_id, state or ReplicaState.ASSIGNED
        )
    for node_id, report in reports.items():
        for held in report.replicas:
            if (held.deployment, node_id) in out:
                continue
            moved = moved_away.get((held.deployment, node_id))
            if moved is not None and (report.stamp is None or not newer(report.stamp, moved)):
                continue  # written before the node applied the move, or while it waits for release
            out[(held.deployment, node_id)] = Assignment(held.deployment, held.slot, node_id, held.state)
    return sorted(out.values())


def releases_pending(
    placed: Iterable[Assignment],
    reports: Mapping[str, ReplicaReport],
    applied: Stamp | None,
    *,
    behind: bool = False,
) -> bool:
    """True if a node that applied the `applied` placement still reports a replica `placed` lacks:
    it keeps a serving replica until a newer placement confirms the drop (placing.py).

    With `behind`, also a node whose report is older than `applied`: once `applied` has been
    out for a while, that node lost it (both of the author's sendings), and only anti-entropy
    would bring it, within a push-pull period (90 s in a region of 100): the leader publishes
    a newer epoch, which goes to every member again."""
    if applied is None:
        return False
    where = {(a.deployment, a.node_id) for a in placed}
    return any(
        (report.stamp == applied or (behind and (report.stamp is None or newer(applied, report.stamp))))
        and any((h.deployment, node_id) not in where for h in report.replicas)
        for node_id, report in reports.items()
    )


def with_unresponsive(inputs: Inputs, unresponsive: Iterable[str]) -> Inputs:
    """`inputs` with the members in `unresponsive` (suspect past the standby delay, in a leader's
    view) given that status: their replicas get standbys elsewhere (`keep_draining`)."""
    slow = set(unresponsive) & {n.node_id for n in inputs.nodes}
    if not slow:
        return inputs
    statuses = dict(inputs.statuses)
    for node_id in sorted(slow):
        statuses[node_id] = NodeStatus.UNRESPONSIVE
    nodes = [replace(n, status=NodeStatus.UNRESPONSIVE) if n.node_id in slow else n for n in inputs.nodes]
    return Inputs(inputs.deployments, nodes, statuses, inputs.reports)


def keep_draining(
    region: str,
    placed: Iterable[Assignment],
    current: Iterable[Assignment],
    deployments: Mapping[str, Deployment],
    statuses: Mapping[str, NodeStatus],
    reports: Mapping[str, ReplicaReport],
) -> list[Assignment]:
    """`placed` plus the ready replicas of leaving nodes (draining or unresponsive) whose
    replacements are not ready yet.

    New before old: `place` moves every replica off a leaving node at once; this
    keeps each serving one in the placement, in an extra slot after the desired
    count, until the deployment has its full count of ready replicas on other
    nodes. Then the next placement drops it. A replica with nowhere to go stays
    in its own slot: the drain waits (its replacement shows as unplaced, with the
    reason), and an unresponsive node's placement does not change.
    """
    result = sorted(placed)
    on = {(a.deployment, a.node_id) for a in result}
    extra: dict[str, int] = {}
    for c in sorted(current, key=lambda a: (a.deployment, a.node_id)):
        deployment = deployments.get(c.deployment)
        if (
            deployment is None
            or statuses.get(c.node_id) not in LEAVING
            or c.state is not ReplicaState.READY
            or (c.deployment, c.node_id) in on
        ):
            continue
        count = deployment.replicas.for_region(region)
        ready = [
            a
            for a in result
            if a.deployment == c.deployment
            and statuses.get(a.node_id) not in LEAVING
            and _state(reports, a) is ReplicaState.READY
        ]
        if len(ready) >= count:
            continue  # the deployment serves its full count elsewhere: the old one may go
        slots = {a.slot for a in result if a.deployment == c.deployment}
        if c.slot < count and c.slot not in slots:
            slot = c.slot  # nothing took its place: it keeps its slot
        else:
            slot = count + extra.get(c.deployment, 0)
            extra[c.deployment] = extra.get(c.deployment, 0) + 1
        result.append(Assignment(c.deployment, slot, c.node_id, ReplicaState.ASSIGNED))
        on.add((c.deployment, c.node_id))
    return sorted(result)


def _state(reports: Mapping[str, ReplicaReport], a: Assignment) -> ReplicaState | None:
    report = reports.get(a.node_id)
    return report.state_of(a.deployment) if report is not None else None
