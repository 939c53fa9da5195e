"""The network key's rotation (node/netkeys.py): spread sealed member to member, over lossy links."""

from __future__ import annotations

import contextlib
import random

import msgpack
import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import admission as adm
from gossip import codec
from gossip.config import LAN, WAN
from gossip.kinds import NETKEY_KIND, REVOCATION_KIND
from gossip.netkey import (
    NETKEY_SLOT,
    NetKeyNotice,
    decode_notice,
    encode_notice,
    network_key_id,
    notice_problem,
)
from gossip.node import GossipNode
from gossip.records import Record, sign_record
from gossip.trust import StaticTrust
from gossip.wire import DecodeError
from node.channels import Channel
from node.core import Node
from node.netkeys import (
    OFFER,
    GossipPeers,
    NetKeyConfig,
    NetKeyCore,
    NetworkKeyInstalled,
    NetworkKeyInUse,
    NetworkKeysRetired,
)
from tests.gossip.harness import Link

OPERATOR = nacl.signing.SigningKey(b"\x17" * 32)
CLUSTER = "c-netkeys"
OLD_KEY = b"\x01" * 32
NEW_KEY = b"\x02" * 32
CONFIG = NetKeyConfig(use_after_s=5.0)
GRACE_S = 20


def node_key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([0x60 + i]) * 32)


INVITE = adm.sign_invite(OPERATOR, CLUSTER, expires_at_s=1_800_000_000, nonce=b"\x02" * 16)


def add(
    link: Link, i: int, region: str, keys: tuple[bytes, ...] = (OLD_KEY,), retired: tuple[str, ...] = ()
) -> Node:
    """A keyed node in admission mode hosting the key core, on the link (as Link.add_node does)."""
    key = node_key(i)
    admission = adm.make_admission(key, INVITE, region=region, admitted_at_s=1_700_000_000)
    gossip = GossipNode(
        admission.key,
        f"n{i}:7946",
        region,
        random.Random(link.rng.getrandbits(64)),
        region_config=LAN,
        fleet_config=WAN,
        now=link.now,
        trust=link.trust,
        admission=admission,
        node_key=key,
    )
    core = NetKeyCore(
        gossip.node_id,
        random.Random(i),
        node_key=key,
        peers=GossipPeers(gossip),
        keys=keys,
        now=link.now,
        config=CONFIG,
        retired=retired,
    )
    node = Node(gossip, [core])
    link.nodes[gossip.addr] = node
    link.down.pop(gossip.addr, None)
    link._flush(node)
    return node


def keys_of(node: Node) -> NetKeyCore:
    core = node.hosted(Channel.KEYS)
    assert isinstance(core, NetKeyCore)
    return core


def mesh(seed: int, regions: int = 2, per_region: int = 4) -> tuple[Link, list[Node]]:
    link = Link(
        seed=seed, config=LAN, trust=StaticTrust(operators=[bytes(OPERATOR.verify_key)], cluster_id=CLUSTER)
    )
    nodes: list[Node] = []
    for r in range(regions):
        for k in range(per_region):
            node = add(link, r * per_region + k, f"r{r}")
            seeds = [n.addr for n in nodes if n.region == f"r{r}"][:1] + ([nodes[0].addr] if nodes else [])
            if seeds:
                node.join(link.now, seeds)
                link._flush(node)
            nodes.append(node)
    link.run_until(20.0)
    return link, nodes


def notice_record(
    epoch: int, key: bytes, revoked: tuple[str, ...] = (), version: int | None = None
) -> Record:
    notice = NetKeyNotice(epoch, network_key_id(key), GRACE_S, "test", revoked)
    return sign_record(
        OPERATOR,
        NETKEY_KIND,
        NETKEY_SLOT,
        epoch if version is None else version,
        "fleet",
        encode_notice(notice),
    )


def rotate(link: Link, node: Node, key: bytes, record: Record) -> None:
    assert node.command(link.now, lambda t: keys_of(node).rotate(t, key, record)) is None
    node.publish_record(link.now, record)
    link._flush(node)


def installed(link: Link, node: Node) -> list[NetworkKeyInstalled]:
    return [e for _t, nid, e in link.events if nid == node.node_id and isinstance(e, NetworkKeyInstalled)]


# --- the record's payload ------------------------------------------------------------------


def test_notice_round_trip_and_bounds() -> None:
    notice = NetKeyNotice(
        3, network_key_id(NEW_KEY), 600, "revocation of 0123456789abcdef", ("0123456789abcdef",)
    )
    assert decode_notice(encode_notice(notice)) == notice
    assert network_key_id(NEW_KEY) != network_key_id(OLD_KEY) and len(network_key_id(NEW_KEY)) == 32
    for bad in (
        NetKeyNotice(0, notice.key_id, 1),
        NetKeyNotice(1, "zz", 1),
        NetKeyNotice(1, notice.key_id, -1),
        NetKeyNotice(1, notice.key_id, 1, revoked=("not-an-id",)),
        NetKeyNotice(1, notice.key_id, 1, revoked=("0123456789abcdef",) * 17),
    ):
        with pytest.raises(ValueError):
            encode_notice(bad)
    assert notice_problem(b"\x01junk") is not None
    assert notice_problem(encode_notice(notice)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_payloads_never_raise_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_notice(data)


def test_the_store_refuses_a_netkey_record_not_signed_by_a_root_operator() -> None:
    link, nodes = mesh(seed=1, regions=1, per_region=2)
    forged = sign_record(
        node_key(0),
        NETKEY_KIND,
        NETKEY_SLOT,
        1,
        "fleet",
        encode_notice(NetKeyNotice(1, network_key_id(NEW_KEY), 1)),
    )
    assert not nodes[1].publish_record(link.now, forged)
    bad_payload = sign_record(OPERATOR, NETKEY_KIND, NETKEY_SLOT, 1, "fleet", b"\x01not a notice")
    assert not nodes[1].publish_record(link.now, bad_payload)
    assert nodes[1].counters["state.drop_bad_payload"] == 1


# --- the spread ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_live_member_ends_with_the_key_over_lossy_links(seed: int) -> None:
    link, nodes = mesh(seed)
    rng = random.Random(seed)
    link.drop = lambda src, dst: rng.random() < 0.3
    origin = nodes[seed % len(nodes)]
    rotate(link, origin, NEW_KEY, notice_record(1, NEW_KEY))
    link.run_until(link.now + 60.0)
    for node in nodes:
        core = keys_of(node)
        assert core.has_current and core.notice is not None and core.notice.epoch == 1, (
            f"seed={seed} {node.node_id}"
        )
        assert [e.key for e in installed(link, node)] == [NEW_KEY], f"seed={seed}"
        # It seals with the new key, and the old one is gone after the grace period.
        assert core.primary_id == network_key_id(NEW_KEY)
        assert core.key_ids == (network_key_id(NEW_KEY),)
    kinds = {type(e) for _t, _n, e in link.events}
    assert {NetworkKeyInstalled, NetworkKeyInUse, NetworkKeysRetired} <= kinds
    retired = [e for _t, _n, e in link.events if isinstance(e, NetworkKeysRetired)]
    assert all(e.keys == (OLD_KEY,) for e in retired) and len(retired) == len(nodes)
    # Both ways were used: pushed copies, and pulls by nodes the pushes missed.
    total: dict[str, int] = {}
    for node in nodes:
        for k, v in keys_of(node).counters.items():
            total[k] = total.get(k, 0) + v
    assert total["offers_sent"] >= len(nodes) - 1


def test_sealing_waits_use_after_s_and_old_keys_wait_the_grace() -> None:
    link, nodes = mesh(seed=7, regions=1, per_region=3)
    start = link.now
    rotate(link, nodes[0], NEW_KEY, notice_record(1, NEW_KEY))
    link.run_until(start + 2.0)
    core = keys_of(nodes[0])
    assert core.primary_id == network_key_id(OLD_KEY) and set(core.key_ids) == {
        network_key_id(OLD_KEY),
        network_key_id(NEW_KEY),
    }
    link.run_until(start + CONFIG.use_after_s + 0.1)
    assert core.primary_id == network_key_id(NEW_KEY) and len(core.key_ids) == 2
    link.run_until(start + GRACE_S + 0.1)
    assert core.key_ids == (network_key_id(NEW_KEY),)


def test_a_revoked_member_never_receives_the_key() -> None:
    link, nodes = mesh(seed=3, regions=1, per_region=5)
    victim = nodes[4]
    # The rotation names it; its revocation record has not reached anyone yet, so it is
    # still listed alive everywhere and it asks, again and again.
    rotate(link, nodes[0], NEW_KEY, notice_record(1, NEW_KEY, revoked=(victim.node_id,)))
    link.run_until(link.now + 40.0)
    assert not keys_of(victim).has_current
    assert installed(link, victim) == []
    assert keys_of(victim).counters["requests_sent"] >= 3
    refused = sum(keys_of(n).counters.get("drop_request_refused", 0) for n in nodes[:4])
    assert refused >= 3
    assert all(keys_of(n).has_current for n in nodes[:4])


def test_a_member_revoked_by_record_is_refused_too() -> None:
    link, nodes = mesh(seed=4, regions=1, per_region=4)
    victim = nodes[3]
    revocation = sign_record(OPERATOR, REVOCATION_KIND, victim.node_id, 1, "fleet", b"")
    for node in nodes[:3]:
        node.publish_record(link.now, revocation)
        link._flush(node)
    rotate(link, nodes[0], NEW_KEY, notice_record(1, NEW_KEY))  # names no one
    # The revoked node hears the record by itself (a test shortcut: it would have stopped).
    victim.publish_record(link.now, notice_record(1, NEW_KEY))
    link._flush(victim)
    link.run_until(link.now + 30.0)
    assert installed(link, victim) == []
    assert all(keys_of(n).has_current for n in nodes[:3])


def _forged_offer(sender: nacl.signing.SigningKey, receiver: Node, epoch: int, key: bytes) -> bytes:
    box = nacl.public.Box(
        sender.to_curve25519_private_key(),
        nacl.signing.VerifyKey(
            receiver.gossip.member_key(receiver.node_id) or b""
        ).to_curve25519_public_key(),
    )
    payload = msgpack.packb([OFFER, epoch, bytes(box.encrypt(key, b"\x09" * 24))])
    return payload


def test_a_wrong_key_offered_by_a_member_is_refused_and_counted() -> None:
    link, nodes = mesh(seed=5, regions=1, per_region=3)
    mallory_node, victim = nodes[1], nodes[2]
    # The record reaches the victim first; mallory (a member) offers a key of its own making.
    victim.publish_record(link.now, notice_record(1, NEW_KEY))
    link._flush(victim)
    payload = _forged_offer(node_key(1), victim, 1, b"\x66" * 32)
    packet = codec.encode_packet(
        codec.POOL_REGION,
        "r0",
        [codec.encode_message(codec.AppMessage(Channel.KEYS, mallory_node.node_id, payload))],
    )
    victim.handle_datagram(link.now, mallory_node.addr, packet, mallory_node.node_id)  # proven: a member
    link._flush(victim)
    core = keys_of(victim)
    assert core.counters["drop_offer_wrong_key"] == 1
    assert not core.has_current and network_key_id(b"\x66" * 32) not in core.key_ids
    # Then the real key arrives by the usual ways.
    rotate(link, nodes[0], NEW_KEY, notice_record(1, NEW_KEY))
    link.run_until(link.now + 20.0)
    assert core.has_current and [e.key for e in installed(link, victim)] == [NEW_KEY]


def test_a_wrong_key_offered_ahead_of_its_record_is_never_installed() -> None:
    link, nodes = mesh(seed=6, regions=1, per_region=3)
    victim = nodes[2]
    payload = _forged_offer(node_key(1), victim, 1, b"\x66" * 32)
    packet = codec.encode_packet(
        codec.POOL_REGION,
        "r0",
        [codec.encode_message(codec.AppMessage(Channel.KEYS, nodes[1].node_id, payload))],
    )
    victim.handle_datagram(link.now, nodes[1].addr, packet, nodes[1].node_id)  # proven: a member
    victim.publish_record(link.now, notice_record(1, NEW_KEY))
    link._flush(victim)
    assert keys_of(victim).counters["drop_offer_wrong_key"] == 1
    assert installed(link, victim) == []


def test_older_epochs_are_ignored() -> None:
    link, nodes = mesh(seed=2, regions=1, per_region=3)
    rotate(link, nodes[0], NEW_KEY, notice_record(2, NEW_KEY))
    link.run_until(link.now + 10.0)
    third = b"\x03" * 32
    # A stale rotation at the API is refused by the core ...
    problem = nodes[1].command(
        link.now, lambda t: keys_of(nodes[1]).rotate(t, third, notice_record(1, third))
    )
    assert problem is not None and "not newer" in problem
    # ... and an older epoch arriving as a record (even with a higher version) changes nothing.
    nodes[1].publish_record(link.now, notice_record(1, third, version=99))
    link._flush(nodes[1])
    link.run_until(link.now + 10.0)
    for node in nodes:
        core = keys_of(node)
        assert core.notice is not None and core.notice.epoch == 2
        assert network_key_id(third) not in core.key_ids
    assert keys_of(nodes[1]).counters["notice_stale"] >= 1


def test_a_key_not_matching_its_record_is_refused_at_the_command() -> None:
    link, nodes = mesh(seed=2, regions=1, per_region=2)
    problem = nodes[0].command(
        link.now, lambda t: keys_of(nodes[0]).rotate(t, OLD_KEY, notice_record(1, NEW_KEY))
    )
    assert problem is not None and "id differs" in problem


def test_a_restarted_node_holding_the_key_and_record_asks_nothing() -> None:
    link, nodes = mesh(seed=8, regions=1, per_region=2)
    rotate(link, nodes[0], NEW_KEY, notice_record(1, NEW_KEY))
    link.run_until(link.now + 30.0)
    # Node 1 comes back with what it persisted: the new key (primary) and the record.
    link.crash(nodes[1])
    again = add(link, 1, "r0", keys=(NEW_KEY,))
    again.gossip.state.restore([notice_record(1, NEW_KEY)])
    link.run_until(link.now + 5.0)
    core = keys_of(again)
    assert core.has_current and core.notice is not None and core.notice.epoch == 1
    assert core.counters.get("requests_sent", 0) == 0
