"""SWIM + Lifeguard core, driven on an in-memory link with a virtual clock."""

from __future__ import annotations

import random

from gossip import codec
from gossip.config import LAN, LOCAL
from gossip.events import IncarnationChanged, MemberChanged, MemberState
from gossip.node import GossipNode
from tests.gossip.harness import Link


def mesh(n: int, seed: int = 1, region: str = "r1", config=LAN) -> tuple[Link, list[GossipNode]]:
    link = Link(seed=seed, config=config)
    nodes = [link.add(f"n{i}", region) for i in range(n)]
    for node in nodes[1:]:
        node.join(link.now, [nodes[0].addr])
        link._flush(node)
    link.run_until(5.0)
    return link, nodes


def all_see(link: Link, nodes: list[GossipNode], subject: GossipNode, state: MemberState) -> bool:
    return all(link.state_of(o, subject) == state for o in nodes if o is not subject)


def test_nodes_join_through_one_seed_and_see_each_other() -> None:
    _link, nodes = mesh(6)
    for observer in nodes:
        states = {v.node_id: v.state for v in observer.members()}
        assert states == {n.node_id: MemberState.ALIVE for n in nodes}


def test_lost_direct_pings_are_covered_by_indirect_probes() -> None:
    link, nodes = mesh(6)
    a, b = nodes[0], nodes[5]
    # Every packet between a and b is lost, in both directions; helpers still reach b.
    link.drop = lambda src, dst: {src, dst} == {a.addr, b.addr}
    link.run_until(60.0)
    suspicions = [
        e
        for _, _, e in link.events
        if isinstance(e, MemberChanged) and e.pool == "region" and e.state != MemberState.ALIVE
    ]
    assert suspicions == []


def test_crashed_node_is_suspected_then_declared_dead_everywhere() -> None:
    link, nodes = mesh(6)
    victim = nodes[3]
    link.crash(victim)
    t_crash = link.now
    link.run_until(t_crash + 30.0)
    others = [n for n in nodes if n is not victim]
    assert all(link.state_of(o, victim) == MemberState.DEAD for o in others)
    states = [
        e.state for _, nid, e in link.events if isinstance(e, MemberChanged) and e.node_id == victim.node_id
    ]
    assert MemberState.SUSPECT in states
    assert states.index(MemberState.SUSPECT) < states.index(MemberState.DEAD)
    # What GET /metrics reports (murmur_probes_total, murmur_suspicions_total): every live node
    # probed, and the suspicions started add up to the SUSPECT events seen (one per observer).
    assert all(o.counters["region.probes"] > 0 for o in others)
    assert sum(o.counters.get("region.suspicions", 0) for o in others) == states.count(MemberState.SUSPECT)


def test_a_falsely_suspected_node_refutes_with_a_higher_incarnation() -> None:
    link, nodes = mesh(5)
    accused = nodes[2]
    before = accused.incarnation
    msg = codec.encode_message(codec.Suspect(accused.incarnation, accused.node_id, nodes[0].node_id))
    nodes[1].handle_datagram(link.now, nodes[0].addr, codec.encode_packet(codec.POOL_REGION, "r1", [msg]))
    link._flush(nodes[1])
    link.run_until(link.now + 30.0)
    assert accused.incarnation > before
    assert all_see(link, nodes, accused, MemberState.ALIVE)
    assert accused.counters["region.refutations"] >= 1


def test_buddy_system_piggybacks_the_suspicion_on_the_probe() -> None:
    link, nodes = mesh(5)
    prober, suspect = nodes[0], nodes[1]
    msg = codec.encode_message(codec.Suspect(suspect.incarnation, suspect.node_id, nodes[3].node_id))
    prober.handle_datagram(link.now, nodes[3].addr, codec.encode_packet(codec.POOL_REGION, "r1", [msg]))
    pool = prober.region_pool
    # Gossip about the suspicion is long gone: only the buddy system can tell the suspect.
    pool._queue.reset()
    prober.poll_transmit()
    for _ in range(10):  # within one probe round the suspect is probed
        t = pool.next_deadline()
        prober.handle_timer(t)
        for out in prober.poll_transmit():
            if out.dst != suspect.addr:
                continue
            packet = codec.decode_packet(out.payload)
            if packet.pool != codec.POOL_REGION:
                continue
            if any(isinstance(m, codec.Ping) for m in packet.messages):
                notices = [m for m in packet.messages if isinstance(m, codec.Suspect)]
                assert suspect.node_id in [m.node_id for m in notices]
                return
    raise AssertionError("the suspect was never probed")


def test_graceful_leave_is_left_not_dead() -> None:
    link, nodes = mesh(5)
    leaver = nodes[4]
    leaver.leave(link.now)
    link._flush(leaver)
    link.run_until(link.now + 1.0)
    link.crash(leaver)
    link.run_until(link.now + 20.0)
    assert all_see(link, nodes, leaver, MemberState.LEFT)


def test_restart_with_persisted_incarnation_and_new_address_is_not_a_conflict() -> None:
    link, nodes = mesh(5)
    old = nodes[4]
    persisted = [
        e.incarnation for _, nid, e in link.events if nid == old.node_id and isinstance(e, IncarnationChanged)
    ][-1]
    link.crash(old)
    link.run_until(link.now + 30.0)
    assert all_see(link, nodes, old, MemberState.DEAD)
    # Same node id, new address, persisted incarnation.
    reborn = GossipNode(
        old.node_id,
        "n4-new:7946",
        "r1",
        random.Random(9),
        region_config=LAN,
        fleet_config=LAN,
        incarnation=persisted,
        now=link.now,
    )
    link.replace(reborn)
    reborn.join(link.now, [nodes[0].addr])
    link._flush(reborn)
    link.run_until(link.now + 10.0)
    assert reborn.incarnation > persisted
    for o in nodes[:4]:
        view = {v.node_id: v for v in o.members()}[old.node_id]
        assert view.state == MemberState.ALIVE
        assert view.addr == "n4-new:7946"


def test_lifeguard_health_rises_when_our_own_probes_get_no_nacks() -> None:
    link, nodes = mesh(5)
    sick = nodes[0]
    # Everything sick sends is lost: no acks, no nacks. That is Lifeguard's sign
    # that the problem is local, so sick's health score (and its timeouts) grow.
    link.drop = lambda src, dst: src == sick.addr
    link.run_until(link.now + 10.0)
    assert sick.region_pool.health_score > 0


def test_partition_heals_and_every_node_sees_every_other_alive() -> None:
    link, nodes = mesh(8)
    left = {n.addr for n in nodes[:4]}
    link.drop = lambda src, dst: (src in left) != (dst in left)
    link.run_until(link.now + 60.0)
    assert link.state_of(nodes[0], nodes[7]) == MemberState.DEAD
    link.drop = lambda src, dst: False
    link.run_until(link.now + 120.0)
    for o in nodes:
        assert all(v.state == MemberState.ALIVE for v in o.members()), o.node_id


def test_hostile_datagrams_are_counted_never_raised() -> None:
    link, nodes = mesh(3)
    node = nodes[0]
    rng = random.Random(5)
    for _ in range(500):
        node.handle_datagram(link.now, "x:1", rng.randbytes(rng.randrange(0, 1500)))
    other_region = codec.encode_packet(codec.POOL_REGION, "elsewhere", [codec.encode_message(codec.Ack(1))])
    node.handle_datagram(link.now, "x:1", other_region)
    assert node.counters["drop_wrong_region"] == 1
    assert sum(v for k, v in node.counters.items() if k.startswith("drop_")) >= 500
    # A forged "dead" about a node with an old incarnation changes nothing.
    stale = codec.encode_message(codec.Dead(0, nodes[1].node_id, "mallory"))
    node.handle_datagram(link.now, "x:1", codec.encode_packet(codec.POOL_REGION, "r1", [stale]))
    assert link.state_of(node, nodes[1]) == MemberState.ALIVE


def test_same_seed_same_history() -> None:
    def history(seed: int) -> list[tuple[float, str, str]]:
        link, nodes = mesh(6, seed=seed, config=LOCAL)
        link.crash(nodes[2])
        link.run_until(link.now + 20.0)
        return [(t, nid, repr(e)) for t, nid, e in link.events]

    assert history(11) == history(11)
    assert history(11) != history(12)


def test_small_pool_seeded_in_a_chain_converges_on_the_local_profile() -> None:
    for seed in range(8):
        link = Link(seed=seed, config=LOCAL)
        nodes = [link.add(f"n{i}") for i in range(5)]
        for i, node in enumerate(nodes[1:], start=1):
            node.join(link.now, [nodes[i - 1].addr])  # each seeds the one before it
            link._flush(node)
        link.run_until(5.0)
        for observer in nodes:
            assert len([v for v in observer.members() if v.state == MemberState.ALIVE]) == 5, seed


def test_an_accuser_that_missed_the_refutation_is_answered_directly() -> None:
    link, nodes = mesh(5)
    accuser, accused = nodes[0], nodes[1]
    # The accused has refuted an earlier suspicion: its incarnation rose...
    bump = codec.encode_message(codec.Suspect(accused.incarnation, accused.node_id, nodes[2].node_id))
    accused.handle_datagram(link.now, nodes[2].addr, codec.encode_packet(codec.POOL_REGION, "r1", [bump]))
    accused.poll_transmit()
    accused.region_pool._queue.reset()  # ...but the refutation was lost on its way out.
    stale = codec.encode_message(codec.Suspect(accused.incarnation - 1, accused.node_id, nodes[3].node_id))
    accuser.handle_datagram(link.now, nodes[3].addr, codec.encode_packet(codec.POOL_REGION, "r1", [stale]))
    accuser.poll_transmit()
    accuser.region_pool._queue.reset()
    assert link.state_of(accuser, accused) == MemberState.SUSPECT
    link.run_until(link.now + 20.0)
    states = [
        e.state
        for _, nid, e in link.events
        if nid == accuser.node_id and isinstance(e, MemberChanged) and e.node_id == accused.node_id
    ]
    assert MemberState.DEAD not in states
    assert link.state_of(accuser, accused) == MemberState.ALIVE


def test_a_starved_node_reads_its_backlog_before_judging_its_suspicions() -> None:
    link, nodes = mesh(5)
    observer, suspect = nodes[0], nodes[1]
    notice = codec.encode_message(codec.Suspect(suspect.incarnation, suspect.node_id, nodes[2].node_id))
    observer.handle_datagram(link.now, nodes[2].addr, codec.encode_packet(codec.POOL_REGION, "r1", [notice]))
    observer.poll_transmit()
    # The refutation arrives while the observer's process is frozen...
    refutation = codec.encode_message(
        codec.Alive(suspect.incarnation + 1, suspect.node_id, suspect.addr, suspect.region_pool.meta)
    )
    # ...and when it wakes, far past every deadline, its timers run before the socket is read.
    woke_s = link.now + 60.0
    observer.handle_timer(woke_s)
    assert link.state_of(observer, suspect) == MemberState.SUSPECT
    observer.handle_datagram(woke_s, suspect.addr, codec.encode_packet(codec.POOL_REGION, "r1", [refutation]))
    observer.handle_timer(woke_s + 5.0)
    assert link.state_of(observer, suspect) == MemberState.ALIVE
    assert observer.counters["region.starved_timer_runs"] >= 1


def test_a_partition_longer_than_gossip_to_the_dead_still_heals_through_reconnects() -> None:
    link, nodes = mesh(12)
    left = {n.addr for n in nodes[:6]}
    link.drop = lambda src, dst: (src in left) != (dst in left)
    link.run_until(link.now + 90.0)  # far past gossip_to_the_dead_s (30 s)
    assert link.state_of(nodes[0], nodes[11]) == MemberState.DEAD
    link.drop = lambda src, dst: False
    link.run_until(link.now + 40.0)  # well under a push-pull interval of the full pool
    for o in nodes:
        assert all(v.state == MemberState.ALIVE for v in o.members()), o.node_id
    assert sum(n.counters.get("region.reconnect_attempts", 0) for n in nodes) > 0


def test_a_packet_never_carries_more_messages_than_a_receiver_accepts() -> None:
    link, nodes = mesh(3)
    sender = nodes[0]
    for i in range(200):  # far more tiny updates than fit the message cap
        sender.region_pool.queue_user(codec.Summary(f"x{i}", 1, "a", 1, (), ()), key=f"s{i}")
    sender.region_pool.send_direct(link.now, nodes[1].addr, codec.Ack(0))
    for out in sender.poll_transmit():
        packet = codec.decode_packet(out.payload)  # raises if the receiver would refuse it
        assert len(packet.messages) <= codec.MESSAGES_PER_PACKET_MAX
