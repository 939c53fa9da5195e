"""The node behind `murmur agent`: the API's service over the gossip core, its events
(persisted, logged), inventory publishing and mDNS finds. mesh/service/launch.py starts it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.election import ElectionCore
from consensus.events import ConfigChanged, LeaderChanged
from gossip.events import (
    AdmissionRefused,
    BroadcastDelivered,
    Event,
    GatewayChanged,
    IncarnationChanged,
    MemberChanged,
    RecordsAccepted,
    Revoked,
)
from gossip.keyholding import REPORT_DELAY_S
from gossip.kinds import INVENTORY_KIND, NETKEY_KIND, REBALANCE_KIND, REVOCATION_KIND
from gossip.netkey import NETKEY_SLOT, decode_notice, network_key_id
from gossip.node import MemberView, RegionSummary
from gossip.records import Record, key_id, sign_record
from gossip.trust import StaticTrust
from inference import inventory
from inference.manifest import ARTIFACT_SIZE_MAX_BYTES, Deployment
from inference.operator_records import rebalance_generation
from inference.placing import PlacementCore
from inference.plan import plan_region
from mesh.netaddr import split_hostport
from mesh.service.admission import describe_refusal
from mesh.service.api import ReceivedBroadcast
from mesh.service.artifacts import ArtifactStore
from mesh.service.artifactsync import ARTIFACT_BUDGET_BYTES, ArtifactKeeper
from mesh.service.discovery import Peer
from mesh.service.election import own_region_json
from mesh.service.eventkinds import EventRecorder
from mesh.service.events import EVENTS_MAX, EVENTS_MAX_AGE_S, EventLog
from mesh.service.fetcher import Fetcher
from mesh.service.inventory import INVENTORY_CHECK_S, collect
from mesh.service.metrics import POOLS, NodeCollector, Readings, node_families, node_registry
from mesh.service.modelhost import INFERENCE_THREADS_DEFAULT, INTRA_OP_THREADS_DEFAULT, ModelHost
from mesh.service.netkeys import key_status, open_sealed_key
from mesh.service.observeapi import EventStreams
from mesh.service.placements import log_placement_event, own_placement_json, region_plan_json
from mesh.service.runtime import Runtime
from mesh.service.signedbody import SubmitRefused
from mesh.service.store import PeerRecord, Store, StoreError
from mesh.trust.identity import Identity
from node.core import Node
from node.netkeys import NetKeyConfig, NetKeyCore

log = logging.getLogger("murmur.agent")

LEAVE_LINGER_S = 1.0
PEERS_SAVE_INTERVAL_S = 5.0
RECEIVED_BROADCASTS_MAX = 256
KNOWN_PEERS_AS_SEEDS_MAX = 16
REFUSALS_LOGGED_MAX = 1024  # (node, reason) pairs already logged, so a retrying intruder logs once
DISCOVERED_PEERS_MAX = 256
REJOIN_DISCOVERED_AFTER_S = 10.0


class AgentError(Exception):
    """The agent cannot start; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """`murmur agent`'s command line."""

    data_dir: Path
    token: Path
    region: str
    bind: str
    api: str
    seeds: tuple[str, ...] = ()
    profile: str = "lan"
    debug_hooks: bool = False
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()  # empty: the --bind address
    labels: tuple[tuple[str, str], ...] = ()  # --label k=v, in order
    events_max: int = EVENTS_MAX  # --events-max: the event log's ring buffer
    events_max_age_s: float = EVENTS_MAX_AGE_S  # --events-max-age
    intra_op_threads: int = INTRA_OP_THREADS_DEFAULT  # --intra-op-threads: per inference
    inference_threads: int = INFERENCE_THREADS_DEFAULT  # --inference-threads: inferences at once
    artifact_budget_bytes: int = ARTIFACT_BUDGET_BYTES  # --artifact-budget-bytes
    inference_token_file: Path | None = None  # --inference-token-file: /v2 needs Bearer <token>
    # --keyring-report-delay: this node says which network keys it holds (its `keyring` record)
    # a random time in [min, max] seconds after they change.
    keyring_report_delay_s: tuple[float, float] = REPORT_DELAY_S

    def netkey_config(self) -> NetKeyConfig:
        """The network-key core's timings (node/netkeys.py), with this agent's report delay."""
        low, high = self.keyring_report_delay_s
        return NetKeyConfig(report_delay_min_s=low, report_delay_max_s=high)


class Agent:
    """A running node; the API's NodeService."""

    def __init__(
        self,
        options: AgentOptions,
        identity: Identity,
        store: Store,
        node: Node,
        runtime: Runtime,
        trust: StaticTrust | None = None,
    ) -> None:
        self.options = options
        self.trust = trust if trust is not None else StaticTrust()
        self.identity = identity
        self.store = store
        self.node = node
        self.runtime = runtime
        self._received: collections.deque[ReceivedBroadcast] = collections.deque(
            maxlen=RECEIVED_BROADCASTS_MAX
        )
        self._peers_dirty = False  # peers are saved in batches, not on every event
        # mDNS finds: node id -> (gossip addr, monotonic time of our join through it); bounded.
        self._discovered: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._inventory: inventory.Inventory | None = None  # the one last published
        self._inventory_published_s = 0.0  # monotonic
        self._inventory_refused_logged = False
        self._refusals_logged: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.revoked = False
        self.artifacts = ArtifactStore(options.data_dir / "artifacts", size_max_bytes=ARTIFACT_SIZE_MAX_BYTES)
        self.on_revoked: Callable[[], None] | None = None  # run_agent stops the agent
        self.api_counters: collections.Counter[str] = collections.Counter()  # the API guard's (launch.py)
        self._member_hosts: frozenset[str] | None = None  # None: recompute (a member changed)
        runtime.is_member_host = self.is_member_host
        runtime.subscribe(self._on_event)
        self.netkeys: NetKeyCore | None = None  # the network-key core (launch.py hosts it)
        # What this node saw (GET /v1/events, its stream) and its metrics (GET /metrics):
        # mesh/service/observeapi.py serves them, launch.py adds its routes.
        self.events = EventLog(
            identity.node_id, max_events=options.events_max, max_age_s=options.events_max_age_s
        )
        self.models: ModelHost | None = None  # the model host (launch.py creates it)
        self.recorder = EventRecorder(
            self.events, refused_regions=node.state.refused_regions, replica_error=self.replica_error
        )
        runtime.subscribe(self.recorder.on_event)
        self.event_streams = EventStreams(self.events, options.region)
        self.metrics = NodeCollector([lambda: node_families(self.metric_readings())])
        self.metrics_registry = node_registry(self.metrics)
        self.election: ElectionCore | None = None  # the region's election core (launch.py hosts it)
        self.placement: PlacementCore | None = None  # the region's placement core (launch.py hosts it)
        # Artifacts from peers (mesh/service/fetcher.py) for this node's replicas (launch.py starts them).
        self.fetcher: Fetcher | None = None
        self.artifact_keeper: ArtifactKeeper | None = None
        self._inventory_nudge = asyncio.Event()  # held artifacts changed: collect now
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (tests that drive it synchronously)
            self._loop = None
        runtime.subscribe(log_placement_event)

    # --- NodeService -------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def region(self) -> str:
        return self.options.region

    @property
    def debug_hooks(self) -> bool:
        return self.options.debug_hooks

    def members(self, pool: str) -> Sequence[MemberView]:
        return self.node.members(pool)

    def summaries(self) -> Mapping[str, RegionSummary]:
        return self.node.summaries()

    def health(self) -> dict[str, Any]:
        states = collections.Counter(str(m.state) for m in self.node.members("region"))
        return {
            "node_id": self.node_id,
            "region": self.region,
            "addr": self.runtime.addr,
            "is_gateway": self.node.is_gateway,
            "incarnation": self.node.incarnation,
            "public_key": base64.b64encode(self.identity.public_key).decode("ascii"),
            "admitted": self.node.state.is_admitted(self.node_id) and not self.revoked,
            "admission_problem": self.node.admission_problem,
            "members": {state: states.get(state, 0) for state in ("alive", "suspect", "dead", "left")},
            "regions": {name: s.alive for name, s in sorted(self.node.summaries().items())},
            "counters": {
                "runtime": dict(self.runtime.counters),
                "core": dict(self.node.counters),
                "api": dict(self.api_counters),
            },
        }

    def is_member_host(self, host: str) -> bool:
        """Whether `host` is the address of another member alive or suspect in either pool.

        The gossip port keeps room for these (mesh/service/connlimits.py). This
        node's own address is not one: on a shared host, a local stranger is a stranger.
        """
        if self._member_hosts is None:
            hosts: set[str] = set()
            for pool in ("region", "fleet"):
                for m in self.node.members(pool):
                    if m.node_id != self.node_id and str(m.state) in ("alive", "suspect"):
                        with contextlib.suppress(ValueError):
                            hosts.add(split_hostport(m.addr)[0])
            self._member_hosts = frozenset(hosts)
        return host in self._member_hosts

    def broadcast(self, payload: bytes) -> tuple[str, int]:
        return self.runtime.drive(lambda now: self.node.broadcast(now, payload))

    def received_broadcasts(self) -> Sequence[ReceivedBroadcast]:
        return list(self._received)

    def operator_key(self, author: str) -> bytes | None:
        """An operator key that may submit commands now: root, or granted and not removed."""
        state = self.node.state
        return state.public_key(author) if state.is_active_operator(author) else None

    def is_operator(self, author: str) -> bool:
        return self.node.state.is_operator(author)

    def is_root_operator(self, author: str) -> bool:
        return self.node.state.is_root_operator(author)

    def operators(self) -> list[dict[str, Any]]:
        """Root keys (from the join token) and granted ones, with whether they may act now."""
        rows = [
            {"id": key_id(k), "role": "root", "active": True, "public_key": base64.b64encode(k).decode()}
            for k in self.trust.operator_keys()
        ]
        for author, (public_key, active) in self.node.state.operators().items():
            rows.append(
                {
                    "id": author,
                    "role": "granted",
                    "active": active and not self.node.state.is_revoked(author),
                    "public_key": base64.b64encode(public_key).decode(),
                }
            )
        return rows

    def revocations(self) -> list[dict[str, Any]]:
        return [
            {
                "node_id": r.key,
                "version": r.version,
                "author": r.author,
                "reason": r.payload.decode("utf-8", errors="replace"),
            }
            for r in self.node.state.records(REVOCATION_KIND)
        ]

    def record(self, kind: str, key: str) -> Record | None:
        return self.node.state.get(kind, key)

    def records(self, kind: str) -> Sequence[Record]:
        return self.node.state.records(kind)

    def member(self, node_id: str) -> MemberView | None:
        """A member of this node's region or, on a gateway, of the fleet pool; None if neither."""
        return self.node.member(node_id, "region") or self.node.member(node_id, "fleet")

    def state_summary(self) -> dict[str, Any]:
        state = self.node.state
        kinds = collections.Counter(r.kind for r in state.records(include_deleted=True))
        tombstones = sum(1 for r in state.records(include_deleted=True) if r.deleted)
        return {
            "node_id": self.node_id,
            "region": self.region,
            "digest": {
                author: {"version": version, "fingerprint": f"{fp:016x}"}
                for author, (version, fp) in state.digest().items()
            },
            "records": dict(sorted(kinds.items())),
            "tombstones": tombstones,
            "persisted_records": self.store.record_count(),
            "storage": self.store.damage,
            "counters": dict(sorted(state.counters.items())),
        }

    def submit_record(self, record: Record) -> bool:
        """An operator's record from the API: persist (synced), then publish; True if new here.

        False: this node already holds exactly this record (a retried request). A
        record the store would refuse as stale raises SubmitRefused before anything
        is written.
        """
        held = self.node.state.get(record.kind, record.key)
        if held == record:
            return False
        if held is not None and held.version >= record.version:
            raise SubmitRefused(
                409,
                f"{record.kind}/{record.key}: this node already holds version {held.version} by "
                f"{held.author}, not older than {record.version}; re-run the command (the CLI signs "
                "above the latest version it reads from GET /v1/state)",
            )
        try:
            self.store.save_records([record])  # committed with synchronous=FULL before the 202
        except (StoreError, OSError, sqlite3.Error) as exc:
            log.error("cannot persist operator record %s/%s: %s", record.kind, record.key, exc)
            raise SubmitRefused(
                503, f"this node cannot write its database ({exc}); nothing was accepted, use another node"
            ) from None
        accepted = self.runtime.drive(lambda now: self.node.publish_record(now, record))
        if not accepted:
            counters = {k: v for k, v in self.node.state.counters.items() if k.startswith("drop_") and v}
            raise SubmitRefused(
                422,
                f"{record.kind}/{record.key}: the state store refused the record ({counters}); "
                "check that it is signed by an operator key of this cluster",
            )
        self.recorder.command_accepted(record)
        return True

    def metric_readings(self) -> Readings:
        """What GET /metrics reports, read now (mesh/service/metrics.py)."""
        by_kind: collections.Counter[str] = collections.Counter()
        tombstones = 0
        for r in self.node.state.records(include_deleted=True):
            if r.deleted:
                tombstones += 1
            else:
                by_kind[r.kind] += 1
        notice = self.netkeys.notice if self.netkeys is not None else None
        return Readings(
            node_id=self.node_id,
            region=self.region,
            is_gateway=self.node.is_gateway,
            incarnation=self.node.incarnation,
            member_states={pool: [str(m.state) for m in self.node.members(pool)] for pool in POOLS},
            core_counters=self.node.counters,
            runtime_counters=dict(self.runtime.counters),
            records_by_kind=by_kind,
            tombstones=tombstones,
            events_by_kind=dict(self.events.counts_by_kind),
            events_held=len(self.events),
            commands_accepted=dict(self.recorder.commands),
            join_refusals=self.recorder.join_refusals,
            event_streams_open=len(self.event_streams.open),
            stream_counters=dict(self.event_streams.counters),
            network_key_epoch=notice.epoch if notice is not None else 0,
        )

    # --- the region's election ---------------------------------------------------

    def own_region(self) -> dict[str, Any]:
        """This node's region: leader, era, term, voters, this node's role (GET /v1/regions)."""
        core = self.election
        if core is None:
            raise SubmitRefused(503, "this node does not run the election core")
        alive = sum(1 for m in self.node.members("region") if str(m.state) == "alive")
        return self.runtime.drive(lambda now: own_region_json(core, now, alive))

    def own_placement(self) -> dict[str, Any]:
        """This node's region's applied placement, replicas and counts (GET /v1/placements)."""
        core = self.placement
        if core is None:
            raise SubmitRefused(503, "this node does not run the placement core")
        generation = rebalance_generation(self.node.state.records(REBALANCE_KIND), self.region)
        # Reads only: the core's state is not changed.
        return own_placement_json(core, generation, self.models, self._api_of)

    def _api_of(self, node_id: str) -> str | None:
        member = self.node.member(node_id)
        return member.api_addr if member is not None else None

    def replica_error(self, deployment: str) -> str | None:
        """Why this node's replica of `deployment` failed to load or warm up, or None."""
        return self.models.error(deployment) if self.models is not None else None

    def plan(self, deployment: Deployment) -> dict[str, Any]:
        """What `deployment` would do in this node's region (POST /v1/plan); nothing changes."""
        core = self.placement
        if core is None:
            raise SubmitRefused(503, "this node does not run the placement core")
        return region_plan_json(plan_region(core.region, deployment, *core.place_inputs()), core.node_id)

    # --- the network key ----------------------------------------------------------

    def netkey_status(self) -> dict[str, Any]:
        if self.netkeys is None:
            raise SubmitRefused(503, "this node does not run the network-key core")
        return key_status(self.netkeys, self.node_id, self.identity.public_key)

    def rotate_network_key(self, record: Record, sealed_key: bytes | None) -> bool:
        """An operator's `netkey` record (checked by the API), with the key it adds sealed to us (a
        rotation, an install; None for use and remove): install the key (persisted before this
        returns), then persist and publish the record; True if new."""
        core = self.netkeys
        if core is None:
            raise SubmitRefused(503, "this node does not run the network-key core")
        notice = decode_notice(record.payload)  # the API checked it
        if self.node_id in notice.revoked:
            raise SubmitRefused(
                400, f"this rotation revokes this very node ({self.node_id}); send it to another"
            )
        held = core.notice
        held_record = self.node.state.get(NETKEY_KIND, NETKEY_SLOT)
        if (held is not None and notice.epoch <= held.epoch) or (
            held_record is not None and held_record.version >= record.version
        ):
            raise SubmitRefused(
                409,
                f"epoch {notice.epoch} is not newer than the network-key record this node holds (epoch "
                f"{held.epoch if held else 0}); run the murmur keys command again (it reads the epoch first)",
            )
        key = None
        if sealed_key is not None:
            key = open_sealed_key(self.identity.signing_key, sealed_key)
            if key is None:
                raise SubmitRefused(
                    400,
                    f"the key is not sealed to this node's public key (node {self.node_id}); murmur keys "
                    "seals it to the key GET /v1/netkey shows",
                )
            if network_key_id(key) in core.retired_ids:
                raise SubmitRefused(
                    409,
                    f"key {network_key_id(key)} was removed from this mesh, and a removed key never comes "
                    "back (anyone who held it may still have it); make a new one: murmur keys install",
                )
        problem = self.runtime.drive(lambda now: self.node.command(now, lambda t: core.apply(t, record, key)))
        if problem is not None:
            raise SubmitRefused(409 if "does not hold key" in problem else 400, problem)
        log.warning(
            "network key %s by an operator at this node: epoch %d, primary %s, keys %s (%s)",
            "rotated" if notice.stage == "rotate" else f"change ({notice.stage})",
            notice.epoch,
            notice.key_id,
            ", ".join(notice.wanted_ids),
            notice.reason or "no reason given",
        )
        return self.submit_record(record)

    # --- inventory -----------------------------------------------------------------

    def inventory_version(self) -> int:
        """Above everything this node signed before, even across restarts (unix ms, or latest + 1)."""
        latest = self.node.state.latest_version(self.node_id)
        return max(int(time.time() * 1000), (latest or 0) + 1)

    def publish_inventory(self, inv: inventory.Inventory, *, urgent: bool = False) -> bool:
        """Sign `inv` as this node's inventory record and publish it; True if the store took it.

        urgent: a meaningful change, sent to every region member twice (a refresh once)."""
        record = sign_record(
            self.identity.signing_key,
            INVENTORY_KIND,
            self.node_id,
            self.inventory_version(),
            inventory.inventory_scope(self.region),
            inventory.encode(inv),
        )
        before = self.node.state.counters
        accepted: bool = self.runtime.drive(lambda now: self.node.publish_record(now, record, urgent=urgent))
        if not accepted and not self._inventory_refused_logged:
            self._inventory_refused_logged = True
            after = self.node.state.counters
            # One line a person reads: the drop reason(s) this refusal counted; the rest at DEBUG.
            reasons = [k for k in sorted(after) if k.startswith("drop_") and after[k] > before.get(k, 0)]
            log.warning(
                "own inventory record v%d was refused by this node's state store (%s); is this node "
                "admitted? GET /v1/health shows admitted and admission_problem",
                record.version,
                ", ".join(reasons) or "no drop counted",
            )
            log.debug("state store counters after the refusal: %s", dict(sorted(after.items())))
        return accepted

    def collect_inventory(self) -> inventory.Inventory:
        inv = collect(dict(self.options.labels), self.region, self.options.data_dir)
        keeper = self.artifact_keeper
        if keeper is not None:
            inv = dataclasses.replace(inv, artifacts=keeper.listed())
        return dataclasses.replace(inv, models=self.loaded_models())

    def loaded_models(self) -> tuple[str, ...]:
        """`model@version` of each model this node has loaded and warmed up (the inventory's
        `models`), sorted, at most inventory.MODELS_LISTED_MAX."""
        rows = self.models.status() if self.models is not None else []
        names = {
            f"{row['model']}@{row['version']}"[: inventory.TEXT_MAX_CHARS]
            for row in rows
            if row.get("state") == "ready" and "model" in row
        }
        return tuple(sorted(names)[: inventory.MODELS_LISTED_MAX])

    def artifacts_changed(self) -> None:
        """An artifact was stored or deleted: peers learn it from the next inventory, now.
        Safe from any thread (an upload commits in one)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inventory_nudge.set)

    def refresh_inventory(self, now_s: float, cur: inventory.Inventory | None = None) -> bool:
        """Collect (unless given), and publish if should_publish says so; True if published."""
        if cur is None:
            cur = self.collect_inventory()
        if not inventory.should_publish(self._inventory, cur, self._inventory_published_s, now_s):
            return False
        self.publish_inventory(cur, urgent=inventory.changed_meaningfully(self._inventory, cur))
        # Remember it even if refused: retry at the refresh interval, not every check.
        self._inventory = cur
        self._inventory_published_s = now_s
        return True

    async def keep_publishing_inventory(self) -> None:
        while True:
            try:
                # In a thread: the first onnxruntime import takes a moment; the loop keeps gossiping.
                cur = await asyncio.to_thread(self.collect_inventory)
                self.refresh_inventory(time.monotonic(), cur)
            except Exception:  # a probe or a refusal must never stop the loop
                log.exception("inventory refresh failed; retrying in %.0f s", INVENTORY_CHECK_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._inventory_nudge.wait(), INVENTORY_CHECK_S)
            self._inventory_nudge.clear()

    # --- events --------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        match event:
            case IncarnationChanged(incarnation=incarnation):
                self.store.set_incarnation(incarnation)
                log.info("own incarnation is now %d (persisted)", incarnation)
            case MemberChanged(pool=pool, node_id=node_id, addr=addr, state=state, incarnation=inc):
                log.info("%s pool: member %s (%s) is %s, incarnation %d", pool, node_id, addr, state, inc)
                self._peers_dirty = True
                self._member_hosts = None
            case GatewayChanged(is_gateway=is_gateway):
                log.info(
                    "this node %s a gateway of region %s",
                    "is now" if is_gateway else "is no longer",
                    self.region,
                )
            case RecordsAccepted(records=records):
                try:
                    self.store.save_records(records)
                except (StoreError, OSError, sqlite3.Error) as exc:
                    # The records are held in memory and anti-entropy resends them; a
                    # restart before the disk recovers re-learns them from peers.
                    log.error("cannot persist %d records: %s", len(records), exc)
                    return
                if not records:
                    return
                # One line per batch: a join's anti-entropy may bring thousands of records.
                first = records[0]
                log.info(
                    "%d new records persisted (first: %s/%s v%d by %s)",
                    len(records),
                    first.kind,
                    first.key,
                    first.version,
                    first.author,
                )
            case AdmissionRefused(node_id=node_id, reason=reason):
                if (node_id, reason) not in self._refusals_logged:
                    self._refusals_logged[(node_id, reason)] = None
                    while len(self._refusals_logged) > REFUSALS_LOGGED_MAX:
                        self._refusals_logged.popitem(last=False)
                    regions = self.node.state.refused_regions(node_id)
                    log.warning("refused to admit node %s: %s", node_id, describe_refusal(reason, regions))
            case Revoked(node_id=node_id):
                if node_id == self.node_id:
                    log.error("this node was revoked by an operator: it leaves the mesh and stops")
                    self.revoked = True
                    if self.on_revoked is not None:
                        self.on_revoked()
                else:
                    log.warning("node %s was revoked by an operator: expelled, refused from now on", node_id)
            case LeaderChanged(region=region, era=era, term=term, leader_id=leader_id):
                if leader_id == self.node_id:
                    log.info("this node leads region %s (term %d of era %s)", region, term, era)
                else:
                    log.info("region %s: leader is %s (term %d)", region, leader_id or "unknown", term)
            case ConfigChanged(region=region, era=era, config=config):
                log.info(
                    "region %s: voters are %s (epoch %d, era %s)",
                    region,
                    ", ".join(config.voters),
                    config.epoch,
                    era,
                )
            case BroadcastDelivered(origin_id=origin_id, seq=seq, payload=payload):
                log.info("broadcast %s/%d delivered (%d bytes)", origin_id, seq, len(payload))
                self._received.append(ReceivedBroadcast(origin_id, seq, payload, time.time()))

    def on_discovered(self, peer: Peer) -> None:
        """A peer of our cluster seen by mDNS: join through it unless it is already an alive member.

        mDNS only finds peers; whether they are alive is SWIM's call, so this never
        changes a member's state, it only starts a join exchange.
        """
        if any(m.node_id == peer.node_id and str(m.state) == "alive" for m in self.node.members("region")):
            return
        if any(m.node_id == peer.node_id and str(m.state) == "alive" for m in self.node.members("fleet")):
            return
        now = time.monotonic()
        previous = self._discovered.get(peer.node_id)
        if (
            previous is not None
            and previous[0] == peer.gossip_addr
            and now - previous[1] < REJOIN_DISCOVERED_AFTER_S
        ):
            return  # a join through it is under way (the core retries it)
        self._discovered[peer.node_id] = (peer.gossip_addr, now)
        self._discovered.move_to_end(peer.node_id)
        while len(self._discovered) > DISCOVERED_PEERS_MAX:
            self._discovered.popitem(last=False)
        log.info(
            "mDNS found %s (region %s) at %s: joining through it", peer.node_id, peer.region, peer.gossip_addr
        )
        self.runtime.drive(lambda now: self.node.join(now, [peer.gossip_addr]))

    def save_peers(self) -> None:
        """Persist the peers currently alive (they seed the next start)."""
        records: dict[str, PeerRecord] = {}
        for pool in ("region", "fleet"):
            for m in self.node.members(pool):
                if m.node_id != self.node_id and str(m.state) == "alive":
                    records[m.node_id] = PeerRecord(m.node_id, m.addr, m.region, m.api_addr)
        if records:
            self.store.save_peers(records.values())
        self._peers_dirty = False

    async def keep_saving_peers(self) -> None:
        while True:
            await asyncio.sleep(PEERS_SAVE_INTERVAL_S)
            if self._peers_dirty:
                self.save_peers()
