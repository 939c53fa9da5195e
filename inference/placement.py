"""Placement: which node of a region runs each replica, as a pure function (sans-IO).

`place(region, desired, nodes, current)` is what a region's leader computes and
publishes, and what every node computes alone when the region has no leader (with
`provisional=True`): the same inputs give the same `Placement` on every node, in
any order, with no clock, randomness or I/O. docs/placement.md gives the rules
with examples; in short, one run:

1. keeps each current replica that may stay (its node is alive, not draining,
   still meets the requirements, holds no other replica of it; the best `count`
   of them when there are too many: ready first, then the lowest slot);
2. evicts replicas from a node over its budget (lowest priority first);
3. places each missing replica, highest priority first, on the best node that
   meets the requirements and has room, or failing that on one where displacing
   lower-priority replicas makes room; what cannot be placed is reported with why;
4. with `rebalance=True`, moves replicas onto spare capacity while each move
   lowers the load of the busiest node involved (inference/rebalance.py).

Nothing that may stay moves, so a node that joins moves nothing and a node that
dies moves only its own replicas (and any lower-priority ones they displace).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from inference.assignments import KEEP_ORDER, Assignment, ReplicaState
from inference.ledger import FRACTION_SCALE, Held, Ledger
from inference.manifest import Deployment
from inference.rebalance import rebalance
from inference.resources import LEAVING, NodeResources, requirement_problem, reservation
from inference.unplaced import why_unplaced


class ChangeKind(StrEnum):
    ADDED = "added"  # a replica the current placement lacked
    REMOVED = "removed"  # a replica that is no longer placed anywhere
    MOVED = "moved"  # a replica that left one node for another


@dataclass(frozen=True, slots=True, order=True)
class Change:
    """One difference from the current placement, and why."""

    deployment: str
    slot: int
    kind: ChangeKind
    from_node: str | None
    to_node: str | None
    reason: str


@dataclass(frozen=True, slots=True, order=True)
class Unplaced:
    """A wanted replica no node could take, and why."""

    deployment: str
    slot: int
    reason: str


@dataclass(frozen=True, slots=True, order=True)
class Displaced:
    """A replica evicted from `node_id` to make room for a higher-priority one."""

    deployment: str
    slot: int
    node_id: str
    by_deployment: str
    by_priority: int


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of one run; every tuple is sorted."""

    region: str
    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...] = ()
    changes: tuple[Change, ...] = ()
    displaced: tuple[Displaced, ...] = ()


@dataclass(frozen=True, slots=True)
class PlacementOptions:
    """How to place; every node of a region must use the same options."""

    rebalance: bool = False  # also move replicas onto spare capacity (murmur rebalance REGION)
    provisional: bool = False  # leaderless takeover: new replicas are marked provisional
    memory_budget_percent: int = 80  # of a node's total memory; the rest is the OS's and the agent's
    cpu_budget_percent: int = 100  # of a node's cores

    def __post_init__(self) -> None:
        if not 0 < self.memory_budget_percent <= 100 or not 0 < self.cpu_budget_percent <= 1000:
            raise ValueError("memory_budget_percent must be 1..100 and cpu_budget_percent 1..1000")


DEFAULT_OPTIONS = PlacementOptions()


@dataclass(frozen=True, slots=True)
class _Missing:
    """A slot to fill. `from_node` and `why`: where the replica was in the current placement and
    why it left (None: it was nowhere); `displaced_by`: why it is unplaced if it finds no node."""

    slot: int
    from_node: str | None = None
    why: str | None = None
    displaced_by: str | None = None


@dataclass(slots=True)
class _Run:
    region: str
    deployments: dict[str, Deployment]
    ledger: Ledger
    options: PlacementOptions
    # Slots to fill, highest priority first: (-priority, deployment, slot, sequence, what).
    queue: list[tuple[int, str, int, int, _Missing]] = field(default_factory=list)
    pushed: int = 0  # entries ever queued: a tie-break that never compares two _Missing
    failed: list[tuple[str, _Missing, str]] = field(default_factory=list)  # deployment, slot, why
    changes: list[Change] = field(default_factory=list)
    displaced: list[Displaced] = field(default_factory=list)

    def count(self, name: str) -> int:
        deployment = self.deployments.get(name)
        return deployment.replicas.for_region(self.region) if deployment is not None else 0

    def removed(self, a: Assignment, reason: str) -> None:
        self.changes.append(Change(a.deployment, a.slot, ChangeKind.REMOVED, a.node_id, None, reason))

    def push(self, name: str, missing: _Missing) -> None:
        self.pushed += 1
        heapq.heappush(
            self.queue, (-self.deployments[name].priority, name, missing.slot, self.pushed, missing)
        )

    def fill_queue(self) -> None:
        """Fill every queued slot in priority order (a displaced replica joins the queue, behind
        its displacer: its priority is lower)."""
        while self.queue:
            _, name, _, _, missing = heapq.heappop(self.queue)
            _fill(self, self.deployments[name], missing)

    def new_state(self) -> ReplicaState:
        return ReplicaState.PROVISIONAL if self.options.provisional else ReplicaState.ASSIGNED


# Rebalancing can free room for a replica that had none, and placing it can give the
# rebalance more to do; each round places a replica or trades lower priority for higher,
# so the rounds end. The cap is a safety stop far above what a region needs.
_REBALANCE_ROUNDS_MAX = 1000


def place(
    region: str,
    desired: Iterable[Deployment],
    nodes: Iterable[NodeResources],
    current: Iterable[Assignment],
    *,
    options: PlacementOptions = DEFAULT_OPTIONS,
) -> Placement:
    """The placement of `region`: the deployments in force, the region's live nodes (those that
    may host; cordoned and draining ones included, with their status), and the assignments in
    force (which may name nodes that are gone). Raises ValueError if two deployments or two
    nodes share a name (the records they come from are keyed by it, so it is a caller's bug)."""
    deployments = _by_name(desired)
    node_list = sorted(nodes, key=lambda n: n.node_id)
    if len({n.node_id for n in node_list}) != len(node_list):
        raise ValueError("two nodes share an id")
    run = _Run(
        region,
        deployments,
        Ledger(node_list, options.memory_budget_percent, options.cpu_budget_percent),
        options,
    )
    by_deployment: dict[str, list[Assignment]] = {}
    for a in sorted(set(current)):
        by_deployment.setdefault(a.deployment, []).append(a)
    for name in sorted(set(by_deployment) | set(deployments)):
        _keep(run, name, by_deployment.get(name, []))
    _evict_over_budget(run)
    run.fill_queue()
    for _ in range(_REBALANCE_ROUNDS_MAX if options.rebalance else 0):
        if not _rebalance(run) or not run.failed:
            break
        for name, missing, _ in run.failed:
            run.push(name, missing)
        run.failed = []
        run.fill_queue()
    for name, missing, _ in run.failed:
        if missing.from_node is not None and missing.why is not None:
            run.changes.append(
                Change(name, missing.slot, ChangeKind.REMOVED, missing.from_node, None, missing.why)
            )
    return Placement(
        region=region,
        assignments=tuple(
            Assignment(h.deployment, h.slot, h.node_id, h.state) for h in run.ledger.everything()
        ),
        unplaced=tuple(sorted(Unplaced(name, missing.slot, reason) for name, missing, reason in run.failed)),
        changes=tuple(sorted(run.changes)),
        displaced=tuple(sorted(run.displaced)),
    )


def _by_name(desired: Iterable[Deployment]) -> dict[str, Deployment]:
    deployments: dict[str, Deployment] = {}
    for deployment in sorted(desired, key=lambda d: d.name):
        if deployment.name in deployments:
            raise ValueError(f"deployment {deployment.name!r} is given twice")
        deployments[deployment.name] = deployment
    return deployments


def _keep(run: _Run, name: str, entries: list[Assignment]) -> None:
    """Keep what may stay of one deployment's current replicas; queue the slots left to fill."""
    count = run.count(name)
    deployment = run.deployments.get(name)
    if deployment is None or count == 0:
        why = (
            f"deployment {name} is no longer desired"
            if deployment is None
            else f"no replicas wanted in {run.region}"
        )
        for a in entries:
            run.removed(a, why)
        return
    kept: list[Assignment] = []
    leaving: list[tuple[Assignment, str]] = []  # must move: their node cannot keep them
    for a in sorted(entries, key=lambda a: (KEEP_ORDER[a.state], a.slot, a.node_id)):
        node = run.ledger.nodes.get(a.node_id)
        problem = requirement_problem(node, deployment.requirements) if node is not None else None
        if node is None:
            leaving.append((a, f"node {a.node_id} is gone"))
        elif node.status in LEAVING:
            leaving.append((a, f"node {a.node_id} is {node.status.value}"))
        elif problem is not None:
            leaving.append((a, f"node {a.node_id} no longer meets the requirements: {problem}"))
        elif any(k.node_id == a.node_id for k in kept):
            run.removed(a, f"a second replica on node {a.node_id} (spread)")
        elif len(kept) >= count:
            run.removed(a, f"over the desired count of {count}")
        else:
            kept.append(a)
    # Kept replicas keep their slot when it is in range and theirs alone; others take the lowest free.
    taken: dict[int, Assignment] = {}
    for a in kept:
        if a.slot < count and a.slot not in taken:
            taken[a.slot] = a
    free = [s for s in range(count) if s not in taken]
    for a in kept:
        if taken.get(a.slot) is not a:
            taken[free.pop(0)] = a
    for slot, a in sorted(taken.items()):
        # A leader adopts what was taken over without one: provisional replicas become assigned.
        adopt = a.state == ReplicaState.PROVISIONAL and not run.options.provisional
        state = ReplicaState.ASSIGNED if adopt else a.state
        run.ledger.add(Held(name, slot, a.node_id, state, deployment.priority, reservation(deployment)))
    # The replicas that must move fill the free slots, their own slot first.
    free = [s for s in range(count) if s not in taken]
    for a, why in sorted(leaving, key=lambda item: item[0].slot not in free):
        if not free:
            run.removed(a, why)
            continue
        slot = a.slot if a.slot in free else free[0]
        free.remove(slot)
        run.push(name, _Missing(slot, a.node_id, why))
    for slot in free:
        run.push(name, _Missing(slot))


def _evict_over_budget(run: _Run) -> None:
    """A node over its budget (its memory shrank, a manifest grew its reservation) sheds its
    lowest-priority replicas until it fits; they are placed again like any missing one."""
    for node_id in run.ledger.nodes:
        for held in sorted(run.ledger.on_node(node_id), key=lambda h: (h.priority, h.deployment, -h.slot)):
            if not run.ledger.over_budget(node_id):
                break
            run.ledger.remove(held)
            run.push(held.deployment, _Missing(held.slot, node_id, f"node {node_id} is over capacity"))


def _fill(run: _Run, deployment: Deployment, missing: _Missing) -> None:
    """Place one missing replica, displacing lower-priority ones if nothing else has room."""
    ledger = run.ledger
    need = reservation(deployment)
    candidates = [n for n in ledger.eligible(deployment) if not ledger.hosts(n.node_id, deployment.name)]
    fitting = [n for n in candidates if ledger.fits(n.node_id, need)]
    victims: list[Held] = []
    if fitting:
        domains = _domain_counts(ledger, deployment)

        def score(n: NodeResources) -> tuple[int, int, int, str]:
            domain = domains.get(n.label(deployment.spread_label) or "", 0) if deployment.spread_label else 0
            free_after = FRACTION_SCALE - ledger.used_fraction(n.node_id, need.memory_bytes)
            return (domain, -free_after, ledger.count(n.node_id), n.node_id)

        target = min(fitting, key=score).node_id
    else:
        options = [
            (v, n.node_id) for n in candidates if (v := _victims(ledger, n.node_id, deployment)) is not None
        ]
        if not options:
            reason = missing.displaced_by or why_unplaced(run.region, ledger, deployment)
            run.failed.append((deployment.name, missing, reason))
            return
        victims, target = min(
            options, key=lambda o: (len(o[0]), max(v.priority for v in o[0]), ledger.count(o[1]), o[1])
        )
    why = f"displaced by {deployment.name} (priority {deployment.priority})"
    for victim in victims:
        ledger.remove(victim)
        run.displaced.append(
            Displaced(victim.deployment, victim.slot, target, deployment.name, deployment.priority)
        )
        # A victim placed earlier in this run is reported from where it was before the run.
        earlier = _take_back(run, victim.deployment, victim.slot, target)
        origin = (target, why) if earlier is None else (earlier.from_node, earlier.reason)
        run.push(victim.deployment, _Missing(victim.slot, origin[0], origin[1], displaced_by=why))
    ledger.add(Held(deployment.name, missing.slot, target, run.new_state(), deployment.priority, need))
    if missing.from_node is None:
        run.changes.append(
            Change(deployment.name, missing.slot, ChangeKind.ADDED, None, target, "new replica")
        )
    else:
        run.changes.append(
            Change(
                deployment.name, missing.slot, ChangeKind.MOVED, missing.from_node, target, missing.why or ""
            )
        )


def _take_back(run: _Run, deployment: str, slot: int, node_id: str) -> Change | None:
    """Remove and return the change this run made that put the slot on `node_id`, if any."""
    for change in run.changes:
        if (change.deployment, change.slot, change.to_node) == (deployment, slot, node_id):
            run.changes.remove(change)
            return change
    return None


def _rebalance(run: _Run) -> int:
    """Rebalance, then fold each move into the change already made to its slot in this run, so
    a replica added and then moved is reported once, where it ended up. The number of moves."""
    moves = rebalance(run.ledger, run.deployments, run.new_state())
    for move in moves:
        earlier = _take_back(run, move.deployment, move.slot, move.from_node)
        if earlier is None:
            run.changes.append(
                Change(
                    move.deployment, move.slot, ChangeKind.MOVED, move.from_node, move.to_node, move.reason
                )
            )
            continue
        if earlier.from_node != move.to_node:  # back where it started: no change at all
            run.changes.append(replace(earlier, to_node=move.to_node))
    return len(moves)


def _domain_counts(ledger: Ledger, deployment: Deployment) -> dict[str, int]:
    """Replicas of the deployment per value of its spread label (no label: the value "")."""
    counts: dict[str, int] = {}
    if deployment.spread_label is None:
        return counts
    for held in ledger.of_deployment(deployment.name):
        value = ledger.nodes[held.node_id].label(deployment.spread_label) or ""
        counts[value] = counts.get(value, 0) + 1
    return counts


def _victims(ledger: Ledger, node_id: str, deployment: Deployment) -> list[Held] | None:
    """The lower-priority replicas to evict from the node so the deployment fits (lowest
    priority first), or None if evicting all of them is not enough."""
    need = reservation(deployment)
    memory_short = need.memory_bytes - ledger.memory_free(node_id)
    cpu_short = need.cpu_millicores - ledger.cpu_free(node_id)
    chosen: list[Held] = []
    lower = [h for h in ledger.on_node(node_id) if h.priority < deployment.priority]
    for held in sorted(lower, key=lambda h: (h.priority, h.deployment, -h.slot)):
        if memory_short <= 0 and cpu_short <= 0:
            break
        chosen.append(held)
        memory_short -= held.reservation.memory_bytes
        cpu_short -= held.reservation.cpu_millicores
    return chosen if chosen and memory_short <= 0 and cpu_short <= 0 else None
