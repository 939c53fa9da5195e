"""Which events a node records, and from what: the table of event kinds and the table of
sources that turn the cores' events into them (mesh/service/events.py keeps them).

A source is one entry of SOURCES: a core event type and the function that says what
it means (`LeaderChanged: _leader_changed`). A new core's events (placement, replica
states) become visible in the log, its stream and `murmur events` by adding their kinds
to KINDS and one line to SOURCES; docs/observability.md lists which are still to come.
Commands accepted through the API are recorded by the node service
(`command_accepted`), not from a core event.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from consensus.events import ConfigChanged, LeaderChanged
from gossip.events import AdmissionRefused, GatewayChanged, MemberChanged, MemberState, Revoked
from gossip.kinds import DESIRED_KIND, NETKEY_KIND, REVOCATION_KIND, TRUST_KIND
from gossip.records import Record
from inference.assignments import ReplicaState
from inference.placing_ports import PlacementApplied, ReplicaDropped, ReplicaStateChanged
from mesh.service.admission import describe_refusal
from mesh.service.events import Detail, EventLog, Observation
from node.netkeys import NetworkKeyInstalled, NetworkKeyInUse, NetworkKeysRetired

# Every kind an event can have, with what it means (GET /v1/events?kind= accepts these).
KINDS: dict[str, str] = {
    "member_joined": "a node appeared in one of this node's pools (region or fleet), alive",
    "member_suspect": "a member stopped answering probes; it is dead unless it refutes in time",
    "member_dead": "a member was declared dead (its suspicion ran out)",
    "member_left": "a member left gracefully (murmur agent stopped)",
    "member_alive": "a suspect, dead or departed member is alive again, or alive at a new address",
    "gateway_changed": "this node became, or stopped being, a gateway of its region",
    "command_accepted": "this node accepted an operator's signed command (persisted, then gossiped)",
    "join_refused": "this node refused to admit a node (its invite or admission is not valid)",
    "node_revoked": "an operator's revocation reached this node",
    "key_rotated": "this node installed a new network key (a rotation or a `keys install` reached it)",
    "key_in_use": "this node now seals with the newest network key (or the one `keys use` named)",
    "key_retired": "this node removed network keys (a rotation's grace period ended, or `keys remove`)",
    "leader_elected": "this node learned of a new leader of its region (or term)",
    "leader_lost": "this node knows no leader of its region any more",
    "voters_changed": "this node stored a new voter configuration of its region",
    "placement_changed": "this node applied a newer placement of its region (stamp, leader, moves)",
    "replica_assigned": "a replica was placed on this node by the leader's placement",
    "replica_provisional": "this node took over a replica without a leader (provisional)",
    "replica_loading": "this node is fetching or loading a replica's model",
    "replica_ready": "a replica on this node is ready to serve",
    "replica_failed": "this node could not load a replica",
    "replica_dropped": "a replica left this node (a newer placement moved or removed it)",
}

# A node id refused for the same reason is recorded again only after this long (a retrying
# intruder knocks every second or so; it is counted every time: murmur_join_refusals_total).
REFUSAL_REPEAT_S = 600.0
REFUSALS_REMEMBERED_MAX = 1024
MEMBERS_REMEMBERED_MAX = 65_536  # previous states, to tell "joined" from "alive again"
PLACEMENT_DEPLOYMENTS_LISTED = (
    16  # deployments a placement_changed event names (deployment names are up to 63 characters)
)

_MEMBER_KINDS = {
    MemberState.SUSPECT: "member_suspect",
    MemberState.DEAD: "member_dead",
    MemberState.LEFT: "member_left",
}


class Context:
    """What translating an event needs beyond the event: the member states seen before, and
    why a replica failed (the model host keeps the error; the core's event only says failed)."""

    def __init__(self, replica_error: Callable[[str], str | None] = lambda deployment: None) -> None:
        self.replica_error = replica_error
        self.states: collections.OrderedDict[tuple[str, str], tuple[MemberState, str]] = (
            collections.OrderedDict()
        )

    def previous(
        self, pool: str, node_id: str, state: MemberState, addr: str
    ) -> tuple[MemberState, str] | None:
        """The (state, addr) last seen of a member, remembering the new one."""
        key = (pool, node_id)
        before = self.states.pop(key, None)
        self.states[key] = (state, addr)
        while len(self.states) > MEMBERS_REMEMBERED_MAX:
            self.states.popitem(last=False)
        return before


Translate = Callable[[Any, Context], list[Observation]]


def _member_changed(event: MemberChanged, ctx: Context) -> list[Observation]:
    before = ctx.previous(event.pool, event.node_id, event.state, event.addr)
    details = (("pool", event.pool), ("addr", event.addr), ("incarnation", event.incarnation))
    where = f"{event.pool} pool"
    if event.state == MemberState.ALIVE:
        if before is None:
            return [Observation("member_joined", event.node_id, f"joined the {where}", details)]
        state, addr = before
        if state == MemberState.ALIVE:
            reason = f"alive at a new address {event.addr} (was {addr}) in the {where}"
        elif state == MemberState.SUSPECT:
            reason = f"refuted the suspicion (incarnation {event.incarnation}) in the {where}"
        else:
            reason = f"back after being {state} in the {where}"
        return [Observation("member_alive", event.node_id, reason, details)]
    reasons = {
        MemberState.SUSPECT: "suspected: probes went unanswered, direct and indirect",
        MemberState.DEAD: "suspicion not refuted in time: declared dead",
        MemberState.LEFT: "left gracefully",
    }
    return [
        Observation(_MEMBER_KINDS[event.state], event.node_id, f"{reasons[event.state]} ({where})", details)
    ]


def _gateway_changed(event: GatewayChanged, ctx: Context) -> list[Observation]:
    reason = "this node is now a gateway" if event.is_gateway else "this node is no longer a gateway"
    return [Observation("gateway_changed", "", reason, (("is_gateway", event.is_gateway),))]


def _revoked(event: Revoked, ctx: Context) -> list[Observation]:
    return [Observation("node_revoked", event.node_id, "revoked by an operator: expelled from the mesh")]


def _key_rotated(event: NetworkKeyInstalled, ctx: Context) -> list[Observation]:
    details = (("epoch", event.epoch), ("key_id", event.key_id))
    return [
        Observation("key_rotated", event.key_id, f"network key of epoch {event.epoch} installed", details)
    ]


def _key_in_use(event: NetworkKeyInUse, ctx: Context) -> list[Observation]:
    details = (("epoch", event.epoch), ("key_id", event.key_id))
    return [Observation("key_in_use", event.key_id, f"sealing with the key of epoch {event.epoch}", details)]


def _keys_retired(event: NetworkKeysRetired, ctx: Context) -> list[Observation]:
    reason = f"{len(event.keys)} key(s) removed at epoch {event.epoch} (a grace period over, or keys remove)"
    return [Observation("key_retired", f"epoch {event.epoch}", reason, (("epoch", event.epoch),))]


def _leader_changed(event: LeaderChanged, ctx: Context) -> list[Observation]:
    details = (("region", event.region), ("term", event.term))
    if not event.leader_id:
        return [Observation("leader_lost", event.region, f"no leader known (term {event.term})", details)]
    reason = f"leads region {event.region} in term {event.term}"
    return [Observation("leader_elected", event.leader_id, reason, details)]


def _config_changed(event: ConfigChanged, ctx: Context) -> list[Observation]:
    voters = ", ".join(event.config.voters)
    reason = f"voters of region {event.region}: {voters}"
    return [Observation("voters_changed", event.region, reason, (("region", event.region),))]


def _placement_applied(event: PlacementApplied, ctx: Context) -> list[Observation]:
    moved = len(event.changes)
    changed = sorted({change.deployment for change in event.changes})
    details = (
        ("region", event.region),
        ("term", event.term),
        ("epoch", event.epoch),
        ("leader", event.leader),
        ("moves", moved),
        # which deployments changed, for `describe deployment` (comma-separated; the first
        # PLACEMENT_DEPLOYMENTS_LISTED, as `deployments_more` counts the rest)
        ("deployments", ",".join(changed[:PLACEMENT_DEPLOYMENTS_LISTED])),
        ("deployments_more", max(0, len(changed) - PLACEMENT_DEPLOYMENTS_LISTED)),
    )
    reason = f"placement term {event.term} epoch {event.epoch} by {event.leader}: {moved} replica(s) changed"
    return [Observation("placement_changed", event.region, reason, details)]


def _replica_state(event: ReplicaStateChanged, ctx: Context) -> list[Observation]:
    details: tuple[Detail, ...] = (
        ("deployment", event.deployment),
        ("slot", event.slot),
        ("state", str(event.state)),
    )
    subject = f"{event.deployment}/{event.slot}"
    reason = f"replica {subject} is {event.state}"
    error = ctx.replica_error(event.deployment) if event.state is ReplicaState.FAILED else None
    if error is not None:
        details += (("error", error),)
        reason += f": {error}"
    return [Observation(f"replica_{event.state}", subject, reason, details)]


def _replica_dropped(event: ReplicaDropped, ctx: Context) -> list[Observation]:
    details = (("deployment", event.deployment), ("slot", event.slot))
    subject = f"{event.deployment}/{event.slot}"
    return [Observation("replica_dropped", subject, f"replica {subject} left this node", details)]


# The core events a node records: one line per source. AdmissionRefused is handled by
# the recorder (it needs the refusal's repeat filter and the store's regions).
SOURCES: dict[type[Any], Translate] = {
    MemberChanged: _member_changed,
    GatewayChanged: _gateway_changed,
    Revoked: _revoked,
    NetworkKeyInstalled: _key_rotated,
    NetworkKeyInUse: _key_in_use,
    NetworkKeysRetired: _keys_retired,
    LeaderChanged: _leader_changed,
    ConfigChanged: _config_changed,
    PlacementApplied: _placement_applied,
    ReplicaStateChanged: _replica_state,
    ReplicaDropped: _replica_dropped,
}

# What `command_accepted` names each operator record (the API's writes).
_COMMANDS = {DESIRED_KIND: "deploy", REVOCATION_KIND: "revoke", TRUST_KIND: "operator", NETKEY_KIND: "netkey"}
COMMANDS = ("deploy", "delete", "revoke", "operator", "netkey", "other")


def command_name(record: Record) -> str:
    """The command an operator record carries: deploy, delete, revoke, operator, netkey (or other)."""
    if record.kind == DESIRED_KIND and record.deleted:
        return "delete"
    return _COMMANDS.get(record.kind, "other")


class EventRecorder:
    """Turns this node's core events into log entries (a runtime subscriber) and counts what it
    saw (the refusals it did not record again included)."""

    def __init__(
        self,
        log: EventLog,
        *,
        refused_regions: Callable[[str], tuple[str, str] | None] = lambda node_id: None,
        clock_s: Callable[[], float] | None = None,
        replica_error: Callable[[str], str | None] = lambda deployment: None,
    ) -> None:
        self.log = log
        self._ctx = Context(replica_error)
        self._refused_regions = refused_regions
        self._clock_s = clock_s
        self._refusals: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self.join_refusals = 0  # every refusal seen (GET /metrics)
        self.commands: collections.Counter[str] = collections.Counter()  # accepted, by command

    def _now_s(self) -> float:
        return self._clock_s() if self._clock_s is not None else self.log.now_s()

    def on_event(self, event: object) -> None:
        """A runtime subscriber: record what `event` means (nothing for an event no source knows)."""
        if isinstance(event, AdmissionRefused):
            self._refused(event)
            return
        translate = SOURCES.get(type(event))
        if translate is not None:
            self.log.record_all(translate(event, self._ctx))

    def _refused(self, event: AdmissionRefused) -> None:
        self.join_refusals += 1
        key = (event.node_id, event.reason)
        now_s = self._now_s()
        last_s = self._refusals.get(key)
        if last_s is not None and now_s - last_s < REFUSAL_REPEAT_S:
            return
        self._refusals.pop(key, None)
        self._refusals[key] = now_s
        while len(self._refusals) > REFUSALS_REMEMBERED_MAX:
            self._refusals.popitem(last=False)
        reason = describe_refusal(event.reason, self._refused_regions(event.node_id))
        details = (("refusal", event.reason),)
        self.log.record(Observation("join_refused", event.node_id, reason, details))

    def command_accepted(self, record: Record) -> None:
        """An operator's record this node accepted through its API (new here)."""
        command = command_name(record)
        self.commands[command] += 1
        details = (("command", command), ("record_kind", record.kind), ("version", record.version))
        reason = f"{command} {record.kind}/{record.key} version {record.version} by {record.author}"
        self.log.record(Observation("command_accepted", f"{record.kind}/{record.key}", reason, details))
