"""Only members speak for members: signed alive claims, bounded accusations, strangers get nothing.

Issue 8, finding 1: a holder of the network key sealed Dead(2**64-1, victim) and
the victim could never refute again. In the harness, the envelope is modelled
(tests/gossip/harness.py): `_inject` with a sender id is a member (an insider,
who holds a member's node key) speaking; with sender id "" it is a holder of the
network key alone, whose frames cannot be pairwise.
"""

from __future__ import annotations

import random
from dataclasses import replace

import msgpack
import pytest

from gossip import codec
from gossip.config import LAN, WAN
from gossip.events import MemberState
from gossip.node import GossipNode
from gossip.records import sign_record
from tests.gossip.harness import Link
from tests.gossip.test_admission import (
    EXPIRES_S,
    OPERATOR,
    admission_of,
    admitted_region,
    invite,
    member_ids,
    node_key,
)


def _inject(
    link: Link, dst: GossipNode, src: str, *messages: codec.Message, sender_id: str | None = None
) -> None:
    """A packet from src, proven to come from sender_id (default: the member at src)."""
    packet = codec.encode_packet(codec.POOL_REGION, dst.region, [codec.encode_message(m) for m in messages])
    if sender_id is None:
        sender_id = link.nodes[src].node_id
    link.nodes[dst.addr].handle_datagram(link.now, src, packet, sender_id)
    link._flush(dst)


def _states(nodes: list[GossipNode], victim: GossipNode) -> set[MemberState]:
    return {link_state for n in nodes if n is not victim for link_state in _state(n, victim)}


def _state(observer: GossipNode, subject: GossipNode) -> list[MemberState]:
    return [v.state for v in observer.members() if v.node_id == subject.node_id]


def test_an_accusation_at_the_top_of_the_range_never_reaches_a_member() -> None:
    link, nodes = admitted_region(4)
    victim, member = nodes[3], nodes[0]
    before = victim.incarnation
    raw = msgpack.packb([codec.MsgType.DEAD, codec.U64_MAX, victim.node_id, "mallory"])
    packet = codec.encode_packet(codec.POOL_REGION, "r0", [raw])
    link.nodes[member.addr].handle_datagram(link.now, nodes[1].addr, packet)
    link.run_until(link.now + 20.0)
    assert member.counters["drop_invalid_message"] >= 1
    assert _states(nodes, victim) == {MemberState.ALIVE}
    assert victim.incarnation == before


def test_no_one_can_out_bid_a_members_refutation() -> None:
    link, nodes = admitted_region(4)
    victim = nodes[3]
    before = victim.incarnation
    # A member's address (datagrams from strangers are not even read) and an incarnation
    # the victim never signed.
    for i, n in enumerate(nodes[:3]):
        peer = nodes[(i + 1) % 3].addr
        _inject(link, n, peer, codec.Dead(before + 1000, victim.node_id, "mallory"))
        _inject(link, n, peer, codec.Suspect(codec.INCARNATION_MAX, victim.node_id, "mallory"))
    link.run_until(link.now + 20.0)
    assert all(n.counters.get("region.drop_accusation_above_signed", 0) >= 2 for n in nodes[:3])
    assert _states(nodes, victim) == {MemberState.ALIVE}
    assert victim.incarnation == before  # nothing pushed it up


def test_an_accusation_at_the_signed_incarnation_is_refuted_as_before() -> None:
    link, nodes = admitted_region(4)
    victim = nodes[3]
    before = victim.incarnation
    _inject(link, nodes[0], nodes[1].addr, codec.Dead(before, victim.node_id, nodes[1].node_id))
    link.run_until(link.now + 20.0)
    assert victim.incarnation > before
    assert _states(nodes, victim) == {MemberState.ALIVE}


def test_a_forged_alive_claim_cannot_move_or_revive_a_member() -> None:
    link, nodes = admitted_region(4)
    victim = nodes[3]
    forged = codec.Alive(victim.incarnation + 5, victim.node_id, "mallory:7946", b"", b"\x00" * 64)
    unsigned = codec.Alive(victim.incarnation + 6, victim.node_id, "mallory:7946", b"")
    for i, n in enumerate(nodes[:3]):
        _inject(link, n, nodes[(i + 1) % 3].addr, forged, unsigned)
    # In the victim's own name, to the victim: no refutation, so no incarnation race either.
    before = victim.incarnation
    _inject(link, victim, nodes[1].addr, forged)
    link.run_until(link.now + 10.0)
    for n in nodes[:3]:
        assert n.counters["region.drop_alive_forged"] >= 2
        assert next(v.addr for v in n.members() if v.node_id == victim.node_id) == victim.addr
    assert victim.counters["region.drop_alive_forged"] >= 1
    assert victim.incarnation == before


def test_alive_claims_are_signed_and_verified_in_admission_mode() -> None:
    _link, nodes = admitted_region(3)
    # Every member holds every other's signature of its claim, ready to pass on in push-pull.
    for n in nodes:
        for m in n.region_pool.members():
            assert len(m.signature) == codec.SIGNATURE_BYTES


def test_a_node_whose_invite_expired_learns_nothing_of_the_mesh() -> None:
    """docs/trust.md: a refused device learns neither the members nor the state."""
    link, nodes = admitted_region(4)
    late = admission_of(node_key(9), invite(), at_s=EXPIRES_S + 60)
    stranger = link.add("x", "r0", node_key=node_key(9), admission=late)
    assert stranger.admission_problem == "invite_expired"
    stranger.join(link.now, [nodes[0].addr])
    link._flush(stranger)
    # It probes whoever it hears of; here it pings members directly, over and over.
    for i in range(20):
        for n in nodes:
            _inject(link, n, stranger.addr, codec.Ping(i + 1, n.node_id, stranger.node_id))
        link.run_until(link.now + 1.0)
    assert member_ids(stranger) <= {stranger.node_id}  # itself at most
    assert [r for r in stranger.state.records() if r.key != stranger.node_id] == []
    assert all(stranger.node_id not in member_ids(n) for n in nodes)


def test_strangers_get_a_bare_ack_and_nothing_else() -> None:
    link, nodes = admitted_region(3)
    member = nodes[0]
    sent_before = len(link.nodes[member.addr].poll_transmit())
    assert sent_before == 0
    packet = codec.encode_packet(
        codec.POOL_REGION,
        "r0",
        [
            codec.encode_message(codec.Ping(7, member.node_id, "mallory")),
            codec.encode_message(codec.Suspect(1, nodes[1].node_id, "mallory")),
        ],
    )
    member.handle_datagram(link.now, "mallory:7946", packet)
    out = member.poll_transmit()
    assert len(out) == 1 and out[0].dst == "mallory:7946"
    reply = codec.decode_packet(out[0].payload)
    assert reply.messages == (codec.Ack(7),)  # nothing piggybacked
    assert member.counters["region.drop_from_stranger"] == 1


def test_a_persisted_incarnation_past_the_bound_starts_within_it() -> None:
    node = GossipNode("a", "a:1", "r", random.Random(1), region_config=LAN, incarnation=2**64 + 4)
    assert node.incarnation == codec.INCARNATION_MAX
    frame = codec.encode_frame(node.region_pool._local_push_pull(join=True))
    assert codec.decode_frame(frame, max_bytes=1 << 20).states[0].incarnation == codec.INCARNATION_MAX


# --- pairwise envelope: the sender a frame is proven to come from -------------------------


def test_a_network_key_holder_at_a_members_address_is_only_a_stranger() -> None:
    """Before pairwise frames, a packet from a member's address was that member's."""
    link, nodes = admitted_region(4)
    victim, member, spoofed = nodes[3], nodes[0], nodes[1]
    before = victim.incarnation
    # An accusation at the signed incarnation would make the victim refute (and the
    # member suspect it); under the network key alone it is not even read.
    _inject(link, member, spoofed.addr, codec.Suspect(before, victim.node_id, spoofed.node_id), sender_id="")
    link.run_until(link.now + 20.0)
    assert member.counters["region.drop_from_stranger"] >= 1
    assert victim.incarnation == before
    assert _states(nodes, victim) == {MemberState.ALIVE}


def test_a_member_cannot_speak_as_another() -> None:
    link, nodes = admitted_region(3)
    a, b, c = nodes
    before = a.counters.get("app_received", 0)
    _inject(link, a, b.addr, codec.AppMessage(200, c.node_id, b"as c"), codec.Ping(5, a.node_id, c.node_id))
    assert a.counters["region.drop_claim_not_sender"] == 2
    assert a.counters.get("app_received", 0) == before
    # A member at another member's address (it moved there, or lies) is a stranger there.
    _inject(link, a, b.addr, codec.Suspect(c.incarnation, c.node_id, c.node_id), sender_id=c.node_id)
    assert a.counters["region.drop_from_stranger"] >= 1


def test_state_exchange_needs_the_proven_sender_and_only_a_join_may_come_unproven() -> None:
    link, nodes = admitted_region(3)
    a, b, c = nodes
    entry = next(m for m in c.region_pool.members() if m.node_id == b.node_id)
    ask = codec.PushPull(
        codec.POOL_REGION,
        "r0",
        False,
        (codec.MemberEntry(b.node_id, entry.addr, entry.meta, entry.incarnation, 0, entry.signature),),
        (),
    )
    frame = codec.encode_frame(ask)
    for sender in ("", c.node_id):  # unproven, or proven to be someone else than it claims
        reply = a.handle_stream_request(link.now, "b:50000", frame, sender)
        assert reply is not None and codec.decode_frame(reply, max_bytes=1 << 20).states == ()
    assert a.counters["region.drop_push_pull_not_sender"] == 2
    reply = a.handle_stream_request(link.now, "b:50000", frame, b.node_id)
    assert reply is not None and len(codec.decode_frame(reply, max_bytes=1 << 20).states) == 3
    # A join may come under the network key, but only naming the joiner its entry is: the
    # answer is sealed to that node's key, so a replayed entry or admission reads nothing.
    join = codec.encode_frame(replace(ask, join=True))
    for claimed in ("", c.node_id):
        reply = a.handle_stream_request(link.now, "b:50000", join, "", claimed)
        assert reply is not None and codec.decode_frame(reply, max_bytes=1 << 20).states == ()
    assert a.counters["region.drop_push_pull_not_sender"] == 4
    reply = a.handle_stream_request(link.now, "b:50000", join, "", b.node_id)
    assert reply is not None and len(codec.decode_frame(reply, max_bytes=1 << 20).states) == 3
    push = codec.encode_frame(codec.RecordPush(codec.POOL_REGION, ()))
    assert a.handle_stream_request(link.now, "b:50000", push, "") is None
    assert a.counters["drop_stream_not_member"] == 1


def test_members_speak_pairwise_once_formed() -> None:
    link, nodes = admitted_region(4)
    assert all(len(member_ids(n)) == 4 for n in nodes)
    network_key, pairwise = link.frames["network_key"], link.frames["pairwise"]
    link.run_until(link.now + 10.0)
    assert link.frames["pairwise"] > pairwise
    assert link.frames["network_key"] == network_key  # joins were the only network-key frames


def test_a_revoked_member_is_told_once_and_heard_no_more() -> None:
    link, nodes = admitted_region(4)
    victim = nodes[3]
    revocation = sign_record(OPERATOR, "revocation", victim.node_id, 1, "fleet", b"lost device")
    nodes[0].publish_record(link.now, revocation)
    link._flush(nodes[0])
    link.run_until(link.now + 10.0)
    assert victim.state.is_revoked(victim.node_id)  # it learnt why, from the notices
    assert sum(n.counters.get("region.revocation_told", 0) for n in nodes[:3]) >= 1
    assert all(link.state_of(n, victim) == MemberState.DEAD for n in nodes[:3])
    unopened = link.unopened
    link.run_until(link.now + 10.0)
    assert link.unopened > unopened  # its pairwise frames no longer open anywhere


def test_a_member_that_missed_a_joiners_admission_pulls_it_at_once() -> None:
    """The admission's epidemic can miss a member; the joiner's alive notice it then parks
    brings its next push-pull forward (before: up to a whole 30 s push-pull period)."""
    link, nodes = admitted_region(4)
    late = nodes[3]
    joiner_key = node_key(7)
    joiner = link.add("j", "r0", fleet_config=WAN, node_key=joiner_key, admission=admission_of(joiner_key))
    link.drop = lambda src, dst: late.addr in (src, dst) or joiner.addr in (src, dst)
    nodes[0].publish_record(link.now, admission_of(joiner_key))  # spreads, but not to `late`
    link._flush(nodes[0])
    link.run_until(link.now + 5.0)
    link.drop = lambda src, dst: False
    assert all(n.state.is_admitted(joiner.node_id) for n in nodes[:3])
    assert not late.state.is_admitted(joiner.node_id)
    # A member relays the joiner's signed alive claim to `late`, which lacks the admission.
    claim = joiner.region_pool._self_alive()
    _inject(link, late, nodes[1].addr, claim)
    assert late.region_pool.counters["admission_pending"] >= 1
    link.run_until(link.now + 5.0)
    assert late.state.is_admitted(joiner.node_id)
    assert joiner.node_id in member_ids(late)


@pytest.mark.parametrize("gone", ["left", "crashed"])
def test_a_node_that_forgot_its_incarnation_outbids_its_signed_past(gone: str) -> None:
    """Restored from an old backup (or its incarnation row lost), a node starts below the
    incarnation its peers hold it at. Their entry of it carries its own signature of that
    incarnation, so it is no made-up accusation: the node refutes above it and is alive again."""
    link, nodes = admitted_region(3)
    victim = nodes[2]
    for _ in range(3):  # a life with refutations: its incarnation climbs
        _inject(
            link, nodes[0], nodes[1].addr, codec.Dead(victim.incarnation, victim.node_id, nodes[1].node_id)
        )
        link.run_until(link.now + 5.0)
    signed = victim.incarnation
    assert signed >= 3
    if gone == "left":
        victim.leave(link.now)
        link._flush(victim)
        link.run_until(link.now + 1.0)
    link.crash(victim)
    link.run_until(link.now + 30.0)
    expected = MemberState.LEFT if gone == "left" else MemberState.DEAD
    assert {link.state_of(n, victim) for n in nodes[:2]} == {expected}

    restored = link.add(
        "n2", "r0", fleet_config=WAN, node_key=node_key(2), admission=admission_of(node_key(2))
    )
    assert restored.incarnation < signed
    restored.join(link.now, [nodes[0].addr])
    link._flush(restored)
    link.run_until(link.now + 10.0)
    assert {link.state_of(n, restored) for n in nodes[:2]} == {MemberState.ALIVE}
    assert restored.incarnation > signed
    assert restored.counters["region.own_incarnation_recovered"] >= 1
