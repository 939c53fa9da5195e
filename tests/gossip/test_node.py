"""The two-pool node: gateways, the fleet pool, summaries and fleet-wide broadcasts."""

from __future__ import annotations

from gossip.config import LAN, WAN
from gossip.events import BroadcastDelivered, GatewayChanged, MemberState
from gossip.node import GATEWAYS_PER_REGION, GossipNode
from tests.gossip.harness import Link


def fleet(per_region: int, regions: int, seed: int = 1) -> tuple[Link, dict[str, list[GossipNode]]]:
    link = Link(seed=seed, config=LAN)
    by_region: dict[str, list[GossipNode]] = {}
    for r in range(regions):
        name = f"r{r}"
        by_region[name] = [link.add(f"{name}n{i}", name, fleet_config=WAN) for i in range(per_region)]
    first = by_region["r0"][0]
    for nodes in by_region.values():
        for node in nodes:
            if node is first:
                continue
            # A seed in the node's own region, and one in region r0 (how a device is set up).
            seeds = [nodes[0].addr] if node is not nodes[0] else []
            node.join(link.now, [*seeds, first.addr])
            link._flush(node)
    link.run_until(30.0)
    return link, by_region


def gateways_seen_by(node: GossipNode) -> list[str]:
    return [v.node_id for v in node.members() if v.gateway]


def test_each_region_agrees_on_at_most_three_gateways_and_they_form_the_fleet_pool() -> None:
    _link, by_region = fleet(6, 3)
    all_gateways: list[str] = []
    for nodes in by_region.values():
        views = {tuple(gateways_seen_by(n)) for n in nodes}
        assert len(views) == 1, views  # every member applies the same rule to the same view
        gws = next(iter(views))
        assert len(gws) == GATEWAYS_PER_REGION
        assert sorted(n.node_id for n in nodes if n.is_gateway) == sorted(gws)
        all_gateways.extend(gws)
    for nodes in by_region.values():
        for n in nodes:
            if n.is_gateway:
                alive = [v.node_id for v in n.members("fleet") if v.state == MemberState.ALIVE]
                # Nodes that were gateways while the region formed have left the fleet pool.
                assert sorted(alive) == sorted(all_gateways)


def test_a_node_keeps_memory_of_its_region_only() -> None:
    _link, by_region = fleet(6, 3)
    for nodes in by_region.values():
        for n in nodes:
            assert len(n.members()) == 6
            if not n.is_gateway:
                assert n.members("fleet") == []


def test_every_node_knows_every_region_summary() -> None:
    _link, by_region = fleet(5, 3)
    for nodes in by_region.values():
        for n in nodes:
            sums = n.summaries()
            assert sorted(sums) == ["r0", "r1", "r2"]
            for region, s in sums.items():
                assert s.alive == 5
                assert len(s.gateways) == GATEWAYS_PER_REGION
                assert all(addr.startswith(region) for _gid, addr in s.gateways)


def test_a_broadcast_from_one_region_reaches_every_node_of_every_region() -> None:
    link, by_region = fleet(6, 3)
    origin = next(n for n in by_region["r2"] if not n.is_gateway)
    origin_id, seq = origin.broadcast(link.now, b"desired-state v1")
    link._flush(origin)
    start = link.now
    link.run_until(start + 10.0)
    got = {
        nid
        for t, nid, e in link.events
        if isinstance(e, BroadcastDelivered) and e.seq == seq and e.origin_id == origin_id
    }
    everyone = {n.node_id for nodes in by_region.values() for n in nodes}
    assert got == everyone
    deliveries = [nid for t, nid, e in link.events if isinstance(e, BroadcastDelivered)]
    assert len(deliveries) == len(set(deliveries))  # delivered once per node


def test_a_dead_gateway_is_replaced_and_the_fleet_pool_follows() -> None:
    link, by_region = fleet(6, 2)
    nodes = by_region["r1"]
    victim = next(n for n in nodes if n.is_gateway)
    link.crash(victim)
    link.run_until(link.now + 60.0)
    survivors = [n for n in nodes if n is not victim]
    new_gws = sorted(n.node_id for n in survivors if n.is_gateway)
    assert len(new_gws) == GATEWAYS_PER_REGION and victim.node_id not in new_gws
    assert any(
        isinstance(e, GatewayChanged)
        and e.is_gateway
        and nid not in [g for g in gateways_seen_by(survivors[0]) if g != nid]
        for _, nid, e in link.events
    )
    # The other region's gateways see the replacement in the fleet pool.
    other_gw = next(n for n in by_region["r0"] if n.is_gateway)
    fleet_view = {v.node_id: v.state for v in other_gw.members("fleet")}
    for gid in new_gws:
        assert fleet_view.get(gid) == MemberState.ALIVE
    assert fleet_view.get(victim.node_id) in (MemberState.DEAD, None)


def test_oversized_broadcast_is_refused_with_a_clear_error() -> None:
    link, by_region = fleet(2, 1)
    node = by_region["r0"][0]
    try:
        node.broadcast(link.now, b"x" * (LAN.user_payload_max_bytes + 1))
    except ValueError as exc:
        assert "limit" in str(exc)
    else:
        raise AssertionError("an oversized broadcast was accepted")


def test_a_fleet_packet_at_a_non_gateway_is_dropped_and_counted() -> None:
    from gossip import codec

    link, by_region = fleet(5, 1)
    plain = next(n for n in by_region["r0"] if not n.is_gateway)
    pkt = codec.encode_packet(codec.POOL_FLEET, "r0", [codec.encode_message(codec.Ack(1))])
    plain.handle_datagram(link.now, "x:1", pkt)
    assert plain.counters["drop_not_gateway"] == 1


def test_restart_node_comes_back_above_its_persisted_incarnation() -> None:
    import random

    node = GossipNode("a", "a:1", "r", random.Random(1), incarnation=41)
    assert node.incarnation == 42


def test_a_broadcast_sent_before_any_gateway_exists_still_leaves_its_region() -> None:
    link = Link(seed=4, config=LAN)
    north = [link.add(f"north{i}", "north", fleet_config=WAN) for i in range(4)]
    south = [link.add(f"south{i}", "south", fleet_config=WAN) for i in range(4)]
    for n in north[1:] + south:
        n.join(link.now, [north[0].addr])
        link._flush(n)
    link.run_until(0.5)
    assert not any(n.is_gateway for n in north + south)  # gateways come after the start-up grace
    origin_id, seq = north[1].broadcast(link.now, b"early")
    link._flush(north[1])
    link.run_until(40.0)
    got = {
        nid
        for _, nid, e in link.events
        if isinstance(e, BroadcastDelivered) and e.seq == seq and e.origin_id == origin_id
    }
    assert got == {n.node_id for n in north + south}


def test_a_gateway_that_leaves_is_seen_as_left_in_the_fleet_pool_too() -> None:
    link, by_region = fleet(5, 2)
    leaver = next(n for n in by_region["r1"] if n.is_gateway)
    # Its own leave notice never reaches the other region: only its region-mates' relay does.
    r0 = {n.addr for n in by_region["r0"]}
    link.drop = lambda src, dst: src == leaver.addr and dst in r0
    leaver.leave(link.now)
    link._flush(leaver)
    link.run_until(link.now + 1.0)
    link.crash(leaver)
    link.run_until(link.now + 30.0)
    for n in by_region["r0"]:
        if n.is_gateway:
            view = {v.node_id: v.state for v in n.members("fleet")}
            assert view[leaver.node_id] == MemberState.LEFT


def test_member_is_the_row_members_lists_for_that_id_in_either_pool() -> None:
    _link, by_region = fleet(5, 2)
    for nodes in by_region.values():
        for node in nodes:
            for pool in ("region", "fleet"):
                listed = node.members(pool)
                assert all(node.member(v.node_id, pool) == v for v in listed)
                assert node.member("nobody", pool) is None
            other_region = next(n for r, ns in by_region.items() if r != node.region for n in ns)
            assert node.member(other_region.node_id, "region") is None
