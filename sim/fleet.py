"""The simulated fleet: real composite nodes (node/core.py) on the engine, their names, addresses and regions.

The fleet is the engine's listener: it passes every core event to its
observers (sim/observer.py: its own views, then the metrics, the invariant
checkers, the admission watch, in registration order), and it is the one place
that creates, crashes, restarts, stalls and retires nodes and splits or heals
the network (sim/faults.py calls it), so the observers always hear about a
fault at the moment it happens.

Every node hosts an election core (consensus/election.py) for its region pool,
whose hard state lives in a MemoryStore the fleet keeps per node id: it
survives a crash and a restart of that node, as the agent's SQLite row does.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

import nacl.signing

from consensus.election import ElectionCore
from consensus.hardstate import MemoryStore
from consensus.peers import GossipElectionPeers
from consensus.timing import ElectionConfig
from gossip.admission import NONCE_BYTES, Invite, make_admission, sign_invite
from gossip.codec import POOL_REGION, alive_signing_bytes, encode_meta
from gossip.config import MembershipConfig
from gossip.events import Event, MemberState
from gossip.io import Sealer
from gossip.node import GossipNode, MemberView
from gossip.records import Record, key_id
from gossip.trust import Trust
from inference.kinds import CHECKED_KINDS
from inference.placing import PlacementCore
from inference.placing_ports import GossipPlacementMesh
from node.core import Node
from node.hosted import HostedCore
from sim.engine import Engine
from sim.network import Network
from sim.observer import AdmissionLog, Observer
from sim.placing import FleetPlacementMesh, FleetTrust, SimRuntime, load_rng
from sim.slot import NodeSlot
from sim.views import Views

ObserverT = TypeVar("ObserverT", bound=Observer)

PORT = 7946
# Addresses are 10.<region>.<x>.<y>: one /16 per region, 250 values per octet.
OCTET_VALUES = 250
REGIONS_MAX = OCTET_VALUES
ADDRS_PER_REGION = OCTET_VALUES * OCTET_VALUES
# Node identities (only with node_keys): sha256(domain + "<seed>/<index>") seeds each node's Ed25519 key.
NODE_KEY_DOMAIN = b"murmur-sim-node"
# Connection checks draw their handshakes from an RNG of their own, derived from the seed
# apart from the others (sim/run.py draws those in a fixed order).
CHECK_RNG_DOMAIN = "murmur-sim-conn-check"
WATCH_RNG_DOMAIN = "murmur-sim-watch"
# Keyed fleets (admission mode): the cluster id, when every node joined, and the invite's expiry.
SIM_CLUSTER_ID = "sim"
SIM_EPOCH_S = 1_700_000_000
SIM_INVITE_TTL_S = 86_400
# Each life of a node's election core draws its timeouts from an RNG of its own (derived from the
# seed, the node and the life), so adding the election leaves every other stream's draws as they were.
ELECTION_RNG_DOMAIN = "murmur-sim-election"


class FleetKeyPeers(GossipElectionPeers):
    """ElectionPeers for an unkeyed fleet: live members from gossip, keys from the fleet's table.

    A driver concern: without admissions (most scenarios model membership alone)
    gossip knows no member's key, so GossipElectionPeers.member_key would return
    None and no vote could be checked. Every simulated node has a deterministic
    Ed25519 key (Fleet.node_key); this adapter reads it where an agent would read
    the key its admission carries.
    """

    def __init__(self, gossip: GossipNode, keys: dict[str, bytes]) -> None:
        super().__init__(gossip)
        self._keys = keys

    def member_key(self, node_id: str) -> bytes | None:
        return self._keys.get(node_id)


def sim_invite(operator: nacl.signing.SigningKey, seed: int) -> Invite:
    """The one invite every node of a keyed simulated fleet joined with (no RNG draw)."""
    nonce = hashlib.sha256(b"murmur-sim-invite" + str(seed).encode()).digest()[:NONCE_BYTES]
    return sign_invite(operator, SIM_CLUSTER_ID, expires_at_s=SIM_EPOCH_S + SIM_INVITE_TTL_S, nonce=nonce)


def _addr(region: int, k: int) -> str:
    """The k-th address of a region's /16."""
    return f"10.{region}.{k // OCTET_VALUES}.{k % OCTET_VALUES + 1}:{PORT}"


def region_name(r: int, region_count: int) -> str:
    """The name of region index r: "r0".."r9", or zero-padded to sort well ("r00".."r99")."""
    width = len(str(max(region_count - 1, 0)))
    return f"r{r:0{width}d}"


class Fleet:
    """Every simulated node, the engine that drives them and who watches them."""

    def __init__(
        self,
        *,
        seed: int,
        region_count: int,
        network: Network,
        region_config: MembershipConfig,
        fleet_config: MembershipConfig,
        rng: random.Random,
        sealer: Sealer | None = None,
        nonce_rng: random.Random | None = None,
        trust: Trust | None = None,
        invite: Invite | None = None,
        elections: bool = True,
        election_config: ElectionConfig | None = None,
        placing: bool = True,
    ) -> None:
        """With an invite, every node has an Ed25519 identity (node_key), its id is the key's id,
        and it joins in admission mode with an admission record under that invite.

        elections: every node hosts an election core (False: gossip alone, for tests);
        placing: and a placement core after it (sim/placing.py)."""
        if not 1 <= region_count <= REGIONS_MAX:
            raise ValueError(f"regions must be between 1 and {REGIONS_MAX}, got {region_count}")
        self.seed = seed
        self.region_count = region_count
        self.region_names = [region_name(r, region_count) for r in range(region_count)]
        self.region_config = region_config
        self.fleet_config = fleet_config
        self.network = network
        # Node rngs and fault choices come from here, in a fixed order.
        self.rng = rng
        # Who may write signed records: shared, read-only, by every core (None: no one).
        self.trust = trust
        self.invite = invite
        self.node_keys = invite is not None
        self._admissions: dict[str, Record] = {}
        # node_keys: each node's signing key by node id, and the ids by creation index.
        self.signing_keys: dict[str, nacl.signing.SigningKey] = {}
        self._signed_claims: dict[tuple[str, int, str, str, str], bytes] = {}
        self._ids: dict[int, str] = {}
        self.engine = Engine(
            network,
            self,
            region_stream_timeout_s=region_config.stream_timeout_s,
            fleet_stream_timeout_s=fleet_config.stream_timeout_s,
            packet_max_bytes=min(region_config.packet_max_bytes, fleet_config.packet_max_bytes),
            stream_max_bytes=min(region_config.stream_max_bytes, fleet_config.stream_max_bytes),
            sealer=sealer,
            nonce_rng=nonce_rng,
            check_rng=random.Random(f"{CHECK_RNG_DOMAIN}/{seed}"),
            watch_rng=random.Random(f"{WATCH_RNG_DOMAIN}/{seed}"),
        )
        self.by_region: list[list[int]] = [[] for _ in range(region_count)]
        self.idx_of: dict[str, int] = {}
        self._next_addr = [0] * region_count
        self._next_id = 0
        # Slots that crashed (detection counts them) vs left gracefully or were retired.
        self.crashed: list[bool] = []
        self.left: list[bool] = []
        # Told to leave gracefully and not yet stopped or restarted.
        self.leaving: list[bool] = []
        # How many of each fault the run injected (sim/faults.py counts them).
        self.fault_counts: dict[str, int] = {
            "crashes": 0,
            "restarts": 0,
            "stalls": 0,
            "leaves": 0,
            "joins": 0,
            "partitions": 0,
            "intrusions": 0,
        }
        # The admission scenario: intruders (never members: left out of live()), revoked node
        # ids (their deaths are the operator's doing, not false), and its watch.
        self.outsiders: set[int] = set()
        self.revoked_ids: set[str] = set()
        self.watch: AdmissionLog | None = None
        # The cores each node hosts besides gossip and the election, made per node (None: none).
        self.hosted: Callable[[str, GossipNode], Sequence[HostedCore]] | None = None
        # The election: each node's live core, its hard state (kept across restarts), its lives.
        self.elections_on = elections
        self.election_config = election_config or ElectionConfig()
        self.elections: dict[str, ElectionCore] = {}
        self.election_stores: dict[str, MemoryStore] = {}
        self._election_lives: dict[str, int] = {}
        # Unkeyed fleets: each node's election key (keyed fleets use signing_keys) and the public keys.
        self._election_keys: dict[str, nacl.signing.SigningKey] = {}
        self.election_public_keys: dict[str, bytes] = {}
        # Placement: each node's live core and its runtime (sim/placing.py).
        self.placing_on = placing and elections
        self.placements: dict[str, PlacementCore] = {}
        self.runtimes: dict[str, SimRuntime] = {}
        if self.placing_on and trust is not None and not self.node_keys:
            # Unkeyed nodes' records (inventory, placement, replicas) verify with the fleet's table.
            self.trust = FleetTrust(trust, self.election_public_keys)
        # What each node sees, rebuilt from its events: the first observer, so every
        # other one reads views that already include the event it is told about.
        self.views = Views()
        self._observers: list[Observer] = []
        # The observers' on_event, bound once (the hottest call of a run), only where overridden.
        self._event_hooks: list[Callable[[float, NodeSlot, Event], None]] = []
        self.observe(self.views)

    def observe(self, observer: ObserverT) -> ObserverT:
        """Register an observer (before the first node exists, so it hears everything); returns it."""
        if self.engine.slots:
            raise ValueError("register observers before creating nodes, or they miss events")
        self._observers.append(observer)
        if type(observer).on_event is not Observer.on_event:
            self._event_hooks.append(observer.on_event)
        return observer

    # -- the engine's listener -------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        """A core reported an event."""
        for hook in self._event_hooks:
            hook(now, slot, event)

    def on_violation(self, now: float, kind: str, detail: str) -> None:
        """The engine saw a broken invariant (a core exception, an oversized packet, ...)."""
        for o in self._observers:
            o.on_violation(now, kind, detail)

    # -- queries -------------------------------------------------------------------------

    @property
    def slots(self) -> list[NodeSlot]:
        """Every node ever created, by index."""
        return self.engine.slots

    @property
    def now(self) -> float:
        """The virtual clock."""
        return self.engine.now

    def core(self, idx: int) -> Node:
        """The live core of node idx."""
        core = self.engine.slots[idx].core
        assert isinstance(core, Node), f"node {idx} is down"
        return core

    def live(self, region: int | None = None) -> list[int]:
        """Indexes of the fleet's nodes that are up (in one region, or all), in index order.

        Intruders (outsiders) are not the fleet's: they never count as live members."""
        slots = self.engine.slots
        pool = range(len(slots)) if region is None else self.by_region[region]
        if self.outsiders:
            return [i for i in pool if slots[i].up and i not in self.outsiders]
        return [i for i in pool if slots[i].up]

    def leaders(self, now: float) -> list[int]:
        """Indexes of the nodes that are up and lead their region with a lease, in index order."""
        slots = self.engine.slots
        return [i for i in self.live() if self.elections[slots[i].node_id].is_leader(now)]

    # -- creating nodes --------------------------------------------------------------------

    def new_addr(self, region: int) -> str:
        """A fresh, unique address in a region's /16."""
        k = self._next_addr[region]
        if k >= ADDRS_PER_REGION:
            raise ValueError(f"region {self.region_names[region]} ran out of addresses")
        self._next_addr[region] = k + 1
        return _addr(region, k)

    def node_key(self, n: int) -> nacl.signing.SigningKey:
        """The Ed25519 key of the n-th node created, derived from the seed (no RNG draw)."""
        return nacl.signing.SigningKey(hashlib.sha256(NODE_KEY_DOMAIN + f"{self.seed}/{n}".encode()).digest())

    def _identity(self, n: int) -> str:
        """The id of the n-th node created: "n00001", or its key's id with node_keys."""
        if not self.node_keys:
            # With placement, a node's records must verify (an author is its key's id): the node is
            # named by its key, as a keyed node is, though it joins without an admission.
            plain = self._keyed_id(n) if self.placing_on else f"n{n:05d}"
            if self.elections_on and plain not in self._election_keys:
                key = self.node_key(n)
                self._election_keys[plain] = key
                self.election_public_keys[plain] = bytes(key.verify_key)
            return plain
        node_id = self._ids.get(n)
        if node_id is None:
            key = self.node_key(n)
            node_id = key_id(bytes(key.verify_key))
            self._ids[n] = node_id
            self.signing_keys[node_id] = key
            self.election_public_keys[node_id] = bytes(key.verify_key)
        return node_id

    def _keyed_id(self, n: int) -> str:
        node_id = self._ids.get(n)
        if node_id is None:
            node_id = self._ids[n] = key_id(bytes(self.node_key(n).verify_key))
        return node_id

    def public_key(self, node_id: str) -> bytes:
        """A node's public key (b"" without node_keys)."""
        key = self.signing_keys.get(node_id)
        return bytes(key.verify_key) if key is not None else b""

    def admission(self, node_id: str, region: int) -> Record | None:
        """A keyed node's admission record (made once: a restart presents the same one)."""
        if self.invite is None:
            return None
        record = self._admissions.get(node_id)
        if record is None:
            record = make_admission(
                self.signing_keys[node_id],
                self.invite,
                region=self.region_names[region],
                admitted_at_s=SIM_EPOCH_S,
            )
            self._admissions[node_id] = record
        return record

    def _bad_admission(self, node_id: str, region: int, kind: str) -> Record:
        """An admission an honest node must refuse: its invite forged, expired, or another cluster's."""
        invite = self.invite
        if invite is None:
            raise ValueError("intruders need a keyed fleet (an invite)")
        key = self.signing_keys[node_id]
        name = self.region_names[region]
        mallory = nacl.signing.SigningKey(hashlib.sha256(b"murmur-sim-mallory" + node_id.encode()).digest())
        if kind == "forged":
            fake = sign_invite(
                mallory, invite.cluster_id, expires_at_s=invite.expires_at_s, nonce=invite.nonce
            )
            return make_admission(
                key, replace(invite, signature=fake.signature), region=name, admitted_at_s=SIM_EPOCH_S
            )
        if kind == "expired":
            return make_admission(key, invite, region=name, admitted_at_s=invite.expires_at_s + 1)
        if kind == "other_cluster":
            other = sign_invite(mallory, "elsewhere", expires_at_s=invite.expires_at_s, nonce=invite.nonce)
            return make_admission(key, other, region=name, admitted_at_s=SIM_EPOCH_S)
        raise ValueError(f"unknown intruder kind {kind!r}")

    def _build_core(
        self, node_id: str, addr: str, region: int, incarnation: int, views: Sequence[MemberView] = ()
    ) -> Node:
        """A node's core (the one place one is made); with views, warm-started with that region view."""
        gossip = GossipNode(
            node_id,
            addr,
            self.region_names[region],
            random.Random(self.rng.getrandbits(64)),
            region_config=self.region_config,
            fleet_config=self.fleet_config,
            incarnation=incarnation,
            now=self.engine.now,
            trust=self.trust,
            admission=self.admission(node_id, region),
            node_key=self.signing_keys.get(node_id),
            kinds=CHECKED_KINDS,
        )
        if views:
            if self.node_keys:
                # Admission mode: the node already holds its region's admissions (verified
                # by its store like any others), so restore_view lets the members in.
                gossip.state.restore(
                    record
                    for v in views
                    if v.node_id != node_id and (record := self.admission(v.node_id, region)) is not None
                )
            gossip.restore_view(self.engine.now, views, self._claims(views) if self.node_keys else None)
        hosted: list[HostedCore] = []
        if self.elections_on:
            election = self._election(node_id, region, gossip)
            hosted.append(election)
            if self.placing_on:
                hosted.append(self._placement(node_id, region, gossip, election))
        if self.hosted is not None:
            hosted.extend(self.hosted(node_id, gossip))
        return Node(gossip, hosted)

    def _election(self, node_id: str, region: int, gossip: GossipNode) -> ElectionCore:
        """A node's election core, over the hard state it kept in earlier lives."""
        store = self.election_stores.setdefault(node_id, MemoryStore())
        life = self._election_lives[node_id] = self._election_lives.get(node_id, 0) + 1
        key = self.signing_keys.get(node_id) or self._election_keys[node_id]
        peers = (
            GossipElectionPeers(gossip)
            if self.node_keys
            else FleetKeyPeers(gossip, self.election_public_keys)
        )
        core = ElectionCore(
            node_id,
            self.region_names[region],
            random.Random(f"{ELECTION_RNG_DOMAIN}/{self.seed}/{node_id}/{life}"),
            self.election_config,
            store,
            peers,
            key,
            now=self.engine.now,
        )
        self.elections[node_id] = core
        return core

    def _placement(
        self, node_id: str, region: int, gossip: GossipNode, election: ElectionCore
    ) -> PlacementCore:
        """A node's placement core, with a runtime of this life (its load times drawn apart)."""
        runtime = self.runtimes[node_id] = SimRuntime(
            load_rng(self.seed, node_id, self._election_lives[node_id])
        )
        mesh = (
            GossipPlacementMesh(gossip)
            if self.node_keys
            else FleetPlacementMesh(gossip, self.election_public_keys)
        )
        core = PlacementCore(
            node_id,
            self.region_names[region],
            self.node_signing_key(node_id),
            mesh,
            election,
            runtime,
            now=self.engine.now,
        )
        self.placements[node_id] = core
        return core

    def node_signing_key(self, node_id: str) -> nacl.signing.SigningKey:
        """The key a node signs its own records with (its identity, or its election key unkeyed)."""
        return self.signing_keys.get(node_id) or self._election_keys[node_id]

    def _claims(self, views: Sequence[MemberView]) -> dict[str, bytes]:
        """Each keyed member's own signature of the alive claim its view shows (signed once)."""
        out: dict[str, bytes] = {}
        for v in views:
            claim = (v.node_id, v.incarnation, v.addr, v.region, v.api_addr)
            sig = self._signed_claims.get(claim)
            if sig is None:
                meta = encode_meta(v.region, v.api_addr)
                data = alive_signing_bytes(POOL_REGION, v.node_id, v.incarnation, v.addr, meta)
                sig = self._signed_claims[claim] = self.signing_keys[v.node_id].sign(data).signature
            out[v.node_id] = sig
        return out

    def spawn(
        self,
        region: int,
        views: Sequence[MemberView] = (),
        *,
        drive: bool = True,
        intruder: str | None = None,
    ) -> NodeSlot:
        """Create a new node in a region; with views, warm-started with that region view.

        With drive False its first output waits for `engine.drive` (so a warm
        start can create every node before any of them sends). An intruder (a
        kind of sim.admission.INTRUDER_KINDS) has the network key but a bad admission.
        """
        node_id = self._identity(self._next_id)
        self._next_id += 1
        if intruder is not None:
            self._admissions[node_id] = self._bad_admission(node_id, region, intruder)
        addr = self.new_addr(region)
        core = self._build_core(node_id, addr, region, 0, views)
        idx = len(self.engine.slots)
        self.idx_of[node_id] = idx
        self.by_region[region].append(idx)
        self.crashed.append(False)
        self.left.append(False)
        self.leaving.append(False)
        for o in self._observers:
            o.on_spawn(idx, node_id, region, views)
        slot = self.engine.add_node(node_id, addr, region, core, drive=drive)
        if intruder is not None:
            self.outsiders.add(idx)
        return slot

    def warm_start(self, nodes: int) -> None:
        """Create a converged fleet: every node starts with its region's members alive.

        Nodes are spread over regions as evenly as possible (the first regions get
        one more). Gateways are left to the cores' own deterministic choice.
        """
        if nodes < self.region_count:
            raise ValueError(f"need at least one node per region: {nodes} nodes, {self.region_count} regions")
        base, extra = divmod(nodes, self.region_count)
        for r in range(self.region_count):
            count = base + (1 if r < extra else 0)
            first = self._next_id
            ids = [self._identity(first + k) for k in range(count)]
            start = self._next_addr[r]
            addrs = [_addr(r, start + k) for k in range(count)]
            name = self.region_names[r]
            views = [
                MemberView(i, a, name, MemberState.ALIVE, 1, False, "")
                for i, a in zip(ids, addrs, strict=True)
            ]
            for k in range(count):
                slot = self.spawn(r, views, drive=False)
                assert slot.node_id == ids[k] and slot.addr == addrs[k]
        for idx in range(len(self.engine.slots)):
            self.engine.drive(idx)

    def cold_start(self, nodes: int) -> None:
        """Create a fleet of cold nodes: no restored view, every one alone until it joins.

        The same ids, addresses and spread over regions as warm_start; what a site
        looks like right after a power cut (scenario cold-start).
        """
        if nodes < self.region_count:
            raise ValueError(f"need at least one node per region: {nodes} nodes, {self.region_count} regions")
        base, extra = divmod(nodes, self.region_count)
        for r in range(self.region_count):
            for _ in range(base + (1 if r < extra else 0)):
                self.spawn(r, drive=False)
        for idx in range(len(self.engine.slots)):
            self.engine.drive(idx)

    def seeds_elsewhere(self, idx: int, count: int) -> list[str]:
        """Join seeds for node idx only in other regions: `count` live nodes drawn from the fleet's rng."""
        region = self.engine.slots[idx].region
        candidates = [i for i in self.live() if self.engine.slots[i].region != region]
        picked = self.rng.sample(candidates, min(count, len(candidates)))
        return [self.engine.slots[i].addr for i in picked]

    def seeds_for(self, idx: int) -> list[str]:
        """Join seeds for node idx: a live node of its own region and one of region 0."""
        region = self.engine.slots[idx].region
        seeds: list[str] = []
        for r in (region, 0):
            candidates = [i for i in self.live(r) if i != idx and not self.engine.slots[i].stalled]
            if candidates:
                addr = self.engine.slots[self.rng.choice(candidates)].addr
                if addr not in seeds:
                    seeds.append(addr)
        return seeds

    # -- faults (called by sim/faults.py) ---------------------------------------------------

    def crash(self, idx: int, *, host_lost: bool = True) -> None:
        """Node idx stops at once: its whole host is lost (silence), or (host_lost False)
        only its process, on a host that refuses connections to its port."""
        if not self.engine.slots[idx].up:
            return
        self.crashed[idx] = True
        now = self.engine.now
        for o in self._observers:
            o.on_crash(now, idx)
        self._stop(idx, host_lost=host_lost)

    def leave(self, idx: int) -> None:
        """Node idx leaves gracefully now; `retire` stops it once its notice is out."""
        if not self.engine.slots[idx].up:
            return
        self.leaving[idx] = True
        self.engine.call_node_at(self.engine.now, idx, lambda core, now: core.leave(now))

    def retire(self, idx: int) -> None:
        """Stop a node that has left gracefully (its leave is out)."""
        if not self.engine.slots[idx].up:
            return
        self.left[idx] = True
        self.leaving[idx] = False
        self._stop(idx)

    def stop_revoked(self, idx: int) -> None:
        """Node idx learned it was revoked and stops (the agent exits), without a leave."""
        if not self.engine.slots[idx].up:
            return
        self.left[idx] = True
        self._stop(idx)

    def _stop(self, idx: int, *, host_lost: bool = False) -> None:
        # A node that left or was revoked exits; its host stays up.
        self.engine.crash(idx, host_lost=host_lost)
        now = self.engine.now
        for o in self._observers:
            o.on_down(now, idx)

    def restart(self, idx: int, *, new_addr: bool) -> None:
        """Bring node idx back with its persisted incarnation, and join through seeds."""
        slot = self.engine.slots[idx]
        if slot.up:
            return
        addr = self.new_addr(slot.region) if new_addr else slot.addr
        core = self._build_core(slot.node_id, addr, slot.region, slot.incarnation)
        self.crashed[idx] = False
        self.left[idx] = False
        self.leaving[idx] = False
        now = self.engine.now
        for o in self._observers:
            o.on_restart(now, slot)
        self.engine.restart(idx, core, addr)
        seeds = self.seeds_for(idx)
        self.engine.call_node_at(now, idx, lambda c, t: c.join(t, seeds))

    def stall(self, idx: int, duration_s: float) -> None:
        """Freeze node idx for duration_s."""
        if not self.engine.slots[idx].up:
            return
        now = self.engine.now
        for o in self._observers:
            o.on_stall(now, idx, duration_s)
        self.engine.stall(idx, duration_s)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the network into groups of node indexes."""
        self.network.partition(groups)
        sides = [self.network.group_of(i) for i in range(len(self.engine.slots))]
        for o in self._observers:
            o.on_partition(sides)

    def heal(self) -> None:
        """Make the network whole again."""
        self.network.heal()
        now = self.engine.now
        for o in self._observers:
            o.on_heal(now)
