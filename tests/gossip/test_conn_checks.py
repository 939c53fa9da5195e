"""Connection checks on an unanswered probe (docs/design.md, "Refused connections").

Driven on the in-memory link: the test decides how a check to each address ends
(`Link.checks`; by default timed out for a crashed node, accepted for a live one).
"""

from __future__ import annotations

from gossip import codec
from gossip.config import LAN, MembershipConfig
from gossip.events import MemberChanged, MemberState
from gossip.io import CheckResult, Datagram
from gossip.node import GossipNode
from tests.gossip.harness import Link

N = 8


def mesh(config: MembershipConfig = LAN, seed: int = 1) -> tuple[Link, list[GossipNode]]:
    link = Link(seed=seed, config=config)
    nodes = [link.add(f"n{i}") for i in range(N)]
    for node in nodes[1:]:
        node.join(link.now, [nodes[0].addr])
        link._flush(node)
    link.run_until(5.0)
    return link, nodes


def states_of(link: Link, subject: GossipNode, since_s: float = 0.0) -> list[tuple[float, str, MemberState]]:
    """Every change of subject's state seen by the others in the region pool: (time, observer, state)."""
    return [
        (t, observer, e.state)
        for t, observer, e in link.events
        if isinstance(e, MemberChanged)
        and e.pool == "region"
        and e.node_id == subject.node_id
        and observer != subject.node_id
        and t >= since_s
    ]


def all_dead_at(link: Link, subject: GossipNode, since_s: float) -> float:
    """When the last of the other nodes saw subject dead."""
    firsts: dict[str, float] = {}
    for t, observer, state in states_of(link, subject, since_s):
        if state == MemberState.DEAD:
            firsts.setdefault(observer, t)
    assert len(firsts) == N - 1, f"only {sorted(firsts)} saw {subject.node_id} dead"
    return max(firsts.values())


def test_a_crashed_process_whose_port_refuses_is_dead_everywhere_in_about_two_seconds() -> None:
    link, nodes = mesh()
    victim = nodes[3]
    link.crash(victim)
    link.checks[victim.addr] = CheckResult.REFUSED
    t0 = link.now
    link.run_until(t0 + 30.0)
    took_s = all_dead_at(link, victim, t0) - t0
    # Today's path (silence) needs the 6 s Lifeguard minimum at least; this one the
    # probe window plus the 1 s floor plus the spread.
    assert took_s <= 3.0, took_s
    assert sum(n.counters.get("region.declared_dead_refused", 0) for n in nodes) >= 1
    # The floor: nobody declared it dead before a suspicion of it had run for 1 s.
    first_suspect_s = min(t for t, _, s in states_of(link, victim, t0) if s == MemberState.SUSPECT)
    first_dead_s = min(t for t, _, s in states_of(link, victim, t0) if s == MemberState.DEAD)
    assert first_dead_s >= first_suspect_s + LAN.refused_dead_after_s - 1e-9


def test_silence_keeps_todays_path_exactly() -> None:
    # A lost host: every check times out. The member changes are those of a pool that
    # makes no checks at all, to the event.
    histories = []
    for config in (LAN, LAN.with_(conn_checks=False)):
        link, nodes = mesh(config)
        victim = nodes[3]
        link.crash(victim)
        t0 = link.now
        link.run_until(t0 + 40.0)
        # Sorted: the link orders deliveries due at the same instant by when it queued them.
        histories.append(sorted(states_of(link, victim, t0)))
        checks = [c for c in link.checks_seen if c[2] == victim.addr]
        assert all(result == CheckResult.TIMED_OUT for *_, result in checks)
        assert bool(checks) == config.conn_checks
    assert histories[0] == histories[1]
    assert histories[0][-1][2] == MemberState.DEAD
    assert histories[0][0][0] >= 5.0


def frozen(link: Link, victim: GossipNode, for_s: float) -> None:
    """victim neither hears nor is heard for for_s (a stopped process: its host still completes
    handshakes, the link's default for a live node), then thaws."""
    link.drop = lambda src, dst: victim.addr in (src, dst)
    link.run_until(link.now + for_s)
    link.drop = lambda src, dst: False


def test_a_stalled_process_is_never_declared_dead_within_ten_seconds_and_comes_back() -> None:
    link, nodes = mesh()
    victim = nodes[5]
    t0 = link.now
    frozen(link, victim, 12.0)
    link.run_until(link.now + 20.0)
    seen = states_of(link, victim, t0)
    assert any(state == MemberState.SUSPECT for _, _, state in seen)  # routing may avoid it
    assert all(state != MemberState.DEAD for _, _, state in seen), seen
    assert all(link.state_of(o, victim) == MemberState.ALIVE for o in nodes if o is not victim)
    assert any(result == CheckResult.ACCEPTED for *_, result in link.checks_seen)


def test_without_checks_the_same_stall_is_declared_dead() -> None:
    # The control for the test above: the stall is long enough to kill without the rule.
    link, nodes = mesh(LAN.with_(conn_checks=False))
    victim = nodes[5]
    t0 = link.now
    frozen(link, victim, 12.0)
    assert any(state == MemberState.DEAD for _, _, state in states_of(link, victim, t0))


def test_a_firewall_rejecting_the_port_of_a_live_unreachable_process_is_undone_by_its_refutation() -> None:
    # REJECT --reject-with tcp-reset on the gossip port and its UDP dropped: the member
    # is unreachable and its port refuses, so it is declared dead quickly. Once its
    # datagrams flow again it hears that, refutes with a higher incarnation, and is
    # alive everywhere: the verdict silence would have reached, only sooner.
    link, nodes = mesh()
    victim = nodes[2]
    before = victim.incarnation
    link.checks[victim.addr] = CheckResult.REFUSED
    t0 = link.now
    frozen(link, victim, 8.0)
    assert all_dead_at(link, victim, t0) - t0 <= 3.0
    link.run_until(link.now + 40.0)
    assert victim.incarnation > before
    assert all(link.state_of(o, victim) == MemberState.ALIVE for o in nodes if o is not victim)


def test_a_live_member_refutes_forged_refusals_within_the_floor() -> None:
    # An accusation naming two refusers reaches one node; the accused, alive and
    # reachable, hears of it (buddy ping, gossip) and refutes before the 1 s floor.
    link, nodes = mesh()
    accused = nodes[4]
    before = accused.incarnation
    notice = codec.Suspect(accused.incarnation, accused.node_id, nodes[0].node_id, ("n6", "n7"))
    packet = codec.encode_packet(codec.POOL_REGION, "r1", [codec.encode_message(notice)])
    t0 = link.now
    nodes[1].handle_datagram(t0, nodes[0].addr, packet)
    link._flush(nodes[1])
    link.run_until(t0 + 20.0)
    assert accused.incarnation > before
    assert all(state != MemberState.DEAD for _, _, state in states_of(link, accused, t0))
    assert all(link.state_of(o, accused) == MemberState.ALIVE for o in nodes if o is not accused)


def test_an_indirect_helper_that_sees_a_refusal_suspects_and_tells_the_prober() -> None:
    link, nodes = mesh()
    victim = nodes[6]
    link.crash(victim)
    link.checks[victim.addr] = CheckResult.REFUSED
    link.run_until(link.now + 3.0)
    assert sum(n.counters.get("region.helper_refusals", 0) for n in nodes) >= 1


def test_a_member_held_dead_that_pings_is_told_so_and_refutes() -> None:
    # A member cut off long enough to be declared dead everywhere (a firewall that drops
    # what is sent to it, a broken link), whose death is no longer gossiped when its
    # traffic flows again. The first ping it sends brings back the death notice with
    # the ack, so it refutes at once instead of at the next push-pull that reaches it
    # (up to 30 s later). Told at most once per probe interval.
    link, nodes = mesh()
    victim, peer = nodes[6], nodes[1]
    frozen(link, victim, LAN.gossip_to_the_dead_s + 10.0)
    assert link.state_of(peer, victim) == MemberState.DEAD
    before = victim.incarnation
    ping = codec.encode_message(codec.Ping(77, peer.node_id, victim.node_id))
    packet = codec.encode_packet(codec.POOL_REGION, "r1", [ping])
    peer.handle_datagram(link.now, victim.addr, packet)
    peer.handle_datagram(link.now, victim.addr, packet)  # again at once: not told twice
    answers = [d for d in peer.poll_transmit() if isinstance(d, Datagram) and d.dst == victim.addr]
    told = [
        m
        for d in answers
        for m in codec.decode_packet(d.payload).messages
        if isinstance(m, codec.Dead) and m.node_id == victim.node_id
    ]
    assert len(answers) == 2 and len(told) == 1
    assert peer.counters["region.dead_told"] == 1
    for d in answers:
        victim.handle_datagram(link.now, peer.addr, d.payload)
    link._flush(victim)
    assert victim.incarnation > before  # it refuted
    link.run_until(link.now + 3.0)
    assert all(link.state_of(o, victim) == MemberState.ALIVE for o in nodes if o is not victim)


def test_an_accusation_of_a_member_held_dead_is_answered_with_its_death() -> None:
    # A member that heard of the victim late suspects it when everyone else holds it dead:
    # no confirmation will ever come. The first member that hears the accusation tells the
    # accuser it is dead (once per probe interval), and the accuser's view ends there.
    link, nodes = mesh()
    victim, accuser, peer = nodes[5], nodes[2], nodes[1]
    link.crash(victim)
    link.run_until(link.now + 30.0)
    assert link.state_of(peer, victim) == MemberState.DEAD
    incarnation = next(v.incarnation for v in peer.members("region") if v.node_id == victim.node_id)
    notice = codec.Suspect(incarnation, victim.node_id, accuser.node_id)
    packet = codec.encode_packet(codec.POOL_REGION, "r1", [codec.encode_message(notice)])
    peer.handle_datagram(link.now, accuser.addr, packet)
    peer.handle_datagram(link.now, accuser.addr, packet)  # again at once: told once
    told = [
        m
        for d in peer.poll_transmit()
        if isinstance(d, Datagram) and d.dst == accuser.addr
        for m in codec.decode_packet(d.payload).messages
        if isinstance(m, codec.Dead) and m.node_id == victim.node_id
    ]
    assert len(told) == 1 and peer.counters["region.dead_told_accuser"] == 1
