"""A deterministic multi-node harness for the placement core: several PlacementCores, each with a
real StateStore, sharing records through a `publish` that delivers to every reachable node, and a
fake election that names the leader and hands out real certificates."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import nacl.signing

from consensus.certificate import encode_certificate, sign_vote
from consensus.config import Era, VoterConfig
from gossip.events import MemberChanged, MemberState, RecordsAccepted
from gossip.kinds import FLEET_SCOPE, INVENTORY_KIND, REBALANCE_KIND, SCHEDULING_KIND
from gossip.records import Record, key_id, sign_record
from gossip.state import StateStore
from gossip.trust import StaticTrust
from inference import inventory
from inference.assignments import ReplicaState
from inference.desired import sign_deployment
from inference.kinds import CHECKED_KINDS
from inference.manifest import Deployment
from inference.operator_records import Rebalance, Scheduling, encode_rebalance, encode_scheduling
from inference.placing import PlacementCore
from inference.placing_ports import PlacementConfig
from inference.resources import NodeStatus

REGION = "r"
OPERATOR = nacl.signing.SigningKey(b"\x51" * 32)
GI = 1 << 30


def node_key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([0x20 + i]) * 32)


KEYS = [node_key(i) for i in range(8)]
IDS = [key_id(bytes(k.verify_key)) for k in KEYS]
PUBLIC = {IDS[i]: bytes(KEYS[i].verify_key) for i in range(len(KEYS))}


def certificate(
    leader: str, term: int, era: Era | None = None, region: str = REGION, voters: int = 3
) -> bytes:
    """A real certificate: a majority of the first `voters` nodes voted for `leader`."""
    era = era or Era(0, IDS[0])
    config = VoterConfig(1, tuple(sorted(IDS[:voters])), 0)
    quorum = config.quorum
    signers = sorted(IDS[:voters])[:quorum]
    sigs = {v: sign_vote(KEYS[IDS.index(v)], region, era, term, leader, config) for v in signers}
    return encode_certificate(era, term, leader, config, sigs)


@dataclass
class FakeElection:
    leader_id: str | None = None
    cert: bytes | None = None
    leading: bool = False

    def leader(self) -> str | None:
        return self.leader_id

    def is_leader(self, now: float) -> bool:
        return self.leading

    def certificate(self) -> bytes | None:
        return self.cert


@dataclass
class FakeRuntime:
    """deployment name -> state; absent: not started. `auto_ready`: every replica is ready at once."""

    states: dict[str, ReplicaState] = field(default_factory=dict)
    auto_ready: bool = True

    errors: dict[str, str] = field(default_factory=dict)

    def replica_state(self, deployment: Deployment, now: float) -> ReplicaState | None:
        if deployment.name in self.states:
            return self.states[deployment.name]
        return ReplicaState.READY if self.auto_ready else None

    def replica_error(self, deployment: str) -> str | None:
        return self.errors.get(deployment)


class FakeMesh:
    def __init__(self, store: StateStore, members: dict[str, MemberState]) -> None:
        self.store = store
        self.members = members

    def region_members(self) -> list[tuple[str, MemberState]]:
        return sorted(self.members.items())

    def records(self, kind: str) -> list[Record]:
        return self.store.records(kind)

    def member_key(self, node_id: str) -> bytes | None:
        return PUBLIC.get(node_id)

    def latest_version(self, node_id: str) -> int | None:
        return self.store.latest_version(node_id)


def new_store() -> StateStore:
    trust = StaticTrust([bytes(OPERATOR.verify_key)], list(PUBLIC.values()), cluster_id="c")
    return StateStore(trust, random.Random(0), region=REGION, kinds=CHECKED_KINDS)


@dataclass
class Member:
    node_id: str
    core: PlacementCore
    store: StateStore
    mesh: FakeMesh
    election: FakeElection
    runtime: FakeRuntime
    up: bool = True


class Cluster:
    """n nodes of one region; `side` partitions them (records cross only within a side)."""

    def __init__(self, n: int, *, memory: int = 4 * GI, config: PlacementConfig | None = None) -> None:
        self.now = 0.0
        self.members: list[Member] = []
        self.side: dict[str, int] = {}
        self.operator_version = 0
        # (record, receiver) -> True to lose that delivery (a datagram lost both times it was sent)
        self.lost: Callable[[Record, str], bool] | None = None
        for i in range(n):
            store = new_store()
            views = {IDS[j]: MemberState.ALIVE for j in range(n)}
            mesh = FakeMesh(store, views)
            election, runtime = FakeElection(), FakeRuntime()
            core = PlacementCore(IDS[i], REGION, KEYS[i], mesh, election, runtime, now=0.0, config=config)
            self.members.append(Member(IDS[i], core, store, mesh, election, runtime))
            self.side[IDS[i]] = 0
        for i in range(n):
            self.publish(self.inventory(i, memory), origin=IDS[i])

    def inventory(self, i: int, memory: int, labels: dict[str, str] | None = None) -> Record:
        inv = inventory.Inventory(
            4, 0.0, 0.0, memory, memory, 10 * GI, (), "linux", "x86_64", "3.11", labels or {}, REGION
        )
        return sign_record(KEYS[i], INVENTORY_KIND, IDS[i], 1, "region:" + REGION, inventory.encode(inv))

    def member(self, node_id: str) -> Member:
        return next(m for m in self.members if m.node_id == node_id)

    def reachable(self, a: str, b: str) -> bool:
        ma, mb = self.member(a), self.member(b)
        return ma.up and mb.up and self.side[a] == self.side[b]

    def publish(self, record: Record, origin: str | None = None) -> None:
        """Merge into every reachable store (all of them for an operator's record)."""
        for m in self.members:
            if origin is not None and not self.reachable(origin, m.node_id):
                continue
            if self.lost is not None and self.lost(record, m.node_id):
                continue
            new = m.store.merge(self.now, [record])
            if new:
                m.core.observe(self.now, RecordsAccepted(tuple(new)))

    def operator(self, record_of: object) -> None:
        self.operator_version += 1
        if isinstance(record_of, Deployment):
            record = sign_deployment(OPERATOR, record_of, self.operator_version)
        else:
            raise TypeError(record_of)
        self.publish(record)

    def schedule(self, node_id: str, mode: NodeStatus | None) -> None:
        self.operator_version += 1
        if mode is None:
            record = sign_record(
                OPERATOR, SCHEDULING_KIND, node_id, self.operator_version, FLEET_SCOPE, b"", True
            )
        else:
            payload = encode_scheduling(Scheduling(node_id, mode))
            record = sign_record(
                OPERATOR, SCHEDULING_KIND, node_id, self.operator_version, FLEET_SCOPE, payload
            )
        self.publish(record)

    def rebalance(self, generation: int) -> None:
        self.operator_version += 1
        payload = encode_rebalance(Rebalance(REGION, generation))
        self.publish(
            sign_record(OPERATOR, REBALANCE_KIND, REGION, self.operator_version, FLEET_SCOPE, payload)
        )

    def elect(self, leader: str | None, term: int = 1, era: Era | None = None) -> None:
        """Every up member believes `leader` (None: no leader); the leader leads within its lease."""
        cert = certificate(leader, term, era) if leader else None
        for m in self.members:
            m.election.leader_id = leader
            m.election.cert = cert
            m.election.leading = m.node_id == leader

    def set_state(self, node_id: str, state: MemberState, *, seen_by: Iterable[str] | None = None) -> None:
        """Every member in `seen_by` (default: all up ones) sees node_id in `state`."""
        for m in self.members:
            if m.up and (seen_by is None or m.node_id in seen_by) and m.node_id != node_id:
                m.mesh.members[node_id] = state
                m.core.observe(self.now, MemberChanged("region", node_id, "", state, 1))

    def crash(self, node_id: str) -> None:
        m = self.member(node_id)
        m.up = False
        m.election.leading = False
        self.set_state(node_id, MemberState.DEAD)

    def run(self, duration_s: float) -> None:
        """Advance the clock, running each up core's timer when due and delivering its records."""
        end = self.now + duration_s
        for _ in range(100_000):
            due = [
                (d, i)
                for i, m in enumerate(self.members)
                if m.up and (d := m.core.next_deadline()) is not None
            ]
            if not due:
                break
            t, i = min(due)
            if t > end:
                break
            self.now = max(self.now, t)
            m = self.members[i]
            m.core.handle_timer(self.now)
            for record, _urgent in m.core.poll_records():
                self.publish(record, origin=m.node_id)
        self.now = end

    def placed(self, node_id: str) -> dict[tuple[str, int], str]:
        applied = self.member(node_id).core.applied()
        assert applied is not None
        return {(a.deployment, a.slot): a.node_id for a in applied.record.assignments}

    def holders(self, deployment: str) -> dict[str, ReplicaState]:
        """Up nodes that hold a replica of `deployment` (their own view), and its state."""
        out: dict[str, ReplicaState] = {}
        for m in self.members:
            if m.up:
                for v in m.core.own_replicas():
                    if v.deployment == deployment:
                        out[m.node_id] = v.state
        return out
