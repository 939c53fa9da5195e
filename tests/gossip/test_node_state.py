"""The state store inside the node: records gossiped, relayed across regions, and repaired by push-pull."""

from __future__ import annotations

import nacl.signing

from gossip import codec
from gossip.config import LAN, WAN
from gossip.events import RecordsAccepted
from gossip.node import GossipNode
from gossip.records import Record, encode_record, sign_record
from gossip.state import StaticTrust
from tests.gossip.harness import Link

OPERATOR = nacl.signing.SigningKey(b"\x07" * 32)
MALLORY = nacl.signing.SigningKey(b"\x66" * 32)


def fleet(per_region: int, regions: int, seed: int = 1) -> tuple[Link, list[GossipNode]]:
    link = Link(seed=seed, config=LAN, trust=StaticTrust(operators=[bytes(OPERATOR.verify_key)]))
    nodes = [
        link.add(f"r{r}n{i}", f"r{r}", fleet_config=WAN) for r in range(regions) for i in range(per_region)
    ]
    for node in nodes[1:]:
        own_seed = next(n for n in nodes if n.region == node.region)
        node.join(link.now, [a for a in (own_seed.addr, nodes[0].addr) if a != node.addr])
        link._flush(node)
    link.run_until(30.0)
    return link, nodes


def desired(
    name: str, version: int, payload: bytes = b"model: v1", key: nacl.signing.SigningKey = OPERATOR
) -> Record:
    return sign_record(key, "desired", name, version, "fleet", payload)


def holders(nodes: list[GossipNode], name: str) -> int:
    return sum(1 for n in nodes if n.state.get("desired", name) is not None)


def test_an_operator_record_accepted_at_one_node_reaches_every_node_of_every_region() -> None:
    link, nodes = fleet(5, 3)
    entry = next(n for n in nodes if n.region == "r2" and not n.is_gateway)
    assert entry.publish_record(link.now, desired("vibration", 1))
    link._flush(entry)
    link.run_until(link.now + 5.0)
    assert holders(nodes, "vibration") == len(nodes)
    accepted = [nid for _, nid, e in link.events if isinstance(e, RecordsAccepted)]
    assert sorted(accepted) == sorted(n.node_id for n in nodes)  # once per node


def test_a_node_that_missed_the_gossip_gets_the_record_by_anti_entropy() -> None:
    link, nodes = fleet(6, 1)
    away = nodes[5]
    link.drop = lambda src, dst: away.addr in (src, dst)  # cut off while the record spreads
    nodes[0].publish_record(link.now, desired("anomaly", 1))
    link._flush(nodes[0])
    link.run_until(link.now + 5.0)
    assert away.state.get("desired", "anomaly") is None
    link.drop = lambda src, dst: False
    link.run_until(link.now + 120.0)  # push-pull and reconnects carry it over
    assert away.state.get("desired", "anomaly") is not None


def test_a_record_too_big_to_piggyback_travels_by_push_pull() -> None:
    link, nodes = fleet(4, 1)
    big = desired("big", 1, payload=b"x" * 4000)
    assert len(encode_record(big)) > 1024
    nodes[0].publish_record(link.now, big)
    link._flush(nodes[0])
    link.run_until(link.now + 120.0)
    assert holders(nodes, "big") == len(nodes)


def test_forged_records_are_refused_and_counted_everywhere() -> None:
    link, nodes = fleet(4, 1)
    forged = desired("evil", 1, key=MALLORY)  # signed, but by a key nobody trusts
    assert not nodes[0].publish_record(link.now, forged)
    tampered = desired("evil", 2)
    tampered = Record(
        tampered.kind,
        tampered.key,
        tampered.version,
        tampered.author,
        tampered.scope,
        b"model: something-else",
        tampered.deleted,
        tampered.signature,
    )
    packet = codec.encode_packet(
        codec.POOL_REGION, "r0", [codec.encode_message(codec.RecordGossip(encode_record(tampered)))]
    )
    nodes[1].handle_datagram(link.now, "x:1", packet)
    link.run_until(link.now + 10.0)
    assert holders(nodes, "evil") == 0
    assert nodes[0].counters["state.drop_unknown_author"] == 1
    assert nodes[1].counters["state.drop_bad_signature"] == 1


def test_newer_version_wins_everywhere() -> None:
    link, nodes = fleet(4, 2)
    nodes[0].publish_record(link.now, desired("detector", 1, b"v1"))
    link._flush(nodes[0])
    nodes[-1].publish_record(link.now, desired("detector", 2, b"v2"))
    link._flush(nodes[-1])
    link.run_until(link.now + 10.0)
    payloads = {n.state.get("desired", "detector").payload for n in nodes}  # type: ignore[union-attr]
    assert payloads == {b"v2"}
