"""The election core hosted in composite nodes over the gossip transport, and cores that publish records."""

from __future__ import annotations

import random

import nacl.signing

from consensus.election import ElectionCore
from consensus.hardstate import MemoryStore
from consensus.peers import GossipElectionPeers
from gossip.events import Event, HostedEvent
from gossip.io import AppSend
from gossip.node import GossipNode
from gossip.records import Record, sign_record
from gossip.trust import StaticTrust
from node.channels import Channel
from node.core import Node
from node.hosted import AppSend as ReExported
from tests.gossip.harness import Link

NAMES = ("a", "b", "c", "d", "e")
OPERATOR = nacl.signing.SigningKey(b"\x07" * 32)
STRANGER = nacl.signing.SigningKey(b"\x08" * 32)


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey((name.encode() * 32)[:32])


class LatePeers(GossipElectionPeers):
    """Live members from the node's gossip (set once the harness built it), keys from a table:
    these nodes run without admissions, as the simulator's unkeyed fleets do."""

    def __init__(self) -> None:
        self.gossip: GossipNode | None = None

    def live_members(self) -> list[str]:
        assert self.gossip is not None
        self._gossip = self.gossip
        return super().live_members()

    def member_key(self, node_id: str) -> bytes | None:
        return bytes(key(node_id).verify_key) if node_id in NAMES else None


def _region(link: Link, stores: dict[str, MemoryStore]) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for name in NAMES:
        peers = LatePeers()
        store = stores.setdefault(name, MemoryStore())
        core = ElectionCore(name, "r1", random.Random(name), None, store, peers, key(name), now=link.now)
        node = link.add_node(name, hosted=[core])
        peers.gossip = node.gossip
        if nodes:
            node.join(link.now, [nodes["a"].addr])
            link._flush(node)
        nodes[name] = node
    return nodes


def _election(node: Node) -> ElectionCore:
    core = node.hosted(Channel.ELECTION)
    assert isinstance(core, ElectionCore)
    return core


def test_hosted_election_cores_elect_one_leader_that_every_member_names() -> None:
    link = Link(seed=5)
    stores: dict[str, MemoryStore] = {}
    nodes = _region(link, stores)
    link.run_until(15.0)
    leading = [n for n, node in nodes.items() if _election(node).is_leader(link.now)]
    assert len(leading) == 1
    assert {_election(node).leader() for node in nodes.values()} == {leading[0]}
    # Election traffic rode the sealed transport: application messages, counted by gossip.
    assert all(node.counters["app_sent"] > 0 for node in nodes.values())
    # Every hard state was saved through the driver's store.
    assert all(s.state is not None and s.state.established for s in stores.values())

    link.crash(nodes[leading[0]])
    crashed_at = link.now
    link.run_until(crashed_at + 10.0)
    live = {n: node for n, node in nodes.items() if n != leading[0]}
    new = [n for n, node in live.items() if _election(node).is_leader(link.now)]
    assert len(new) == 1 and new[0] != leading[0]
    assert {_election(node).leader() for node in live.values()} == {new[0]}


def test_app_send_lives_in_gossip_and_node_re_exports_it() -> None:
    assert ReExported is AppSend


class Publisher:
    """A hosted core that publishes the records it is given (as the placement core will)."""

    def __init__(self, records: list[tuple[Record, bool]]) -> None:
        self.records = records

    @property
    def channel(self) -> int:
        return Channel.TEST_FIRST

    def handle_message(self, now: float, pool: str, from_id: str, payload: bytes) -> None:
        pass

    def observe(self, now: float, event: Event) -> None:
        pass

    def handle_timer(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def poll_messages(self) -> list[AppSend]:
        return []

    def drain_events(self) -> list[HostedEvent]:
        return []

    def poll_records(self) -> list[tuple[Record, bool]]:
        out, self.records = self.records, []
        return out


def test_records_a_hosted_core_makes_are_published_and_refusals_counted() -> None:
    link = Link(seed=1, trust=StaticTrust(operators=[bytes(OPERATOR.verify_key)]))
    good = sign_record(OPERATOR, "desired", "model-a", 3, "fleet", b"x")
    bad = sign_record(STRANGER, "desired", "model-b", 3, "fleet", b"x")
    core = Publisher([(good, True), (bad, False)])
    node = link.add_node("a", hosted=[core])
    node.command(link.now, lambda t: None)  # the node collects a core's output after calling it
    assert node.state.get("desired", "model-a") == good
    assert node.state.get("desired", "model-b") is None
    assert node.counters["node.drop_record_refused"] == 1
