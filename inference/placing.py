"""Placement in the mesh: the leader publishes placements, every node applies the newest valid
one and reports its replicas (a hosted core on the PLACEMENT channel, sans-IO).

One `PlacementCore` runs on every node (docs/placement.md, "Placement in the mesh"). The
file is long because the five duties below share one state (the applied placement, this
node's replicas and takeovers); its inputs, checks and record live in modules of their own.

1. **The leader publishes.** While the election says this node leads within its
   lease, on every relevant change (desired, inventory, scheduling, rebalance and
   replicas records, membership) and every `refresh_interval_s`, it computes
   `place` and, if the result differs from the applied placement, publishes a
   `placement` record signed by its key, stamped (era, term, epoch) and carrying
   its certificate of the term.
2. **Every node applies the newest valid placement** (inference/placement_check.py,
   inference/stamps.py): a placement whose certificate does not prove its author
   led that term is forged; one older than the applied one is stale (a deposed
   leader is fenced). Both are counted and ignored.
3. **Every node reports its replicas** in its `replicas` record
   (inference/replica_states.py), with their states from the node's runtime; the
   leader feeds them back to `place` (inference/placing_inputs.py).
4. **Leaderless autonomy.** With no live leader for `leaderless_after_s`, every
   node computes `place(provisional=True)` from the applied placement and the
   same records, and takes over the provisional replicas it is given; the next
   applied placement supersedes them.
5. **A serving replica leaves its node only when a newer placement confirms it.** A node keeps a
   ready replica the applied placement lacks and reports it; the leader takes it back (after a heal
   the serving duplicates stay) or publishes a newer placement without it, then the node drops it;
   a node still a placement behind `release_retry_s` later lost it: the leader publishes again.

The core sends no application messages: records carry everything.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import nacl.signing

from consensus.certificate import certificate_head
from gossip.events import Event, HostedEvent, MemberChanged, MemberState, RecordsAccepted
from gossip.io import AppSend
from gossip.kinds import (
    DESIRED_KIND,
    INVENTORY_KIND,
    PLACEMENT_KIND,
    REBALANCE_KIND,
    REGION_SCOPE_PREFIX,
    REPLICAS_KIND,
    SCHEDULING_KIND,
)
from gossip.records import Record, sign_record
from gossip.wire import DecodeError
from inference import replica_states
from inference.assignments import Assignment, ReplicaState
from inference.manifest import Deployment
from inference.operator_records import node_statuses, rebalance_generation
from inference.placement import ChangeKind, PlacementOptions, Unplaced, place
from inference.placement_check import FORGED, ValidPlacement, check_placement
from inference.placement_record import PlacementRecord, PlacementRecordError, encode
from inference.placing_inputs import (
    DecodeCache,
    Inputs,
    deployments_of,
    keep_draining,
    leader_current,
    nodes_of,
    present_members,
    releases_pending,
    reports_of,
    with_unresponsive,
)
from inference.placing_ports import (
    AppliedChange,
    PlacementApplied,
    PlacementConfig,
    PlacementElection,
    PlacementMesh,
    ReplicaDropped,
    ReplicaRuntime,
    ReplicaStateChanged,
)
from inference.replica_states import HeldReplica, ReplicaReport
from inference.resources import NodeResources
from inference.stamps import Stamp, newer

PLACEMENT_CHANNEL = 2  # node/channels.py Channel.PLACEMENT (inference may not import node/)
SEEN_KEPT = 1024  # placement records already judged, by (author, version, signature)
UNPROVEN_KEPT = 64  # placements whose certificate did not verify, re-checked later (keys may arrive)
MOVED_AWAY_KEPT = 4096  # replicas the leader moved off live nodes, and when
_RELEVANT = frozenset({DESIRED_KIND, INVENTORY_KIND, REPLICAS_KIND, SCHEDULING_KIND, REBALANCE_KIND})


@dataclass(frozen=True, slots=True)
class Applied:
    """The placement this node applies: its record, its stamp and the leader that made it."""

    record: PlacementRecord
    stamp: Stamp
    leader: str


@dataclass(frozen=True, slots=True, order=True)
class ReplicaView:
    """One replica as readers see it: where it runs and in what state."""

    deployment: str
    slot: int
    node_id: str
    state: ReplicaState
    provisional: bool = False  # taken over without a leader (this node's own replicas only)
    error: str | None = None  # a failed replica's error, as its node's `replicas` record gives it


@dataclass(frozen=True, slots=True, order=True)
class DeploymentCount:
    """Ready replicas of a deployment in this region, against the desired count."""

    deployment: str
    ready: int
    desired: int


@dataclass(slots=True)
class _Own:
    slot: int
    state: ReplicaState
    provisional: bool
    releasing_after: Stamp | None = None  # kept (ready) though the placement at this stamp lacks it


class PlacementCore:
    """One node's placement in its region (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        region: str,
        signing_key: nacl.signing.SigningKey,
        mesh: PlacementMesh,
        election: PlacementElection,
        runtime: ReplicaRuntime,
        *,
        now: float = 0.0,
        config: PlacementConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.region = region
        self.settings = config or PlacementConfig()
        self._key = signing_key
        self._mesh = mesh
        self._election = election
        self._runtime = runtime
        self._scope = REGION_SCOPE_PREFIX + region
        self._applied: Applied | None = None
        self._applied_at_s = now  # when the applied placement was applied here (a leader: published)
        self._own: dict[str, _Own] = {}
        self._provisional: dict[str, int] = {}  # deployment -> slot, taken over without a leader
        self._takeover_fresh = False
        self._leaderless_since_s: float | None = None
        self._suspect_since_s: dict[str, float] = {}  # region member -> when it turned suspect here
        self._unresponsive: tuple[str, ...] = ()  # suspect past standby_after_s (leader's inputs)
        self._incoming: list[Record] = []
        self._scanned = False  # the store's placements (restored at start) are read at the first timer
        self._seen: OrderedDict[tuple[str, int, bytes], None] = OrderedDict()
        self._unproven: OrderedDict[str, Record] = OrderedDict()
        self._moved_away: OrderedDict[tuple[str, str], Stamp] = OrderedDict()
        self._published: Stamp | None = None
        self._reported: tuple[tuple[HeldReplica, ...], Stamp | None, tuple[tuple[str, str], ...]] | None = (
            None
        )
        self._version = 0
        self._dirty = True
        self._wake_s = now
        self._refresh_s = now
        self._retry_s = now + self.settings.retry_unproven_s
        self._cache = DecodeCache()
        self._records: list[tuple[Record, bool]] = []
        self._events: list[HostedEvent] = []
        self._counters: dict[str, int] = {}

    # --- HostedCore ---------------------------------------------------------------------------

    @property
    def channel(self) -> int:
        return PLACEMENT_CHANNEL

    def handle_message(self, now: float, pool: str, from_id: str, payload: bytes) -> None:
        self._count("drop_unknown_message")  # placement speaks through records only

    def observe(self, now: float, event: Event) -> None:
        if type(event) is MemberChanged:
            if event.pool == "region":
                if event.state is MemberState.SUSPECT:
                    self._suspect_since_s.setdefault(event.node_id, now)
                else:
                    self._suspect_since_s.pop(event.node_id, None)
                self._touch(now)
        elif type(event) is RecordsAccepted:
            for record in event.records:
                if record.kind == PLACEMENT_KIND:
                    self._incoming.append(record)
                    self._touch(now)
                elif record.kind in _RELEVANT:
                    if (
                        record.kind == REPLICAS_KIND
                        and record.key == self.node_id
                        and record.version > self._version
                    ):
                        # Our own report from a life this node forgot (restored from an old
                        # backup): it outranks what we reported since. Report again, above it.
                        self._reported = None
                        self._count("own_report_superseded")
                    self._touch(now)

    def handle_timer(self, now: float) -> None:
        if not self._scanned:
            self._scanned = True
            self._incoming = [*self._mesh.records(PLACEMENT_KIND), *self._incoming]
        incoming, self._incoming = self._incoming, []
        for record in incoming:
            self._consider(now, record, first=True)
        if now >= self._retry_s:
            self._retry_s = now + self.settings.retry_unproven_s
            for record in list(self._unproven.values()):
                self._consider(now, record, first=False)
        self._track_leader(now)
        unresponsive = self._unresponsive_members(now)
        if unresponsive != self._unresponsive:
            self._unresponsive, self._dirty = unresponsive, True
        changed, self._dirty = self._dirty, False
        # Only a leader and a leaderless node place; the rest need just the deployments (reading
        # every inventory and report of the region at each wake-up was most of a follower's cost).
        if changed or now >= self._refresh_s:
            self._refresh_s = now + self.settings.refresh_interval_s
            self._lead(now, unresponsive)
        self._take_over(now, changed)
        self._reconcile(now, deployments_of(self._mesh.records(DESIRED_KIND), self._cache.desired))
        self._report()
        self._wake_s = self._next_wake(now)

    def next_deadline(self) -> float | None:
        return self._wake_s

    def poll_messages(self) -> list[AppSend]:
        """Never any: placement speaks through records (the fields of node.hosted.AppSend)."""
        return []

    def poll_records(self) -> list[tuple[Record, bool]]:
        """Records to publish now, each with `urgent` (the node publishes them in order)."""
        out, self._records = self._records, []
        return out

    def drain_events(self) -> list[HostedEvent]:
        out, self._events = self._events, []
        return out

    # --- reads --------------------------------------------------------------------------------

    def applied(self) -> Applied | None:
        """The placement in force here, or None before any."""
        return self._applied

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def own_replicas(self) -> list[ReplicaView]:
        """This node's replicas (those to fetch, load and serve), by deployment."""
        return [
            ReplicaView(name, own.slot, self.node_id, own.state, own.provisional)
            for name, own in sorted(self._own.items())
        ]

    def replicas(self) -> list[ReplicaView]:
        """The applied placement, each replica in the state its node reports (assigned if none),
        plus this node's provisional takeovers."""
        reports = self._all_reports()
        out = {(v.deployment, v.node_id): v for v in self.own_replicas() if v.provisional}
        for a in self._applied.record.assignments if self._applied else ():
            report = reports.get(a.node_id)
            state = report.state_of(a.deployment) if report is not None else None
            error = (
                report.error_of(a.deployment) if report is not None and state is ReplicaState.FAILED else None
            )
            out[(a.deployment, a.node_id)] = ReplicaView(
                a.deployment, a.slot, a.node_id, state or a.state, error=error
            )
        return sorted(out.values())

    def deployment_counts(self) -> list[DeploymentCount]:
        """Per deployment wanted here: replicas reported ready against the desired count."""
        views = self.replicas()
        return [
            DeploymentCount(
                name,
                sum(1 for v in views if v.deployment == name and v.state is ReplicaState.READY),
                d.replicas.for_region(self.region),
            )
            for name, d in self._inputs().deployments.items()
            if d.replicas.for_region(self.region) > 0
        ]

    def unplaced(self) -> tuple[Unplaced, ...]:
        """Replicas no node can take now, with why (computed afresh from the records held)."""
        return place(self.region, *self.place_inputs()).unplaced

    def place_inputs(self) -> tuple[list[Deployment], list[NodeResources], list[Assignment]]:
        """What a leader's `place` would take here now: the deployments in force, the region's
        live nodes, and the applied placement with the states the nodes report (murmur plan)."""
        inputs = self._inputs()
        assignments = self._applied.record.assignments if self._applied else ()
        current = leader_current(assignments, inputs.reports, self._moved_away)
        return list(inputs.deployments.values()), inputs.nodes, current

    # --- applying -----------------------------------------------------------------------------

    def _consider(self, now: float, record: Record, *, first: bool) -> None:
        """Judge one placement record; apply it if it is valid and newer than the applied one."""
        key = (record.author, record.version, record.signature)
        if first:
            if key in self._seen:
                return
            self._seen[key] = None
            while len(self._seen) > SEEN_KEPT:
                self._seen.popitem(last=False)
        judged = check_placement(record, self.region, self._mesh.member_key)
        if isinstance(judged, str):
            if judged == FORGED:
                # The certificate's voters may be members whose keys have not reached us yet.
                self._unproven.pop(record.author, None)
                self._unproven[record.author] = record
                while len(self._unproven) > UNPROVEN_KEPT:
                    self._unproven.popitem(last=False)
            if first:
                self._count("drop_" + judged)
            return
        self._unproven.pop(record.author, None)  # the store holds one placement per author: this one
        applied = self._applied
        if applied is not None and not newer(judged.stamp, applied.stamp):
            if judged.stamp != applied.stamp or judged.leader != applied.leader:
                self._count("drop_stale_placement")
            return
        self._apply(now, judged)

    def _apply(self, now: float, valid: ValidPlacement) -> None:
        before = (
            {(a.deployment, a.slot): a.node_id for a in self._applied.record.assignments}
            if self._applied
            else {}
        )
        after = {(a.deployment, a.slot): a.node_id for a in valid.record.assignments}
        changes = []
        for key in sorted(set(before) | set(after)):
            old, new = before.get(key), after.get(key)
            if old != new:
                kind = (
                    ChangeKind.ADDED
                    if old is None
                    else ChangeKind.REMOVED
                    if new is None
                    else ChangeKind.MOVED
                )
                changes.append(AppliedChange(key[0], key[1], kind, old, new))
        self._applied, self._applied_at_s = Applied(valid.record, valid.stamp, valid.leader), now
        # A newer placement supersedes what was taken over without a leader.
        self._provisional = {}
        self._takeover_fresh = False
        self._count("placements_applied")
        era = valid.stamp.era
        self._events.append(
            PlacementApplied(
                self.region,
                (era.generation, era.founder),
                valid.stamp.term,
                valid.stamp.epoch,
                valid.leader,
                tuple(changes),
            )
        )
        self._touch(now)

    # --- leading ------------------------------------------------------------------------------

    def _lead(self, now: float, unresponsive: tuple[str, ...]) -> None:
        cert = self._election.certificate()
        if not cert or not self._election.is_leader(now):
            return
        try:
            era, term, leader, _config = certificate_head(cert)
        except DecodeError:
            return
        if leader != self.node_id:
            return
        inputs = with_unresponsive(self._inputs(), unresponsive)
        applied = self._applied
        done = applied.record.rebalanced if applied else 0
        generation = rebalance_generation(self._mesh.records(REBALANCE_KIND), self.region)
        rebalance = generation > done
        before = applied.record.assignments if applied else ()
        current = leader_current(before, inputs.reports, self._moved_away)
        result = place(
            self.region,
            inputs.deployments.values(),
            inputs.nodes,
            current,
            options=PlacementOptions(rebalance=rebalance),
        )
        kept = keep_draining(
            self.region, result.assignments, current, inputs.deployments, inputs.statuses, inputs.reports
        )
        # A placement says where; states are the nodes' to report (replicas records), so a
        # replica becoming ready never makes a new placement.
        placed = tuple(Assignment(a.deployment, a.slot, a.node_id) for a in kept)
        unchanged = placed == tuple(Assignment(a.deployment, a.slot, a.node_id) for a in before)
        behind = now >= self._applied_at_s + self.settings.release_retry_s  # see releases_pending
        release = releases_pending(placed, inputs.reports, applied.stamp if applied else None, behind=behind)
        if (unchanged or (applied is None and not placed)) and not release and not rebalance:
            return
        epoch = 1
        for last in (applied.stamp if applied else None, self._published):
            if last is not None and last.era == era and last.term == term:
                epoch = max(epoch, last.epoch + 1)
        stamp = Stamp(era, term, epoch)
        if applied is not None and not newer(stamp, applied.stamp):
            self._count("fenced_own_placement")  # a newer leader's placement is here already
            return
        record = PlacementRecord(
            self.region, (era.generation, term), epoch, placed, cert, max(generation, done)
        )
        try:
            payload = encode(record)
        except PlacementRecordError:
            self._count("drop_oversized_placement")  # the previous placement stays in force
            return
        self._records.append((self._sign(PLACEMENT_KIND, payload), True))
        self._published = stamp
        self._count("placements_published")
        standbys = sum(1 for c in result.changes if c.from_node in self._unresponsive)
        if standbys:
            self._count("standby_replicas", standbys)
        present = {n.node_id for n in inputs.nodes}
        on = {(a.deployment, a.node_id) for a in placed}
        for change in result.changes:
            moved = change.from_node
            if moved in present and (change.deployment, moved) not in on:
                self._moved_away.pop((change.deployment, moved), None)
                self._moved_away[(change.deployment, moved)] = stamp
        while len(self._moved_away) > MOVED_AWAY_KEPT:
            self._moved_away.popitem(last=False)
        self._apply(now, ValidPlacement(record, stamp, self.node_id))

    # --- without a leader ---------------------------------------------------------------------

    def _track_leader(self, now: float) -> None:
        leader = self._election.leader()
        live = leader is not None and (
            leader == self.node_id or leader in present_members(self._mesh.region_members())
        )
        if live:
            self._leaderless_since_s = None
        elif self._leaderless_since_s is None:
            self._leaderless_since_s = now

    def _unresponsive_members(self, now: float) -> tuple[str, ...]:
        """Region members suspect here for at least `standby_after_s`, by id (see PlacementConfig)."""
        if not self._suspect_since_s:
            return ()
        after = self.settings.standby_after_s
        return tuple(
            node_id
            for node_id, state in self._mesh.region_members()
            if state is MemberState.SUSPECT
            and (since := self._suspect_since_s.get(node_id)) is not None
            and now >= since + after
        )

    def _take_over(self, now: float, changed: bool) -> None:
        since = self._leaderless_since_s
        # The same sum _next_wake sets the timer at: `now - since < after` can hold at that very
        # time by rounding, and the timer would fire forever without taking over.
        if since is None or now < since + self.settings.leaderless_after_s:
            return
        if self._takeover_fresh and not changed:
            return
        self._takeover_fresh = True
        inputs = self._inputs()
        # Every node computes this from the same records: the applied placement (its states
        # as published, not the reports, which differ in timing from node to node).
        current = self._applied.record.assignments if self._applied else ()
        result = place(
            self.region,
            inputs.deployments.values(),
            inputs.nodes,
            current,
            options=PlacementOptions(provisional=True),
        )
        mine = {
            a.deployment: a.slot
            for a in result.assignments
            if a.node_id == self.node_id and a.state is ReplicaState.PROVISIONAL
        }
        if mine != self._provisional:
            self._count("takeovers")
        self._provisional = mine

    # --- this node's replicas -----------------------------------------------------------------

    def _reconcile(self, now: float, deployments: dict[str, Deployment]) -> None:
        wanted: dict[str, tuple[int, bool]] = {}
        for a in self._applied.record.assignments if self._applied else ():
            if a.node_id == self.node_id:
                wanted[a.deployment] = (a.slot, False)
        for name, slot in self._provisional.items():
            wanted.setdefault(name, (slot, True))
        for name, (slot, provisional) in wanted.items():
            own = self._own.get(name)
            if own is None:
                self._own[name] = own = _Own(slot, ReplicaState.ASSIGNED, provisional)
                own.state = ReplicaState.PROVISIONAL if provisional else ReplicaState.ASSIGNED
                self._events.append(ReplicaStateChanged(name, slot, own.state))
                continue
            own.releasing_after = None
            if own.slot != slot or own.provisional != provisional:
                own.slot, own.provisional = slot, provisional
                not_started = ReplicaState.PROVISIONAL if provisional else ReplicaState.ASSIGNED
                # Not started yet: it shows which it is now. Started (loading, ready, failed): the
                # leader adopted it as it is, and its state did not change (no event says it did).
                if (
                    own.state in (ReplicaState.ASSIGNED, ReplicaState.PROVISIONAL)
                    and own.state is not not_started
                ):
                    own.state = not_started
                    self._events.append(ReplicaStateChanged(name, slot, own.state))
        applied = self._applied
        for name in [n for n in self._own if n not in wanted]:
            own = self._own[name]
            if own.state is ReplicaState.READY and applied is not None:
                # Serving: keep it until a placement newer than the one that dropped it
                # (made after the leader could see our report of it) confirms the drop.
                if own.releasing_after is None:
                    own.releasing_after = applied.stamp
                    continue
                if not newer(applied.stamp, own.releasing_after):
                    continue
            del self._own[name]
            self._events.append(ReplicaDropped(name, own.slot))
        for name, own in self._own.items():
            deployment = deployments.get(name)
            if deployment is None:
                continue
            state = self._runtime.replica_state(deployment, now)
            if state is None:
                state = ReplicaState.PROVISIONAL if own.provisional else ReplicaState.ASSIGNED
            if state is not own.state:
                own.state = state
                self._events.append(ReplicaStateChanged(name, own.slot, state))

    def _report(self) -> None:
        """Publish our `replicas` record when our replicas or their states change, or, while a
        replica waits for its release, when the applied placement does (the leader needs to
        know we saw it)."""
        held = tuple(HeldReplica(name, own.slot, own.state) for name, own in sorted(self._own.items()))
        errors = self._errors(held)
        releasing = any(own.releasing_after is not None for own in self._own.values())
        stamp = self._applied.stamp if self._applied else None
        key = (held, stamp if releasing else None, errors)
        if key == self._reported:
            return
        self._reported = key
        payload = replica_states.encode(ReplicaReport(held, stamp, errors))
        self._records.append((self._sign(REPLICAS_KIND, payload), True))
        self._count("replica_reports_published")

    def _errors(self, held: tuple[HeldReplica, ...]) -> tuple[tuple[str, str], ...]:
        """The start of each failed replica's error, for the `replicas` record (a few at most)."""
        out: list[tuple[str, str]] = []
        for replica in held:
            error = (
                self._runtime.replica_error(replica.deployment)
                if replica.state is ReplicaState.FAILED
                else None
            )
            text = " ".join((error or "").split())[: replica_states.ERROR_MAX_CHARS]
            if text:
                out.append((replica.deployment, text))
        return tuple(out[: replica_states.ERRORS_MAX])

    # --- plumbing -----------------------------------------------------------------------------

    def _inputs(self) -> Inputs:
        present = present_members(self._mesh.region_members())
        statuses = node_statuses(self._mesh.records(SCHEDULING_KIND))
        records, cache = self._mesh.records, self._cache
        return Inputs(
            deployments_of(records(DESIRED_KIND), cache.desired),
            nodes_of(self.region, present, records(INVENTORY_KIND), statuses, cache.inventories),
            statuses,
            reports_of(self.region, present, records(REPLICAS_KIND), cache.reports),
        )

    def _all_reports(self) -> dict[str, ReplicaReport]:
        members = [node_id for node_id, _state in self._mesh.region_members()]
        return reports_of(self.region, members, self._mesh.records(REPLICAS_KIND), self._cache.all_reports)

    def _sign(self, kind: str, payload: bytes) -> Record:
        self._version = max(self._version, self._mesh.latest_version(self.node_id) or 0) + 1
        return sign_record(self._key, kind, self.node_id, self._version, self._scope, payload)

    def _touch(self, now: float) -> None:
        """Something placement reads changed: act soon (changes come in bursts)."""
        self._dirty = True
        self._wake_s = min(self._wake_s, now + self.settings.react_delay_s)

    def _next_wake(self, now: float) -> float:
        s = self.settings
        wake = min(self._refresh_s, self._retry_s if self._unproven else self._refresh_s)
        since = self._leaderless_since_s
        if since is not None and not self._takeover_fresh:
            wake = min(wake, max(now, since + s.leaderless_after_s))
        for since in self._suspect_since_s.values():
            if since + s.standby_after_s > now:  # becomes unresponsive then (leader's inputs)
                wake = min(wake, since + s.standby_after_s)
        settled = (ReplicaState.READY, ReplicaState.FAILED)
        if any(own.state not in settled for own in self._own.values()):
            wake = min(wake, now + s.state_poll_s)
        return wake

    def _count(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n
