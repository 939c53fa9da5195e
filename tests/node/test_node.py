"""The composite node: hosted cores exchange application messages through the gossip transport."""

from __future__ import annotations

import random

import msgpack
import pytest

from gossip import codec
from gossip.gateways import Candidate, choose_gateways
from gossip.node import GossipNode
from node.channels import Channel
from node.core import Node
from tests.gossip.harness import Link
from tests.node.echo import EchoCore, PeerAnswered

NAMES = ("a", "b", "c", "d", "e")


def _mesh(link: Link, n: int = 4, requests: int = 5) -> list[Node]:
    nodes = [link.add_node(NAMES[0], hosted=[EchoCore(requests)])]
    for name in NAMES[1:n]:
        node = link.add_node(name, hosted=[EchoCore(requests)])
        node.join(link.now, [nodes[0].addr])
        link._flush(node)
        nodes.append(node)
    return nodes


def _echo(node: Node) -> EchoCore:
    core = node.hosted(Channel.TEST_FIRST)
    assert isinstance(core, EchoCore)
    return core


def _answered(link: Link, node: Node) -> set[str]:
    return {e.peer for _t, nid, e in link.events if nid == node.node_id and isinstance(e, PeerAnswered)}


def test_every_request_is_answered_on_a_clean_link() -> None:
    link = Link(seed=3)
    nodes = _mesh(link)
    link.run_until(10.0)
    for node in nodes:
        others = {o.node_id for o in nodes if o is not node}
        assert _answered(link, node) == others
        assert all(_echo(o).received[node.node_id] == set(range(5)) for o in nodes if o is not node)
        assert node.counters["app_sent"] >= 3 * 5


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_requests_survive_a_lossy_link(seed: int) -> None:
    link = Link(seed=seed)
    rng = random.Random(seed)
    link.drop = lambda src, dst: rng.random() < 0.3
    nodes = _mesh(link, n=5, requests=8)
    link.run_until(40.0)
    for node in nodes:
        assert _answered(link, node) == {o.node_id for o in nodes if o is not node}, f"seed={seed}"
    # Loss made cores resend: the receivers saw requests twice and answered each again.
    assert sum(_echo(n).duplicates for n in nodes) > 0


def test_a_lost_reply_is_resent_until_it_arrives() -> None:
    link = Link(seed=2)
    nodes = _mesh(link, n=2, requests=1)
    a, b = nodes
    link.run_until(3.0)
    assert _answered(link, a) == {b.node_id}
    # Now cut b -> a for a while: a new core's request is answered, but the reply is lost.
    late = link.add_node("e", hosted=[EchoCore(1)])
    late.join(link.now, [a.addr])
    link._flush(late)
    link.run_until(link.now + 3.0)
    link.drop = lambda src, dst: dst == late.addr and src == a.addr
    echo_late = _echo(late)
    late.command(link.now, lambda t: echo_late.ask(t, a.node_id, 7))  # a core is called through the node
    link._flush(late)
    link.run_until(link.now + 2.0)
    assert 7 in _echo(a).received[late.node_id]  # a got the request (and answers every resend)
    assert echo_late.unanswered[a.node_id] == {7}
    link.drop = lambda src, dst: False
    link.run_until(link.now + 2.0)
    assert echo_late.unanswered[a.node_id] == set()


def test_app_message_from_a_stranger_is_dropped_and_counted() -> None:
    link = Link(seed=1)
    a, b = _mesh(link, n=2)
    link.run_until(3.0)
    before = a.counters.get("drop_app_not_member", 0)
    forged = codec.encode_packet(
        codec.POOL_REGION,
        "r1",
        [codec.encode_message(codec.AppMessage(Channel.TEST_FIRST, "mallory", msgpack.packb([0, 1])))],
    )
    a.handle_datagram(link.now, "mallory:7946", forged)
    # A member's id from another address is refused too (a spoofed sender).
    spoofed = codec.encode_packet(
        codec.POOL_REGION,
        "r1",
        [codec.encode_message(codec.AppMessage(Channel.TEST_FIRST, b.node_id, msgpack.packb([0, 1])))],
    )
    a.handle_datagram(link.now, "elsewhere:7946", spoofed)
    assert a.counters["drop_app_not_member"] == before + 2
    assert "mallory" not in _echo(a).received


def test_unknown_channel_and_unroutable_sends_are_counted() -> None:
    link = Link(seed=1)
    a, b = _mesh(link, n=2)
    link.run_until(3.0)
    other_channel = codec.encode_packet(
        codec.POOL_REGION,
        "r1",
        [codec.encode_message(codec.AppMessage(Channel.ELECTION, b.node_id, b"x"))],
    )
    a.handle_datagram(link.now, b.addr, other_channel)
    assert a.counters["node.drop_app_unknown_channel"] == 1
    assert not a.gossip.send_app(link.now, "nobody", Channel.TEST_FIRST, b"x")
    assert a.counters["drop_app_no_route"] == 1
    too_big = b"x" * (a.gossip.region_config.user_payload_max_bytes + 1)
    assert not a.gossip.send_app(link.now, b.node_id, Channel.TEST_FIRST, too_big)
    assert a.counters["drop_app_oversized"] == 1


def test_two_cores_on_one_channel_are_refused() -> None:
    gossip = GossipNode("a", "a:1", "r", random.Random(1))
    with pytest.raises(ValueError, match="channel"):
        Node(gossip, [EchoCore(), EchoCore()])


def test_node_deadline_is_the_earliest_of_its_cores() -> None:
    gossip = GossipNode("a", "a:1", "r", random.Random(1))
    echo = EchoCore()
    node = Node(gossip, [echo])
    assert node.next_deadline() == gossip.next_deadline()
    # A core changes only when called, and a core is called through the node.
    node.command(0.0, lambda t: setattr(echo, "_next_retry_s", -1.0))
    assert node.next_deadline() == -1.0


def test_app_message_codec_round_trip_and_bounds() -> None:
    msg = codec.AppMessage(7, "node-1", b"payload")
    packet = codec.decode_packet(codec.encode_packet(codec.POOL_REGION, "r", [codec.encode_message(msg)]))
    assert packet.messages == (msg,)
    bad = msgpack.packb([codec.MsgType.APP, codec.APP_CHANNEL_MAX + 1, "n", b""])
    packet = codec.decode_packet(codec.encode_packet(codec.POOL_REGION, "r", [bad]))
    assert packet.messages == () and packet.invalid == 1


def test_preferred_gateways_come_first_and_the_rule_fills_the_rest() -> None:
    cands = [Candidate(f"n{i}", f"n{i}:1", 0.0) for i in range(6)]
    plain = choose_gateways(cands, 100.0).gateways
    assert len(plain) == 3
    preferred = choose_gateways(cands, 100.0, preferred=["n5", "gone", "n4"]).gateways
    assert [g[0] for g in preferred[:2]] == ["n5", "n4"]
    assert preferred[2] == next(g for g in plain if g[0] not in ("n5", "n4"))
    # A young member is not made a gateway while enough stable ones exist, unless preferred.
    young = [*cands, Candidate("new", "new:1", 99.0)]
    assert "new" not in {g[0] for g in choose_gateways(young, 100.0).gateways}
    assert choose_gateways(young, 100.0, preferred=["new"]).gateways[0][0] == "new"


def test_gateway_choice_takes_plain_tuples_in_any_order() -> None:
    # The node passes plain tuples straight from its unsorted member table.
    cands = [Candidate(f"n{i}", f"n{i}:1", 90.0 + i) for i in range(8)]
    expected = choose_gateways(cands, 100.0)
    for order in (cands[::-1], cands[3:] + cands[:3]):
        got = choose_gateways([(c.node_id, c.addr, c.alive_since_s) for c in order], 100.0)
        assert got == expected
    assert expected.next_change_s == 101.0  # alive since 90..97: n0 is stable at 100, n1 at 101


def test_prefer_gateways_makes_the_preferred_members_the_gateways() -> None:
    link = Link(seed=4)
    nodes = [link.add_node(n) for n in NAMES]
    for n in nodes[1:]:
        n.join(link.now, [nodes[0].addr])
        link._flush(n)
    link.run_until(15.0)
    chosen = {n.node_id for n in nodes if n.is_gateway}
    outsider = next(n for n in nodes if n.node_id not in chosen)
    for n in nodes:
        n.gossip.prefer_gateways(link.now, [outsider.node_id])
        link._flush(n)
    link.run_until(link.now + 6.0)
    assert outsider.is_gateway
    assert sum(n.is_gateway for n in nodes) == 3
