"""The state store inside the node: records gossiped, relayed across regions, and repaired by push-pull."""

from __future__ import annotations

import nacl.signing

from gossip import codec
from gossip.admission import make_admission, sign_invite
from gossip.config import LAN, WAN
from gossip.events import RecordsAccepted
from gossip.io import Datagram
from gossip.node import GossipNode
from gossip.records import Record, encode_record, key_id, sign_record
from gossip.trust import StaticTrust
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


CLUSTER = "c-test"
INVITE = sign_invite(OPERATOR, CLUSTER, expires_at_s=2_000_000_000, nonce=b"\x01" * 16)


def _keyed_region(
    count: int, regions: int = 1
) -> tuple[Link, list[GossipNode], list[nacl.signing.SigningKey]]:
    """Nodes in admission mode: each with its own key and an admission under INVITE."""
    trust = StaticTrust(operators=[bytes(OPERATOR.verify_key)], cluster_id=CLUSTER)
    link = Link(seed=3, config=LAN, trust=trust)
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(count * regions)]
    nodes = [
        link.add(
            f"r{i // count}n{i % count}",
            f"r{i // count}",
            fleet_config=WAN,
            node_key=k,
            admission=make_admission(k, INVITE, region=f"r{i // count}", admitted_at_s=1_700_000_000),
        )
        for i, k in enumerate(keys)
    ]
    for node in nodes[1:]:
        own_seed = next(n for n in nodes if n.region == node.region)
        node.join(link.now, [a for a in (own_seed.addr, nodes[0].addr) if a != node.addr])
        link._flush(node)
    link.run_until(20.0)
    return link, nodes, keys


def inventory(key: nacl.signing.SigningKey, region: str, version: int, about: str | None = None) -> Record:
    me = key_id(bytes(key.verify_key))
    return sign_record(key, "inventory", about or me, version, f"region:{region}", b'{"cpu_count": 4}')


def test_a_nodes_own_inventory_is_verified_with_the_key_its_admission_carries() -> None:
    link, nodes, keys = _keyed_region(4, regions=2)
    author, author_key = nodes[1], keys[1]
    assert author.publish_record(link.now, inventory(author_key, "r0", 1))
    link._flush(author)
    link.run_until(link.now + 10.0)
    region_mates = [n for n in nodes if n.region == "r0"]
    others = [n for n in nodes if n.region != "r0"]
    assert all(n.state.get("inventory", author.node_id) is not None for n in region_mates)
    assert all(n.state.get("inventory", author.node_id) is None for n in others)  # region-scoped


def test_a_node_cannot_write_another_nodes_inventory() -> None:
    link, nodes, keys = _keyed_region(3)
    forged = inventory(keys[1], "r0", 1, about=nodes[2].node_id)  # node 1 writes node 2's slot
    assert not nodes[1].publish_record(link.now, forged)
    assert nodes[1].counters["state.drop_not_allowed"] == 1


def _record_datagrams(link: Link, nodes: list[GossipNode]) -> list[tuple[str, str]]:
    """Record (sender id, destination addr) of every RecordGossip message the nodes send from now on."""
    sent: list[tuple[str, str]] = []
    for gossip in nodes:
        node = link.nodes[gossip.addr]  # what the link drives

        def poll(node=node, inner=node.poll_transmit) -> list:  # type: ignore[no-untyped-def]
            out = inner()
            for o in out:
                if isinstance(o, Datagram):
                    packet = codec.decode_packet(o.payload, max_bytes=2000)
                    for m in packet.messages:
                        if isinstance(m, codec.RecordGossip):
                            sent.append((node.node_id, o.dst))
            return out

        node.poll_transmit = poll  # type: ignore[method-assign]
    return sent


def test_a_region_record_goes_from_its_author_to_each_region_member_once_and_no_further() -> None:
    link, nodes, keys = _keyed_region(6, regions=2)
    sent = _record_datagrams(link, nodes)
    author = nodes[2]
    assert author.publish_record(link.now, inventory(keys[2], "r0", 1))
    link._flush(author)
    mates = [n for n in nodes if n.region == "r0" and n is not author]
    # One datagram to each live member of the region, at once: no gossip round needed.
    assert sorted(dst for src, dst in sent) == sorted(n.addr for n in mates)
    link.run_until(link.now + 0.01)
    assert all(n.state.get("inventory", author.node_id) is not None for n in mates)
    link.run_until(link.now + 10.0)
    # Nobody re-gossips it: the author's datagrams were the whole cost.
    assert len(sent) == len(mates)
    assert all(n.state.get("inventory", author.node_id) is None for n in nodes if n.region != "r0")


def test_a_region_record_the_author_could_not_deliver_arrives_by_anti_entropy() -> None:
    link, nodes, keys = _keyed_region(5)
    author, away = nodes[0], nodes[4]
    link.drop = lambda src, dst: (src, dst) == (author.addr, away.addr)  # only the author's datagrams
    assert author.publish_record(link.now, inventory(keys[0], "r0", 1))
    link._flush(author)
    link.run_until(link.now + 1.0)
    assert away.state.get("inventory", author.node_id) is None
    assert all(n.state.get("inventory", author.node_id) is not None for n in nodes[1:4])
    link.run_until(link.now + 120.0)  # a push-pull with any other member carries it over
    assert away.state.get("inventory", author.node_id) is not None


def test_a_region_record_can_spread_by_a_bounded_epidemic_instead() -> None:
    config = LAN.with_(
        region_record_push_all=False, region_record_push=2, region_record_relay=1, region_record_retransmit=1
    )
    link = Link(
        seed=5, config=config, trust=StaticTrust(operators=[bytes(OPERATOR.verify_key)], cluster_id=CLUSTER)
    )
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(8)]
    nodes = [
        link.add(
            f"n{i}",
            "r0",
            node_key=k,
            admission=make_admission(k, INVITE, region="r0", admitted_at_s=1_700_000_000),
        )
        for i, k in enumerate(keys)
    ]
    for node in nodes[1:]:
        node.join(link.now, [nodes[0].addr])
        link._flush(node)
    link.run_until(20.0)
    sent = _record_datagrams(link, nodes)
    author = nodes[3]
    assert author.publish_record(link.now, inventory(keys[3], "r0", 1))
    link._flush(author)
    assert len(sent) == 2  # pushed to two random members, not to all seven
    link.run_until(link.now + 10.0)
    per_node: dict[str, int] = {}
    for src, _dst in sent:
        per_node[src] = per_node.get(src, 0) + 1
    # The author: 2 pushes + 1 piggyback; everyone else: at most 1 relay + 1 piggyback.
    assert per_node.pop(author.node_id) <= 3
    assert all(count <= 2 for count in per_node.values())
    link.run_until(link.now + 200.0)  # whoever the epidemic missed, anti-entropy reaches
    assert all(n.state.get("inventory", author.node_id) is not None for n in nodes)


def test_an_urgent_region_record_is_sent_to_every_member_a_second_time() -> None:
    link, nodes, keys = _keyed_region(5)
    sent = _record_datagrams(link, nodes)
    author, away = nodes[0], nodes[4]
    repeat_s = LAN.region_record_repeat_s
    cut_until = link.now + repeat_s / 2
    link.drop = lambda src, dst: (src, dst) == (author.addr, away.addr) and link.now < cut_until
    assert author.publish_record(link.now, inventory(keys[0], "r0", 1), urgent=True)
    link._flush(author)
    link.run_until(link.now + repeat_s / 2)
    assert away.state.get("inventory", author.node_id) is None  # lost the first datagram
    link.run_until(link.now + repeat_s)
    assert away.state.get("inventory", author.node_id) is not None  # not the second
    assert len(sent) == 2 * 4
    # A periodic refresh is sent once; and it cancels a repeat still due for an older version.
    assert author.publish_record(link.now, inventory(keys[0], "r0", 2), urgent=True)
    link._flush(author)
    assert author.publish_record(link.now, inventory(keys[0], "r0", 3))
    link._flush(author)
    link.run_until(link.now + 3 * repeat_s)
    assert len(sent) == 2 * 4 + 4 + 4
